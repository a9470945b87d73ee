//! Unit tests of the vCPU state: MSR lists, XSAVE sizes, TSC scaling.

use super::*;
use crate::arch::x86_64::msr::MSR_IA32_TSC;
use kvm_bindings::{kvm_dtable, kvm_fpu, kvm_regs, kvm_segment, kvm_sregs, kvm_vcpu_events};

fn err(errno: i32) -> kvm_ioctls::Error {
    kvm_ioctls::Error::new(errno)
}

/// A fake KVM_GET_MSRS that refuses the MSRs in `refuse`.
fn fake_get(refuse: &'static [u32]) -> impl FnMut(&mut Msrs) -> Result<usize, kvm_ioctls::Error> {
    move |msrs| {
        for (n, e) in msrs.as_mut_slice().iter_mut().enumerate() {
            if refuse.contains(&e.index) {
                return Ok(n);
            }
            e.data = u64::from(e.index) * 3;
        }
        Ok(msrs.as_slice().len())
    }
}

#[test]
fn refused_msrs_are_skipped_and_the_rest_still_read() {
    let candidates = [0x10, 0x11, 0x12, 0x13, 0x14];
    let (saved, refused) = read_msrs(&candidates, fake_get(&[0x11, 0x14])).unwrap();
    assert_eq!(refused, vec![0x11, 0x14]);
    let got: Vec<_> = saved.iter().map(|m| (m.index, m.data)).collect();
    assert_eq!(got, vec![(0x10, 0x30), (0x12, 0x36), (0x13, 0x39)]);
}

#[test]
fn msrs_are_read_in_batches_kvm_accepts() {
    let candidates: Vec<u32> = (0..KVM_MAX_MSR_ENTRIES as u32 * 2 + 5).collect();
    let mut batches = Vec::new();
    let (saved, refused) = read_msrs(&candidates, |msrs| {
        batches.push(msrs.as_slice().len());
        fake_get(&[3])(msrs)
    })
    .unwrap();
    assert_eq!(refused, vec![3]);
    assert_eq!(saved.len(), candidates.len() - 1);
    assert!(
        batches.iter().all(|&n| n <= KVM_MAX_MSR_ENTRIES),
        "{batches:?}"
    );
    // A KVM error is not a refusal.
    let failed = read_msrs(&candidates, |_| Err(err(libc::EFAULT))).unwrap_err();
    assert_eq!(
        failed.to_string(),
        "cannot read the vCPU's MSRs: Bad address (os error 14)"
    );
}

#[test]
fn the_tsc_deadline_is_restored_after_everything_else() {
    let msrs = [MSR_IA32_TSC_DEADLINE, 0x10, MSR_IA32_TSC, 0xc000_0080]
        .map(|index| MsrState { index, data: 1 });
    let order: Vec<_> = msr_restore_order(&msrs).iter().map(|m| m.index).collect();
    assert_eq!(
        order,
        vec![0x10, MSR_IA32_TSC, 0xc000_0080, MSR_IA32_TSC_DEADLINE]
    );
}

#[test]
fn tsc_scaling_tolerates_calibration_noise_only() {
    assert!(!tsc_needs_scaling(2_000_000, 2_000_000));
    // 250 ppm of 2 GHz is 500 kHz.
    assert!(!tsc_needs_scaling(2_000_000, 2_000_500));
    assert!(!tsc_needs_scaling(2_000_000, 1_999_500));
    assert!(tsc_needs_scaling(2_000_000, 2_000_501));
    assert!(tsc_needs_scaling(2_000_000, 3_000_000));
}

#[test]
fn a_malformed_state_is_refused_before_any_ioctl() {
    let state = VcpuState {
        cpuid: Vec::new(),
        msrs: Vec::new(),
        regs: RegsState::default(),
        sregs: SregsState::default(),
        float: FloatState::Fpu(Box::default()),
        xcrs: None,
        debug_regs: DebugRegsState::default(),
        lapic: Blob(vec![0; 1000]),
        mp_state: 0,
        events: VcpuEventsState::default(),
        tsc_khz: None,
    };
    let e = KvmVcpuState::new(&state)
        .err()
        .expect("a 1000-byte LAPIC page");
    assert_eq!(
        e.to_string(),
        "saved vCPU state is malformed: the LAPIC page is 1000 bytes, 1024 bytes"
    );
    let xcrs = XcrsState {
        flags: 0,
        xcrs: vec![XcrState::default(); 17],
    };
    assert!(matches!(
        xcrs.to_kvm(),
        Err(VcpuStateError::Malformed { .. })
    ));
}

#[test]
fn kvm_structures_convert_without_loss() {
    let regs = kvm_regs {
        rax: 1,
        rbx: 2,
        r15: 15,
        rip: 0x10_0000,
        rflags: 0x202,
        ..Default::default()
    };
    assert_eq!(kvm_regs::from(&RegsState::from(&regs)), regs);
    let mut sregs = kvm_sregs {
        cr0: 0x8000_0011,
        cr3: 0x9000,
        cr4: 0x20,
        efer: 0x500,
        apic_base: 0xfee0_0900,
        interrupt_bitmap: [0, 1 << 3, 0, 0],
        ..Default::default()
    };
    sregs.cs = kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector: 0x10,
        type_: 0xb,
        present: 1,
        s: 1,
        l: 1,
        g: 1,
        ..Default::default()
    };
    sregs.gdt = kvm_dtable {
        base: 0x500,
        limit: 0x1f,
        ..Default::default()
    };
    assert_eq!(kvm_sregs::from(&SregsState::from(&sregs)), sregs);
    let mut events = kvm_vcpu_events {
        flags: 0x1f,
        sipi_vector: 0x9a,
        exception_has_payload: 1,
        exception_payload: 0xdead,
        ..Default::default()
    };
    events.exception.nr = 14;
    events.exception.error_code = 2;
    events.interrupt.shadow = 1;
    events.nmi.masked = 1;
    events.smi.latched_init = 1;
    events.triple_fault.pending = 1;
    let back = kvm_vcpu_events::from(&VcpuEventsState::from(&events));
    assert_eq!(
        (
            back.flags,
            back.sipi_vector,
            back.exception_payload,
            back.exception.nr
        ),
        (0x1f, 0x9a, 0xdead, 14)
    );
    assert_eq!(
        (
            back.interrupt.shadow,
            back.nmi.masked,
            back.smi.latched_init,
            back.triple_fault.pending
        ),
        (1, 1, 1, 1)
    );
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        xmm: [[7; 16]; 16],
        ..Default::default()
    };
    assert_eq!(kvm_fpu::from(&FpuState::from(&fpu)), fpu);
}
