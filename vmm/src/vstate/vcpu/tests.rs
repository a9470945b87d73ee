//! vCPU threads against real KVM: boot, kicks, pause, save and restore.

use super::*;
use crate::arch::x86_64::layout::HIGH_MEMORY_START;
use crate::arch::x86_64::regs::{setup_gdt_idt, setup_page_tables};
use crate::memory::create_guest_memory;
use crate::persist::test_utils::without_tsc;
use crate::persist::vcpu::VcpuStateSupport;
use crate::vstate::vm::Vm;
use devices::BusDevice;
use kvm_bindings::KVM_MAX_CPUID_ENTRIES;
use kvm_ioctls::Kvm;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering;
use std::sync::mpsc::channel;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

/// Counts the guest's writes to its port.
struct Counter(Arc<AtomicU64>);

impl BusDevice for Counter {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn pause_holds_the_vcpu_out_of_the_guest_until_resume() {
    if !testkit::need_kvm("pause_holds_the_vcpu_out_of_the_guest_until_resume") {
        return;
    }
    let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
    // 1: out 0x80, al; jmp 1b
    let mem = create_guest_memory(16 << 20).unwrap();
    mem.write_slice(&[0xe6, 0x80, 0xeb, 0xfc], GuestAddress(HIGH_MEMORY_START))
        .unwrap();
    let entry = BootEntry::Linux64 {
        entry: HIGH_MEMORY_START,
    };
    setup_page_tables(&mem).unwrap();
    setup_gdt_idt(&mem, entry).unwrap();
    let vm = Vm::new(&kvm).unwrap();
    vm.register_memory(&mem).unwrap();
    vm.setup_irqchip().unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let mut io = IoBuses::default();
    io.pio
        .insert(0x80, 1, Arc::new(Mutex::new(Counter(count.clone()))))
        .unwrap();
    let vcpu = Vcpu::new(vm.fd(), 0, Arc::new(io), mem.clone()).unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let msrs = kvm.get_msr_index_list().unwrap();
    vcpu.configure(&cpuid, &msrs, Topology::new(1, false), entry)
        .unwrap();
    let (tx, _rx) = channel();
    let handle = vcpu
        .start(tx, EventFd::new(EFD_NONBLOCK).unwrap(), None, false)
        .unwrap();

    wait_until("the guest to run", || count.load(Ordering::SeqCst) > 10);
    assert!(handle.pause(Duration::from_secs(10)), "paused");
    let held = count.load(Ordering::SeqCst);
    // Absence of progress can only be observed over some time.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        count.load(Ordering::SeqCst),
        held,
        "no guest code while paused"
    );

    assert!(handle.resume(Duration::from_secs(10)), "resumed");
    wait_until("the guest to run again", || {
        count.load(Ordering::SeqCst) > held + 10
    });

    // Stopping works from a pause as well.
    assert!(handle.pause(Duration::from_secs(10)));
    handle.stop();
    handle.join();
}

/// Answers a port read only when the test lets it.
struct HeldPort {
    reading: Sender<()>,
    release: std::sync::mpsc::Receiver<u8>,
}

impl BusDevice for HeldPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        let _ = self.reading.send(());
        data.fill(self.release.recv().unwrap_or(0));
    }
    fn write(&mut self, _offset: u64, _data: &[u8]) {}
}

#[test]
fn a_saved_state_holds_the_result_of_the_last_port_read() {
    if !testkit::need_kvm("a_saved_state_holds_the_result_of_the_last_port_read") {
        return;
    }
    let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
    // in al, 0x80; 1: jmp 1b
    let mem = create_guest_memory(16 << 20).unwrap();
    mem.write_slice(&[0xe4, 0x80, 0xeb, 0xfe], GuestAddress(HIGH_MEMORY_START))
        .unwrap();
    let entry = BootEntry::Linux64 {
        entry: HIGH_MEMORY_START,
    };
    setup_page_tables(&mem).unwrap();
    setup_gdt_idt(&mem, entry).unwrap();
    let vm = Vm::new(&kvm).unwrap();
    vm.register_memory(&mem).unwrap();
    vm.setup_irqchip().unwrap();
    let (reading_tx, reading) = channel();
    let (release, release_rx) = channel();
    let mut io = IoBuses::default();
    let port = HeldPort {
        reading: reading_tx,
        release: release_rx,
    };
    io.pio.insert(0x80, 1, Arc::new(Mutex::new(port))).unwrap();
    let vcpu = Vcpu::new(vm.fd(), 0, Arc::new(io), mem.clone()).unwrap();
    let cpuid = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    let msrs = kvm.get_msr_index_list().unwrap();
    vcpu.configure(&cpuid, &msrs, Topology::new(1, false), entry)
        .unwrap();
    let support = Arc::new(VcpuStateSupport::probe(&kvm, vm.fd()).unwrap());
    let (tx, _rx) = channel();
    let handle = vcpu
        .start(tx, EventFd::new(EFD_NONBLOCK).unwrap(), None, false)
        .unwrap();

    // The pause lands while the device answers the `in`: the vCPU
    // parks right after the exit, before KVM has the data.
    reading
        .recv_timeout(Duration::from_secs(30))
        .expect("the guest reads its port");
    handle.request_pause();
    release.send(0x5a).unwrap();
    assert!(handle.wait_paused(Duration::from_secs(10)), "paused");
    let state = handle
        .save_state(&support, Duration::from_secs(10))
        .unwrap();
    assert_eq!(
        state.regs.rax & 0xff,
        0x5a,
        "al holds what the port returned"
    );
    assert_eq!(
        state.regs.rip,
        HIGH_MEMORY_START + 2,
        "rip is past the `in`"
    );
    // Saving again changes nothing but the ticking TSC: there is no
    // I/O left to finish.
    let again = handle
        .save_state(&support, Duration::from_secs(10))
        .unwrap();
    assert_eq!(again.regs, state.regs);
    assert_eq!(without_tsc(again), without_tsc(state));
    handle.stop();
    handle.join();
}
