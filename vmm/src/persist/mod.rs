//! Snapshot and restore of the KVM half of a VM: vCPU and VM state, guest
//! memory, and the checksummed state file they travel in.
//!
//! # Creating a snapshot
//!
//! 1. Pause every vCPU (`VcpuHandle::pause`) and quiesce the devices.
//! 2. Save each vCPU with `VcpuHandle::save_state` (on its own thread: it
//!    first lets KVM finish the instruction of the last I/O exit), then the
//!    VM with `Vm::save_state`; [`MachineState::capture`] does both.
//! 3. Write guest memory: [`write_full_memory`] into a new file, or
//!    [`write_diff_memory`] into the previous snapshot's memory file.
//!    Memory comes after the vCPUs, whose save may still write it.
//! 4. Write the state file: [`write_state_file`] with a payload holding the
//!    [`MachineState`] (and whatever else the VMM saves: configuration,
//!    devices).
//!
//! # Loading one
//!
//! 1. [`read_state_file`] (checked: magic, version, length, checksum, CPU
//!    vendor).
//! 2. [`restore_guest_memory`] from the memory file.
//! 3. `Vm::new`, `Vm::register_memory` (or `…_with_dirty_log`),
//!    `Vm::setup_irqchip`, then `Vm::restore_state`.
//! 4. Attach the devices with their saved state.
//! 5. `Vcpu::new` for every vCPU, then `Vcpu::restore_state` for each (all
//!    created before any is restored), then start them.

mod blob;
pub mod crc64;
pub mod memory;
mod page_set;
pub mod state_file;
#[cfg(test)]
pub(crate) mod test_utils;
pub mod vcpu;
pub mod vm;
pub mod working_set;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use vm_memory::bitmap::Bitmap;
use vm_memory::GuestMemoryMmap;

pub use blob::Blob;
pub use memory::{
    restore_guest_memory, write_diff_memory, write_full_memory, MemorySnapshotError, MemoryState,
    MemoryWriteStats, VmmWriteLog,
};
pub use state_file::{
    decode_state_file, encode_state_file, read_state_file, write_state_file, HostCpu,
    StateFileError, StateFileHeader,
};
pub use vcpu::{VcpuState, VcpuStateError, VcpuStateSupport};
pub use vm::{VmState, VmStateError};
pub use working_set::{prefetch_working_set, record_working_set, WorkingSet};

use crate::vstate::vcpu::{VcpuError, VcpuHandle};
use crate::vstate::vm::{Vm, VmError};

/// The machine state could not be captured.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// A vCPU's state could not be saved.
    #[error("{0}")]
    Vcpu(#[source] VcpuError),
    /// The VM's state could not be saved.
    #[error("{0}")]
    Vm(#[source] VmError),
}

/// The KVM half of a snapshot: what KVM holds for the VM and each vCPU,
/// and where guest memory lies in the memory file. The VMM's snapshot
/// payload holds this beside its configuration and device state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineState {
    /// The irqchip, PIT and clock.
    pub vm: VmState,
    /// Every vCPU, in index order.
    pub vcpus: Vec<VcpuState>,
    /// The layout of guest memory in the memory file.
    pub memory: MemoryState,
}

impl MachineState {
    /// Saves every vCPU of `vcpus` (each paused, in index order), then the
    /// VM; describes `mem`. Waits at most `timeout` for each vCPU.
    pub fn capture<B: Bitmap>(
        vm: &Vm,
        vcpus: &[VcpuHandle],
        mem: &GuestMemoryMmap<B>,
        support: &Arc<VcpuStateSupport>,
        timeout: Duration,
    ) -> Result<MachineState, CaptureError> {
        let vcpus = vcpus
            .iter()
            .map(|h| h.save_state(support, timeout))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CaptureError::Vcpu)?;
        Ok(MachineState {
            vm: vm.save_state().map_err(CaptureError::Vm)?,
            vcpus,
            memory: MemoryState::describe(mem),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::test_utils::*;
    use super::*;
    use crate::arch::x86_64::msr::MSR_IA32_TSC;
    use crate::memory::create_guest_memory;
    use crate::vstate::vcpu::Vcpu;
    use kvm_ioctls::Kvm;
    use std::fs::File;
    use std::sync::atomic::Ordering;
    use vm_memory::{Bytes, GuestAddress};

    const WAIT: Duration = Duration::from_secs(10);

    #[test]
    fn a_restored_vm_counts_on_from_the_saved_state() {
        if !testkit::need_kvm("a_restored_vm_counts_on_from_the_saved_state") {
            return;
        }
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        let host = HostCpu::detect(&kvm).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (state_path, mem_path) = (dir.path().join("vm.state"), dir.path().join("vm.mem"));

        // Run the counter well past any count a fresh start would reach
        // in the time the restored VM runs below.
        let mem = create_guest_memory(32 << 20).unwrap();
        load_counter_guest(&mem);
        let vm = new_vm(&kvm, &mem, false);
        let (io, log) = port_buses();
        let handle = start(boot_vcpu(&kvm, &vm, io, mem.clone()));
        wait_until("1000 counts", || log.writes.load(Ordering::SeqCst) >= 1000);
        assert!(handle.pause(WAIT), "paused");

        let support = Arc::new(VcpuStateSupport::probe(&kvm, vm.fd()).unwrap());
        let saved = MachineState::capture(&vm, &[handle], &mem, &support, WAIT).unwrap();
        let mem_file = File::create(&mem_path).unwrap();
        write_full_memory(&mem, &mem_file, Some(&vm)).unwrap();
        write_state_file(&state_path, &saved, &host).unwrap();
        let counted: u64 = mem.read_obj(GuestAddress(COUNTER_ADDR)).unwrap();
        assert!(counted >= 999, "{counted}");
        // The register is the count in memory, or one ahead of it.
        let rax = saved.vcpus[0].regs.rax;
        assert!(
            rax == counted || rax == counted + 1,
            "rax {rax}, memory {counted}"
        );
        // The first VM is gone before the second is made.
        drop((vm, mem, log));

        let (_, loaded): (_, MachineState) = read_state_file(&state_path, &host).unwrap();
        assert_eq!(loaded, saved);
        let mem: GuestMemoryMmap =
            restore_guest_memory(File::open(&mem_path).unwrap(), &loaded.memory).unwrap();
        assert_eq!(
            mem.read_obj::<u64>(GuestAddress(COUNTER_ADDR)).unwrap(),
            counted
        );
        let vm = new_vm(&kvm, &mem, false);
        vm.restore_state(&loaded.vm).unwrap();
        let (io, log) = port_buses();
        let mut vcpu = Vcpu::new(vm.fd(), 0, io, mem.clone()).unwrap();
        vcpu.restore_state(&loaded.vcpus[0], &support).unwrap();

        // The new vCPU holds exactly what was saved but its TSC, which
        // ticks on from the saved value (on this host's PVM, KVM ignores
        // host writes to IA32_TSC: the guest reads the host's TSC, which
        // is past the saved value too).
        let back = vcpu.save_state(&support).unwrap();
        let was = &loaded.vcpus[0];
        let (tsc_then, tsc_now) = (was.msr(MSR_IA32_TSC), back.msr(MSR_IA32_TSC));
        assert!(
            tsc_then.is_some() && tsc_now >= tsc_then,
            "{tsc_then:?} -> {tsc_now:?}"
        );
        assert_eq!(back.regs, was.regs);
        assert_eq!(back.sregs, was.sregs);
        assert_eq!(without_tsc(back), without_tsc(was.clone()));

        // Running, it counts on from the saved value.
        let handle = start(vcpu);
        wait_until("the restored guest to count", || {
            log.writes.load(Ordering::SeqCst) >= 10
        });
        assert!(handle.pause(WAIT), "paused");
        let now: u64 = mem.read_obj(GuestAddress(COUNTER_ADDR)).unwrap();
        assert!(now >= counted + 9, "count {now} after restoring {counted}");
        // Its first report is the saved count or the next one.
        let first = log.first.load(Ordering::SeqCst) - 1;
        assert!(
            first == counted & 0xff || first == (counted + 1) & 0xff,
            "first report {first:#x} after {counted:#x}"
        );
        handle.stop();
        handle.join();
    }

    #[test]
    fn the_state_of_a_running_vcpu_is_refused() {
        if !testkit::need_kvm("the_state_of_a_running_vcpu_is_refused") {
            return;
        }
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        let mem = create_guest_memory(16 << 20).unwrap();
        load_counter_guest(&mem);
        let vm = new_vm(&kvm, &mem, false);
        let (io, log) = port_buses();
        let handle = start(boot_vcpu(&kvm, &vm, io, mem.clone()));
        wait_until("the guest to run", || log.writes.load(Ordering::SeqCst) > 0);
        let support = Arc::new(VcpuStateSupport::probe(&kvm, vm.fd()).unwrap());
        let err = handle.save_state(&support, WAIT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "vCPU 0 is not paused: its state can only be saved while it is"
        );
        handle.stop();
        handle.join();
    }

    /// Times a snapshot of an idle 128 MiB guest and its restore, and
    /// prints them (`--nocapture`); asserts only that the restored guest
    /// runs.
    #[test]
    fn snapshot_and_restore_timings_of_an_idle_128_mib_guest() {
        if !testkit::need_kvm("snapshot_and_restore_timings_of_an_idle_128_mib_guest") {
            return;
        }
        let kvm = Kvm::new().expect("/dev/kvm opened a moment ago");
        let host = HostCpu::detect(&kvm).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut create_ms = Vec::new();
        let mut restore_ms = Vec::new();
        let mut running_ms = Vec::new();
        for round in 0..5 {
            let (state_path, mem_path) = (
                dir.path().join(format!("{round}.state")),
                dir.path().join(format!("{round}.mem")),
            );
            let mem = create_guest_memory(128 << 20).unwrap();
            load_counter_guest(&mem);
            let vm = new_vm(&kvm, &mem, false);
            let (io, log) = port_buses();
            let kvm_vcpu = boot_vcpu(&kvm, &vm, io, mem.clone());
            let support = Arc::new(VcpuStateSupport::probe(&kvm, vm.fd()).unwrap());
            let handle = start(kvm_vcpu);
            wait_until("the guest to run", || {
                log.writes.load(Ordering::SeqCst) >= 10
            });
            assert!(handle.pause(WAIT), "paused");

            let t = std::time::Instant::now();
            let machine = MachineState::capture(&vm, &[handle], &mem, &support, WAIT).unwrap();
            let file = File::create(&mem_path).unwrap();
            write_full_memory(&mem, &file, Some(&vm)).unwrap();
            write_state_file(&state_path, &machine, &host).unwrap();
            create_ms.push(t.elapsed().as_secs_f64() * 1e3);
            drop((vm, mem, file));

            let t = std::time::Instant::now();
            let (_, loaded): (_, MachineState) = read_state_file(&state_path, &host).unwrap();
            let mem: GuestMemoryMmap =
                restore_guest_memory(File::open(&mem_path).unwrap(), &loaded.memory).unwrap();
            let vm = new_vm(&kvm, &mem, false);
            vm.restore_state(&loaded.vm).unwrap();
            let (io, log) = port_buses();
            let vcpu = Vcpu::new(vm.fd(), 0, io, mem.clone()).unwrap();
            vcpu.restore_state(&loaded.vcpus[0], &support).unwrap();
            let handle = start(vcpu);
            restore_ms.push(t.elapsed().as_secs_f64() * 1e3);
            let deadline = t + Duration::from_secs(30);
            while log.writes.load(Ordering::SeqCst) == 0 {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the restored guest runs"
                );
                std::thread::yield_now();
            }
            running_ms.push(t.elapsed().as_secs_f64() * 1e3);
            handle.stop();
            handle.join();
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        eprintln!(
            "idle 128 MiB guest, median of 5: snapshot (vCPU + VM state, memory file, state file) \
             {:.2} ms; restore (state file, map memory, VM, irqchip, state, vCPU, thread) {:.2} ms; \
             to the guest's first exit {:.2} ms",
            median(&mut create_ms),
            median(&mut restore_ms),
            median(&mut running_ms)
        );
    }
}
