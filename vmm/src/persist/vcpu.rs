//! The KVM state of one vCPU: registers, FPU/XSAVE, XCRs, debug
//! registers, every MSR KVM can save, the LAPIC, MP state, pending events,
//! CPUID and TSC frequency.
//!
//! [`save_vcpu_state`] and [`restore_vcpu_state`] run the ioctls in the
//! order KVM needs (see their bodies); `Vcpu::save_state` and
//! `Vcpu::restore_state` in [`crate::vstate::vcpu`] call them on the
//! thread that owns the vCPU. What a host's KVM can save is probed once
//! per VM into a [`VcpuStateSupport`].

use kvm_bindings::{
    kvm_debugregs, kvm_dtable, kvm_fpu, kvm_lapic_state, kvm_mp_state, kvm_msr_entry, kvm_regs,
    kvm_segment, kvm_sregs, kvm_vcpu_events, kvm_xcr, kvm_xcrs, kvm_xsave, CpuId, Msrs, Xsave,
    KVM_MAX_CPUID_ENTRIES, KVM_MAX_MSR_ENTRIES,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};
use vmm_sys_util::fam::FamStructWrapper;

use super::blob::Blob;
use crate::arch::x86_64::msr::{MSR_IA32_MISC_ENABLE, MSR_MTRR_DEF_TYPE};

/// IA32_TSC_DEADLINE: restored after IA32_TSC, because KVM arms the
/// deadline timer relative to the TSC it has when the MSR is written.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// IA32_PAT (Intel SDM Vol. 3A §11.12).
pub const MSR_IA32_CR_PAT: u32 = 0x277;

/// MSRs KVM emulates and the guest may change, but that
/// `KVM_GET_MSR_INDEX_LIST` does not list: the MTRRs (variable pairs
/// 0x200–0x20f, the fixed ranges, the default type; Intel SDM Vol. 3A
/// §11.11), PAT and MISC_ENABLE. Saved too, where KVM lets them be read.
const UNLISTED_MSRS: &[u32] = &[
    0x200,
    0x201,
    0x202,
    0x203,
    0x204,
    0x205,
    0x206,
    0x207,
    0x208,
    0x209,
    0x20a,
    0x20b,
    0x20c,
    0x20d,
    0x20e,
    0x20f,
    0x250,
    0x258,
    0x259,
    0x268,
    0x269,
    0x26a,
    0x26b,
    0x26c,
    0x26d,
    0x26e,
    0x26f,
    MSR_MTRR_DEF_TYPE,
    MSR_IA32_CR_PAT,
    MSR_IA32_MISC_ENABLE,
];

/// The size of `struct kvm_xsave` without its flexible array.
const XSAVE_LEGACY_SIZE: usize = std::mem::size_of::<kvm_xsave>();
/// Bytes of the LAPIC register page.
const LAPIC_SIZE: usize = std::mem::size_of::<kvm_lapic_state>();

/// KVM's TSC frequency may differ from a snapshot's by this many parts
/// per million before a restore scales it (the calibration noise between
/// boots of one host, as QEMU tolerates).
const TSC_KHZ_TOLERANCE_PPM: u64 = 250;

/// A vCPU's state could not be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    /// A `KVM_GET_*` ioctl failed.
    #[error("cannot read the vCPU's {what}: {source}")]
    Get {
        /// What was being read.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A `KVM_SET_*` ioctl failed.
    #[error("cannot restore the vCPU's {what}: {source}")]
    Set {
        /// What was being restored.
        what: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// KVM refused a saved MSR.
    #[error("KVM refused to restore MSR {index:#x} (value {data:#x})")]
    MsrRefused {
        /// The MSR.
        index: u32,
        /// The saved value.
        data: u64,
    },
    /// The saved TSC frequency cannot be given to the vCPU.
    #[error("cannot run the vCPU's TSC at the snapshot's {saved_khz} kHz (this host: {host_khz} kHz): {source}")]
    TscScaling {
        /// The snapshot's frequency.
        saved_khz: u32,
        /// This host's.
        host_khz: u32,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// A variable-size KVM structure could not be built.
    #[error("cannot build KVM's {what}: {source}")]
    Fam {
        /// The structure.
        what: &'static str,
        /// The error.
        #[source]
        source: vmm_sys_util::fam::Error,
    },
    /// The saved state does not have the shape KVM's structures need.
    #[error("saved vCPU state is malformed: {what} is {found} bytes, {expected}")]
    Malformed {
        /// The field.
        what: &'static str,
        /// Its size.
        found: usize,
        /// What it must be.
        expected: &'static str,
    },
}

/// What this host's KVM can save and restore for a vCPU: probed once per
/// VM ([`VcpuStateSupport::probe`]) and handed to every capture and
/// restore.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VcpuStateSupport {
    /// The MSRs to try to save, in this order: those KVM lists
    /// (`KVM_GET_MSR_INDEX_LIST`), then [`UNLISTED_MSRS`].
    pub msrs: Vec<u32>,
    /// The size of the XSAVE area (`KVM_CAP_XSAVE2`, 4096 bytes where only
    /// `KVM_CAP_XSAVE` exists); `None` where KVM has no XSAVE, and the
    /// legacy FPU state is saved instead.
    pub xsave_size: Option<usize>,
    /// Whether KVM saves the extended control registers (`KVM_CAP_XCRS`).
    pub xcrs: bool,
}

impl VcpuStateSupport {
    /// Asks KVM what it can save for the vCPUs of `vm`.
    pub fn probe(kvm: &Kvm, vm: &VmFd) -> Result<VcpuStateSupport, VcpuStateError> {
        let listed = kvm
            .get_msr_index_list()
            .map_err(|source| VcpuStateError::Get {
                what: "MSR index list",
                source,
            })?;
        let mut msrs = listed.as_slice().to_vec();
        for &index in UNLISTED_MSRS {
            if !msrs.contains(&index) {
                msrs.push(index);
            }
        }
        let xsave_size = if vm.check_extension(Cap::Xsave) {
            // 0 where KVM predates KVM_CAP_XSAVE2; never below the legacy size.
            let size = vm.check_extension_int(Cap::Xsave2).max(0) as usize;
            Some(size.max(XSAVE_LEGACY_SIZE))
        } else {
            None
        };
        Ok(VcpuStateSupport {
            msrs,
            xsave_size,
            xcrs: vm.check_extension(Cap::Xcrs),
        })
    }
}

/// General-purpose registers (`struct kvm_regs`).
#[allow(missing_docs)] // The fields are the x86 registers of the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegsState {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

impl From<&kvm_regs> for RegsState {
    fn from(r: &kvm_regs) -> Self {
        RegsState {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

impl From<&RegsState> for kvm_regs {
    fn from(r: &RegsState) -> Self {
        kvm_regs {
            rax: r.rax,
            rbx: r.rbx,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            rsp: r.rsp,
            rbp: r.rbp,
            r8: r.r8,
            r9: r.r9,
            r10: r.r10,
            r11: r.r11,
            r12: r.r12,
            r13: r.r13,
            r14: r.r14,
            r15: r.r15,
            rip: r.rip,
            rflags: r.rflags,
        }
    }
}

/// A segment register's hidden part (`struct kvm_segment`).
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentState {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    #[serde(rename = "type")]
    pub type_: u8,
    pub present: u8,
    pub dpl: u8,
    pub db: u8,
    pub s: u8,
    pub l: u8,
    pub g: u8,
    pub avl: u8,
    pub unusable: u8,
}

impl From<&kvm_segment> for SegmentState {
    fn from(s: &kvm_segment) -> Self {
        SegmentState {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
        }
    }
}

impl From<&SegmentState> for kvm_segment {
    fn from(s: &SegmentState) -> Self {
        kvm_segment {
            base: s.base,
            limit: s.limit,
            selector: s.selector,
            type_: s.type_,
            present: s.present,
            dpl: s.dpl,
            db: s.db,
            s: s.s,
            l: s.l,
            g: s.g,
            avl: s.avl,
            unusable: s.unusable,
            padding: 0,
        }
    }
}

/// A descriptor table register (`struct kvm_dtable`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DtableState {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes, minus one.
    pub limit: u16,
}

impl From<&kvm_dtable> for DtableState {
    fn from(d: &kvm_dtable) -> Self {
        DtableState {
            base: d.base,
            limit: d.limit,
        }
    }
}

impl From<&DtableState> for kvm_dtable {
    fn from(d: &DtableState) -> Self {
        kvm_dtable {
            base: d.base,
            limit: d.limit,
            padding: [0; 3],
        }
    }
}

/// Segment, control and system registers (`struct kvm_sregs`).
#[allow(missing_docs)] // The fields are the x86 registers of the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SregsState {
    pub cs: SegmentState,
    pub ds: SegmentState,
    pub es: SegmentState,
    pub fs: SegmentState,
    pub gs: SegmentState,
    pub ss: SegmentState,
    pub tr: SegmentState,
    pub ldt: SegmentState,
    pub gdt: DtableState,
    pub idt: DtableState,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
    /// The external interrupt KVM has pending (one bit per vector).
    pub interrupt_bitmap: [u64; 4],
}

impl From<&kvm_sregs> for SregsState {
    fn from(s: &kvm_sregs) -> Self {
        SregsState {
            cs: (&s.cs).into(),
            ds: (&s.ds).into(),
            es: (&s.es).into(),
            fs: (&s.fs).into(),
            gs: (&s.gs).into(),
            ss: (&s.ss).into(),
            tr: (&s.tr).into(),
            ldt: (&s.ldt).into(),
            gdt: (&s.gdt).into(),
            idt: (&s.idt).into(),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
            interrupt_bitmap: s.interrupt_bitmap,
        }
    }
}

impl From<&SregsState> for kvm_sregs {
    fn from(s: &SregsState) -> Self {
        kvm_sregs {
            cs: (&s.cs).into(),
            ds: (&s.ds).into(),
            es: (&s.es).into(),
            fs: (&s.fs).into(),
            gs: (&s.gs).into(),
            ss: (&s.ss).into(),
            tr: (&s.tr).into(),
            ldt: (&s.ldt).into(),
            gdt: (&s.gdt).into(),
            idt: (&s.idt).into(),
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            cr8: s.cr8,
            efer: s.efer,
            apic_base: s.apic_base,
            interrupt_bitmap: s.interrupt_bitmap,
        }
    }
}

/// The x87/SSE state (`struct kvm_fpu`), saved where KVM has no XSAVE.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FpuState {
    pub fpr: [[u8; 16]; 8],
    pub fcw: u16,
    pub fsw: u16,
    pub ftwx: u8,
    pub last_opcode: u16,
    pub last_ip: u64,
    pub last_dp: u64,
    pub xmm: [[u8; 16]; 16],
    pub mxcsr: u32,
}

impl From<&kvm_fpu> for FpuState {
    fn from(f: &kvm_fpu) -> Self {
        FpuState {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
        }
    }
}

impl From<&FpuState> for kvm_fpu {
    fn from(f: &FpuState) -> Self {
        kvm_fpu {
            fpr: f.fpr,
            fcw: f.fcw,
            fsw: f.fsw,
            ftwx: f.ftwx,
            last_opcode: f.last_opcode,
            last_ip: f.last_ip,
            last_dp: f.last_dp,
            xmm: f.xmm,
            mxcsr: f.mxcsr,
            ..Default::default()
        }
    }
}

/// The floating-point and vector state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FloatState {
    /// The XSAVE area (`KVM_GET_XSAVE`/`KVM_GET_XSAVE2`): x87, SSE, AVX and
    /// every other component the guest enabled, in the standard format.
    Xsave(Blob),
    /// The legacy x87/SSE state (`KVM_GET_FPU`), where KVM has no XSAVE.
    Fpu(Box<FpuState>),
}

/// One extended control register (`struct kvm_xcr`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XcrState {
    /// Which XCR (0 is XCR0).
    pub xcr: u32,
    /// Its value.
    pub value: u64,
}

/// The extended control registers (`struct kvm_xcrs`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct XcrsState {
    /// KVM's flags.
    pub flags: u32,
    /// The registers KVM reported.
    pub xcrs: Vec<XcrState>,
}

impl XcrsState {
    fn to_kvm(&self) -> Result<kvm_xcrs, VcpuStateError> {
        let mut x = kvm_xcrs {
            flags: self.flags,
            ..Default::default()
        };
        if self.xcrs.len() > x.xcrs.len() {
            return Err(VcpuStateError::Malformed {
                what: "the XCR list",
                found: self.xcrs.len(),
                expected: "at most 16 entries",
            });
        }
        x.nr_xcrs = self.xcrs.len() as u32;
        for (kvm, saved) in x.xcrs.iter_mut().zip(&self.xcrs) {
            *kvm = kvm_xcr {
                xcr: saved.xcr,
                reserved: 0,
                value: saved.value,
            };
        }
        Ok(x)
    }
}

impl From<&kvm_xcrs> for XcrsState {
    fn from(x: &kvm_xcrs) -> Self {
        let count = (x.nr_xcrs as usize).min(x.xcrs.len());
        XcrsState {
            flags: x.flags,
            xcrs: x.xcrs[..count]
                .iter()
                .map(|e| XcrState {
                    xcr: e.xcr,
                    value: e.value,
                })
                .collect(),
        }
    }
}

/// The debug registers (`struct kvm_debugregs`).
#[allow(missing_docs)] // The fields are the x86 registers of the same name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebugRegsState {
    pub db: [u64; 4],
    pub dr6: u64,
    pub dr7: u64,
    /// KVM's flags.
    pub flags: u64,
}

impl From<&kvm_debugregs> for DebugRegsState {
    fn from(d: &kvm_debugregs) -> Self {
        DebugRegsState {
            db: d.db,
            dr6: d.dr6,
            dr7: d.dr7,
            flags: d.flags,
        }
    }
}

impl From<&DebugRegsState> for kvm_debugregs {
    fn from(d: &DebugRegsState) -> Self {
        kvm_debugregs {
            db: d.db,
            dr6: d.dr6,
            dr7: d.dr7,
            flags: d.flags,
            ..Default::default()
        }
    }
}

/// An exception KVM has injected or has pending.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExceptionEvent {
    pub injected: u8,
    pub nr: u8,
    pub has_error_code: u8,
    pub pending: u8,
    pub error_code: u32,
    pub has_payload: u8,
    pub payload: u64,
}

/// An external interrupt being injected.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterruptEvent {
    pub injected: u8,
    pub nr: u8,
    pub soft: u8,
    pub shadow: u8,
}

/// Non-maskable interrupt state.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NmiEvent {
    pub injected: u8,
    pub pending: u8,
    pub masked: u8,
}

/// System-management mode state.
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmiEvent {
    pub smm: u8,
    pub pending: u8,
    pub smm_inside_nmi: u8,
    pub latched_init: u8,
}

/// Events KVM has pending or in flight (`struct kvm_vcpu_events`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuEventsState {
    /// Exception state.
    pub exception: ExceptionEvent,
    /// Interrupt state.
    pub interrupt: InterruptEvent,
    /// NMI state.
    pub nmi: NmiEvent,
    /// The SIPI vector of an AP waiting for one.
    pub sipi_vector: u32,
    /// `KVM_VCPUEVENT_VALID_*`: which fields KVM filled.
    pub flags: u32,
    /// SMM state.
    pub smi: SmiEvent,
    /// A triple fault KVM has pending.
    pub triple_fault_pending: u8,
}

impl From<&kvm_vcpu_events> for VcpuEventsState {
    fn from(e: &kvm_vcpu_events) -> Self {
        VcpuEventsState {
            exception: ExceptionEvent {
                injected: e.exception.injected,
                nr: e.exception.nr,
                has_error_code: e.exception.has_error_code,
                pending: e.exception.pending,
                error_code: e.exception.error_code,
                has_payload: e.exception_has_payload,
                payload: e.exception_payload,
            },
            interrupt: InterruptEvent {
                injected: e.interrupt.injected,
                nr: e.interrupt.nr,
                soft: e.interrupt.soft,
                shadow: e.interrupt.shadow,
            },
            nmi: NmiEvent {
                injected: e.nmi.injected,
                pending: e.nmi.pending,
                masked: e.nmi.masked,
            },
            sipi_vector: e.sipi_vector,
            flags: e.flags,
            smi: SmiEvent {
                smm: e.smi.smm,
                pending: e.smi.pending,
                smm_inside_nmi: e.smi.smm_inside_nmi,
                latched_init: e.smi.latched_init,
            },
            triple_fault_pending: e.triple_fault.pending,
        }
    }
}

impl From<&VcpuEventsState> for kvm_vcpu_events {
    fn from(s: &VcpuEventsState) -> Self {
        let mut e = kvm_vcpu_events {
            sipi_vector: s.sipi_vector,
            flags: s.flags,
            exception_has_payload: s.exception.has_payload,
            exception_payload: s.exception.payload,
            ..Default::default()
        };
        e.exception.injected = s.exception.injected;
        e.exception.nr = s.exception.nr;
        e.exception.has_error_code = s.exception.has_error_code;
        e.exception.pending = s.exception.pending;
        e.exception.error_code = s.exception.error_code;
        e.interrupt.injected = s.interrupt.injected;
        e.interrupt.nr = s.interrupt.nr;
        e.interrupt.soft = s.interrupt.soft;
        e.interrupt.shadow = s.interrupt.shadow;
        e.nmi.injected = s.nmi.injected;
        e.nmi.pending = s.nmi.pending;
        e.nmi.masked = s.nmi.masked;
        e.smi.smm = s.smi.smm;
        e.smi.pending = s.smi.pending;
        e.smi.smm_inside_nmi = s.smi.smm_inside_nmi;
        e.smi.latched_init = s.smi.latched_init;
        e.triple_fault.pending = s.triple_fault_pending;
        e
    }
}

/// One CPUID leaf as the vCPU reports it (`struct kvm_cpuid_entry2`).
#[allow(missing_docs)] // The fields are KVM's, named as in <asm/kvm.h>.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuidEntryState {
    pub function: u32,
    pub index: u32,
    pub flags: u32,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

/// One MSR and its value.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MsrState {
    /// The MSR's index.
    pub index: u32,
    /// Its value.
    pub data: u64,
}

/// Everything KVM holds for one paused vCPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VcpuState {
    /// The CPUID the vCPU was created with (`KVM_GET_CPUID2`).
    pub cpuid: Vec<CpuidEntryState>,
    /// Every MSR KVM let podvm read, in the order KVM lists them.
    pub msrs: Vec<MsrState>,
    /// General-purpose registers.
    pub regs: RegsState,
    /// Segment, control and system registers.
    pub sregs: SregsState,
    /// Floating-point and vector registers.
    pub float: FloatState,
    /// Extended control registers, where KVM saves them.
    pub xcrs: Option<XcrsState>,
    /// Debug registers.
    pub debug_regs: DebugRegsState,
    /// The LAPIC register page (`struct kvm_lapic_state`, 1 KiB).
    pub lapic: Blob,
    /// `KVM_MP_STATE_*`: running, halted, waiting for INIT/SIPI.
    pub mp_state: u32,
    /// Pending and in-flight events.
    pub events: VcpuEventsState,
    /// The TSC frequency in kHz, where KVM reports it.
    pub tsc_khz: Option<u32>,
}

impl VcpuState {
    /// The value of MSR `index`, if it was saved.
    pub fn msr(&self, index: u32) -> Option<u64> {
        self.msrs.iter().find(|m| m.index == index).map(|m| m.data)
    }
}

/// Reads `candidates` with `get` (`KVM_GET_MSRS`), [`KVM_MAX_MSR_ENTRIES`]
/// at a time. KVM stops at the first MSR of a batch it refuses and says
/// how many it read: that MSR is left out and the rest are asked again.
/// Returns the MSRs read and those refused.
fn read_msrs(
    candidates: &[u32],
    mut get: impl FnMut(&mut Msrs) -> Result<usize, kvm_ioctls::Error>,
) -> Result<(Vec<MsrState>, Vec<u32>), VcpuStateError> {
    let mut saved = Vec::with_capacity(candidates.len());
    let mut refused = Vec::new();
    let mut rest = candidates;
    while !rest.is_empty() {
        let batch = &rest[..rest.len().min(KVM_MAX_MSR_ENTRIES)];
        let entries: Vec<kvm_msr_entry> = batch
            .iter()
            .map(|&index| kvm_msr_entry {
                index,
                ..Default::default()
            })
            .collect();
        let mut msrs = Msrs::from_entries(&entries).map_err(|source| VcpuStateError::Fam {
            what: "MSR list",
            source,
        })?;
        let read = get(&mut msrs)
            .map_err(|source| VcpuStateError::Get {
                what: "MSRs",
                source,
            })?
            .min(batch.len());
        saved.extend(msrs.as_slice()[..read].iter().map(|e| MsrState {
            index: e.index,
            data: e.data,
        }));
        if read < batch.len() {
            refused.push(batch[read]);
            rest = &rest[read + 1..];
        } else {
            rest = &rest[batch.len()..];
        }
    }
    Ok((saved, refused))
}

/// The order in which `msrs` are restored: IA32_TSC_DEADLINE after
/// everything else (after IA32_TSC in particular), the rest as saved.
fn msr_restore_order(msrs: &[MsrState]) -> Vec<MsrState> {
    let (late, early): (Vec<MsrState>, Vec<MsrState>) = msrs
        .iter()
        .cloned()
        .partition(|m| m.index == MSR_IA32_TSC_DEADLINE);
    early.into_iter().chain(late).collect()
}

fn words_to_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

fn bytes_to_words(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn get_xsave(fd: &VcpuFd, size: usize) -> Result<Blob, VcpuStateError> {
    let get = |source| VcpuStateError::Get {
        what: "XSAVE area",
        source,
    };
    if size <= XSAVE_LEGACY_SIZE {
        let xsave = fd.get_xsave().map_err(get)?;
        return Ok(Blob(words_to_bytes(&xsave.region)));
    }
    let extra = (size - XSAVE_LEGACY_SIZE).div_ceil(4);
    let mut xsave = Xsave::new(extra).map_err(|source| VcpuStateError::Fam {
        what: "XSAVE area",
        source,
    })?;
    // SAFETY: `xsave` has room for `size` bytes, the size KVM reported for
    // this VM's XSAVE area (KVM_CAP_XSAVE2), so KVM writes within it.
    unsafe { fd.get_xsave2(&mut xsave) }.map_err(get)?;
    let mut bytes = words_to_bytes(&xsave.as_fam_struct_ref().xsave.region);
    bytes.extend(words_to_bytes(xsave.as_slice()));
    Ok(Blob(bytes))
}

fn set_xsave(fd: &VcpuFd, saved: &Blob, size: usize) -> Result<(), VcpuStateError> {
    let bytes = &saved.0;
    if bytes.len() < XSAVE_LEGACY_SIZE || !bytes.len().is_multiple_of(4) {
        return Err(VcpuStateError::Malformed {
            what: "the XSAVE area",
            found: bytes.len(),
            expected: "a multiple of 4 bytes, at least 4096",
        });
    }
    // KVM reads as many bytes as its own XSAVE area has: pass at least that
    // much (zeros beyond what was saved: components the snapshot's guest
    // did not have are in their initial state).
    let total = bytes.len().max(size);
    let words = bytes_to_words(bytes);
    let (region, extra) = words.split_at(XSAVE_LEGACY_SIZE / 4);
    let mut xsave = Xsave::new((total - XSAVE_LEGACY_SIZE).div_ceil(4)).map_err(|source| {
        VcpuStateError::Fam {
            what: "XSAVE area",
            source,
        }
    })?;
    // SAFETY: only the fixed `region` array of the header is written; the
    // FAM length stays what `Xsave::new` allocated.
    unsafe { xsave.as_mut_fam_struct() }
        .xsave
        .region
        .copy_from_slice(region);
    xsave.as_mut_slice()[..extra.len()].copy_from_slice(extra);
    // SAFETY: `xsave` holds at least the VM's XSAVE size (KVM_CAP_XSAVE2),
    // which is what KVM_SET_XSAVE reads.
    unsafe { fd.set_xsave2(&xsave) }.map_err(|source| VcpuStateError::Set {
        what: "XSAVE area",
        source,
    })
}

/// The CPUID of `fd`, without the zeroed entries past the end that some
/// kernels leave in a larger buffer.
fn get_cpuid(fd: &VcpuFd) -> Result<Vec<CpuidEntryState>, VcpuStateError> {
    let cpuid = fd
        .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
        .map_err(|source| VcpuStateError::Get {
            what: "CPUID",
            source,
        })?;
    Ok(cpuid
        .as_slice()
        .iter()
        // Leaf 0 always has a non-zero EAX (the highest leaf).
        .filter(|e| !(e.function == 0 && e.index == 0 && e.flags == 0 && e.eax == 0))
        .map(|e| CpuidEntryState {
            function: e.function,
            index: e.index,
            flags: e.flags,
            eax: e.eax,
            ebx: e.ebx,
            ecx: e.ecx,
            edx: e.edx,
        })
        .collect())
}

/// Reads the whole state of `fd`, a vCPU that is out of `KVM_RUN` with no
/// I/O pending (see `Vcpu::save_state`), while every vCPU of its VM is
/// paused.
pub fn save_vcpu_state(
    fd: &VcpuFd,
    support: &VcpuStateSupport,
) -> Result<VcpuState, VcpuStateError> {
    let get = |what| move |source| VcpuStateError::Get { what, source };
    // The order follows what KVM's getters do to the state:
    // - KVM_GET_MP_STATE first: it makes the LAPIC accept pending INIT/SIPI
    //   events, which changes the MP state and registers read after it.
    // - KVM_GET_VCPU_EVENTS last: other getters may still move state into
    //   the pending events (sregs, for one, carries a pending interrupt).
    let mp_state = fd.get_mp_state().map_err(get("MP state"))?.mp_state;
    let regs = fd.get_regs().map_err(get("registers"))?;
    let sregs = fd.get_sregs().map_err(get("special registers"))?;
    let float = match support.xsave_size {
        Some(size) => FloatState::Xsave(get_xsave(fd, size)?),
        None => FloatState::Fpu(Box::new((&fd.get_fpu().map_err(get("FPU"))?).into())),
    };
    let xcrs = if support.xcrs {
        Some((&fd.get_xcrs().map_err(get("XCRs"))?).into())
    } else {
        None
    };
    let debug_regs = fd.get_debug_regs().map_err(get("debug registers"))?;
    let lapic = fd.get_lapic().map_err(get("LAPIC"))?;
    let tsc_khz = match fd.get_tsc_khz() {
        Ok(khz) => Some(khz),
        Err(e) => {
            log::debug!("vCPU TSC frequency unknown ({e}): a restore will not scale it");
            None
        }
    };
    let cpuid = get_cpuid(fd)?;
    let (msrs, refused) = read_msrs(&support.msrs, |msrs| fd.get_msrs(msrs))?;
    if !refused.is_empty() {
        log::debug!("MSRs KVM would not read, left out of the snapshot: {refused:#x?}");
    }
    let events = fd.get_vcpu_events().map_err(get("pending events"))?;
    Ok(VcpuState {
        cpuid,
        msrs,
        regs: (&regs).into(),
        sregs: (&sregs).into(),
        float,
        xcrs,
        debug_regs: (&debug_regs).into(),
        lapic: Blob(lapic.regs.iter().map(|&b| b as u8).collect()),
        mp_state,
        events: (&events).into(),
        tsc_khz,
    })
}

/// What a restore gives KVM, checked and converted before the first ioctl
/// so that a malformed state changes nothing.
struct KvmVcpuState {
    cpuid: CpuId,
    msrs: Vec<Msrs>,
    lapic: kvm_lapic_state,
    xcrs: Option<kvm_xcrs>,
}

impl KvmVcpuState {
    fn new(state: &VcpuState) -> Result<Self, VcpuStateError> {
        let fam = |what| move |source| VcpuStateError::Fam { what, source };
        let entries: Vec<_> = state
            .cpuid
            .iter()
            .map(|e| kvm_bindings::kvm_cpuid_entry2 {
                function: e.function,
                index: e.index,
                flags: e.flags,
                eax: e.eax,
                ebx: e.ebx,
                ecx: e.ecx,
                edx: e.edx,
                ..Default::default()
            })
            .collect();
        let cpuid = CpuId::from_entries(&entries).map_err(fam("CPUID"))?;
        let msrs = msr_restore_order(&state.msrs)
            .chunks(KVM_MAX_MSR_ENTRIES)
            .map(|chunk| {
                let entries: Vec<_> = chunk
                    .iter()
                    .map(|m| kvm_msr_entry {
                        index: m.index,
                        data: m.data,
                        ..Default::default()
                    })
                    .collect();
                FamStructWrapper::from_entries(&entries).map_err(fam("MSR list"))
            })
            .collect::<Result<Vec<Msrs>, _>>()?;
        if state.lapic.0.len() != LAPIC_SIZE {
            return Err(VcpuStateError::Malformed {
                what: "the LAPIC page",
                found: state.lapic.0.len(),
                expected: "1024 bytes",
            });
        }
        let mut lapic = kvm_lapic_state::default();
        for (reg, &b) in lapic.regs.iter_mut().zip(&state.lapic.0) {
            *reg = b as _;
        }
        let xcrs = state.xcrs.as_ref().map(XcrsState::to_kvm).transpose()?;
        Ok(KvmVcpuState {
            cpuid,
            msrs,
            lapic,
            xcrs,
        })
    }
}

/// Whether `host_khz` is further from `saved_khz` than calibration noise.
fn tsc_needs_scaling(saved_khz: u32, host_khz: u32) -> bool {
    let diff = u64::from(saved_khz.abs_diff(host_khz));
    diff * 1_000_000 > u64::from(saved_khz) * TSC_KHZ_TOLERANCE_PPM
}

/// Gives `fd`, a vCPU that was created but has not run, the state
/// `state`. Create every vCPU of the VM before restoring any (KVM builds
/// its APIC map when each LAPIC is set).
pub fn restore_vcpu_state(
    fd: &VcpuFd,
    state: &VcpuState,
    support: &VcpuStateSupport,
) -> Result<(), VcpuStateError> {
    let kvm = KvmVcpuState::new(state)?;
    let set = |what| move |source| VcpuStateError::Set { what, source };
    // The order is KVM's:
    // - CPUID first: KVM derives which registers, MSRs and XSAVE components
    //   are valid from it.
    // - The TSC frequency before the MSRs, so that IA32_TSC is set in the
    //   guest's units.
    // - KVM_SET_REGS clears pending exceptions and KVM_SET_SREGS sets the
    //   APIC base, so both come before the LAPIC and the events.
    // - The LAPIC before the MSRs: IA32_TSC_DEADLINE is only taken by a
    //   configured LAPIC, and after IA32_TSC (see `msr_restore_order`).
    // - The MP state and the events last: they refer to the LAPIC's
    //   pending INIT/SIPI, and the events restore what KVM_SET_REGS cleared.
    fd.set_cpuid2(&kvm.cpuid).map_err(set("CPUID"))?;
    if let Some(saved_khz) = state.tsc_khz {
        match fd.get_tsc_khz() {
            Ok(host_khz) if tsc_needs_scaling(saved_khz, host_khz) => {
                fd.set_tsc_khz(saved_khz)
                    .map_err(|source| VcpuStateError::TscScaling {
                        saved_khz,
                        host_khz,
                        source,
                    })?;
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "cannot read this host's TSC frequency ({e}); the guest's TSC stays unscaled"
            ),
        }
    }
    fd.set_regs(&(&state.regs).into())
        .map_err(set("registers"))?;
    fd.set_sregs(&(&state.sregs).into())
        .map_err(set("special registers"))?;
    match &state.float {
        FloatState::Xsave(area) => set_xsave(fd, area, support.xsave_size.unwrap_or(0))?,
        FloatState::Fpu(fpu) => fd.set_fpu(&fpu.as_ref().into()).map_err(set("FPU"))?,
    }
    if let Some(xcrs) = &kvm.xcrs {
        fd.set_xcrs(xcrs).map_err(set("XCRs"))?;
    }
    fd.set_debug_regs(&(&state.debug_regs).into())
        .map_err(set("debug registers"))?;
    fd.set_lapic(&kvm.lapic).map_err(set("LAPIC"))?;
    for msrs in &kvm.msrs {
        let written = fd.set_msrs(msrs).map_err(set("MSRs"))?;
        if let Some(refused) = msrs.as_slice().get(written) {
            return Err(VcpuStateError::MsrRefused {
                index: refused.index,
                data: refused.data,
            });
        }
    }
    fd.set_mp_state(kvm_mp_state {
        mp_state: state.mp_state,
    })
    .map_err(set("MP state"))?;
    fd.set_vcpu_events(&(&state.events).into())
        .map_err(set("pending events"))?;
    // Tell a guest using kvmclock that it was stopped, so that its soft
    // lockup watchdog does not fire on the jump. EINVAL when the guest has
    // not enabled kvmclock: nothing to tell then.
    if let Err(e) = fd.kvmclock_ctrl() {
        log::debug!("KVM_KVMCLOCK_CTRL: {e} (the guest does not use kvmclock)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::x86_64::msr::MSR_IA32_TSC;

    fn err(errno: i32) -> kvm_ioctls::Error {
        kvm_ioctls::Error::new(errno)
    }

    /// A fake KVM_GET_MSRS that refuses the MSRs in `refuse`.
    fn fake_get(
        refuse: &'static [u32],
    ) -> impl FnMut(&mut Msrs) -> Result<usize, kvm_ioctls::Error> {
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
}
