//! Fixtures for the snapshot tests: a tiny 64-bit guest that counts, in a
//! register and in memory, and reports each count on port 0x80.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::channel;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use devices::BusDevice;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use vm_memory::bitmap::Bitmap;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::arch::x86_64::cpuid::Topology;
use crate::arch::x86_64::layout::HIGH_MEMORY_START;
use crate::arch::x86_64::msr::MSR_IA32_TSC;
use crate::arch::x86_64::regs::{setup_gdt_idt, setup_page_tables, BootEntry};
use crate::persist::vcpu::VcpuState;
use crate::vstate::exit::IoBuses;
use crate::vstate::vcpu::{Vcpu, VcpuHandle};
use crate::vstate::vm::Vm;

/// Where the guest keeps its count.
pub const COUNTER_ADDR: u64 = 0x20_0000;
/// The port it reports on.
pub const PORT: u64 = 0x80;

/// The guest, at [`HIGH_MEMORY_START`]:
///
/// ```text
/// 1: inc rax
///    mov [0x200000], rax
///    out 0x80, al
///    jmp 1b
/// ```
pub const COUNTER_GUEST: [u8; 15] = [
    0x48, 0xff, 0xc0, // inc rax
    0x48, 0x89, 0x04, 0x25, 0x00, 0x00, 0x20, 0x00, // mov [0x200000], rax
    0xe6, 0x80, // out 0x80, al
    0xeb, 0xf1, // jmp -15
];

/// How the guest enters.
pub const ENTRY: BootEntry = BootEntry::Linux64 {
    entry: HIGH_MEMORY_START,
};

/// Counts the guest's writes to [`PORT`] and remembers the first and last
/// byte written.
#[derive(Default)]
pub struct PortLog {
    /// Writes so far.
    pub writes: AtomicU64,
    /// The first byte written, plus one (0: none yet).
    pub first: AtomicU64,
    /// The last byte written.
    pub last: AtomicU64,
}

struct PortDevice(Arc<PortLog>);

impl BusDevice for PortDevice {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        let byte = u64::from(data[0]);
        let _ = self
            .0
            .first
            .compare_exchange(0, byte + 1, Ordering::SeqCst, Ordering::SeqCst);
        self.0.last.store(byte, Ordering::SeqCst);
        self.0.writes.fetch_add(1, Ordering::SeqCst);
    }
}

/// Buses with a [`PortLog`] on [`PORT`].
pub fn port_buses() -> (Arc<IoBuses>, Arc<PortLog>) {
    let log = Arc::new(PortLog::default());
    let mut io = IoBuses::default();
    io.pio
        .insert(PORT, 1, Arc::new(Mutex::new(PortDevice(log.clone()))))
        .unwrap();
    (Arc::new(io), log)
}

/// Writes the counting guest, its page tables and GDT into `mem`.
pub fn load_counter_guest<B: Bitmap>(mem: &GuestMemoryMmap<B>) {
    mem.write_slice(&COUNTER_GUEST, GuestAddress(HIGH_MEMORY_START))
        .unwrap();
    setup_page_tables(mem).unwrap();
    setup_gdt_idt(mem, ENTRY).unwrap();
}

/// A VM with `mem` registered (KVM logging dirty pages when `dirty_log`)
/// and its irqchip.
pub fn new_vm<B: Bitmap>(kvm: &Kvm, mem: &GuestMemoryMmap<B>, dirty_log: bool) -> Vm {
    let vm = Vm::new(kvm).unwrap();
    if dirty_log {
        vm.register_memory_with_dirty_log(mem).unwrap();
    } else {
        vm.register_memory(mem).unwrap();
    }
    vm.setup_irqchip().unwrap();
    vm
}

/// vCPU 0 of `vm`, configured to boot the guest. `mem` is only read to
/// report an emulation failure.
pub fn boot_vcpu(kvm: &Kvm, vm: &Vm, io: Arc<IoBuses>, mem: GuestMemoryMmap) -> Vcpu {
    let vcpu = Vcpu::new(vm.fd(), 0, io, mem).unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let msrs = kvm.get_msr_index_list().unwrap();
    vcpu.configure(&cpuid, &msrs, Topology::new(1, false), ENTRY)
        .unwrap();
    vcpu
}

/// Starts `vcpu`, ignoring its stop reports.
pub fn start(vcpu: Vcpu) -> VcpuHandle {
    let (tx, _rx) = channel();
    // Under the vCPU seccomp filter, as in podvm: a save must stay within it.
    let filters = crate::seccomp::SeccompFilters::builtin().unwrap();
    vcpu.start(
        tx,
        EventFd::new(EFD_NONBLOCK).unwrap(),
        Some(filters),
        false,
    )
    .unwrap()
}

/// Waits (at most 30 s) until `cond` holds.
pub fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Runs `handle` until its guest made `count` more port writes, and
/// pauses it.
pub fn run_for(handle: &VcpuHandle, log: &PortLog, count: u64) {
    let target = log.writes.load(Ordering::SeqCst) + count;
    assert!(handle.resume(Duration::from_secs(10)), "resumed");
    wait_until("the guest to count", || {
        log.writes.load(Ordering::SeqCst) >= target
    });
    assert!(handle.pause(Duration::from_secs(10)), "paused");
}

/// `state` with its TSC, which ticks between any two reads, at 0.
pub fn without_tsc(mut state: VcpuState) -> VcpuState {
    for m in state.msrs.iter_mut().filter(|m| m.index == MSR_IA32_TSC) {
        m.data = 0;
    }
    state
}
