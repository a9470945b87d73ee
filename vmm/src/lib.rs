//! The podvm virtual machine monitor: a KVM VM with its vCPUs, guest
//! memory, the x86_64 boot path and the devices, driven by one event loop
//! on the VMM thread.
//!
//! Build a VM with [`Vmm::build`], then run it in the one event loop,
//! [`controller::serve_actions`], until the guest resets, powers off or
//! fails, podvm is stopped, or an API client shuts it down.

pub mod arch;
pub mod builder;
pub mod console;
pub mod controller;
pub mod device_manager;
pub mod loader;
pub mod logger;
pub mod memory;
pub mod persist;
pub mod probe;
mod runtime;
pub mod seccomp;
pub mod snapshot;
pub mod vstate;

use std::fs::File;

use vm_memory::GuestMemoryMmap;

pub use builder::{BuildContext, BuildError};
pub use runtime::{EventLoop, RunError, RunningVm, Subscriber, VmExit};

use builder::VirtioDevices;
use device_manager::LegacyDevices;
use vstate::vcpu::Vcpu;
use vstate::vm::Vm;

/// A built VM, ready to run.
pub struct Vmm {
    // Field order is drop order: the VM (and its memory slots) goes before
    // the guest memory it maps.
    vm: Vm,
    vcpus: Vec<Vcpu>,
    legacy: LegacyDevices,
    console_drain: Option<console::ConsoleDrain>,
    virtio: VirtioDevices,
    memory: GuestMemoryMmap,
    /// What a snapshot of this VM needs of the host.
    snapshot: snapshot::SnapshotSupport,
}

/// Host input for the serial console.
pub struct ConsoleInput {
    /// Where input comes from (a descriptor of podvm's own).
    pub file: File,
    /// Whether it is a terminal (Ctrl-A x then ends the VM).
    pub tty: bool,
}

impl ConsoleInput {
    /// The process's standard input, reopened so that podvm's non-blocking
    /// reads do not change the descriptor it shares with its parent.
    pub fn stdin() -> std::io::Result<ConsoleInput> {
        use std::os::fd::AsFd;
        let stdin = std::io::stdin();
        let (file, _) = console::own_description(stdin.as_fd(), false)?;
        Ok(ConsoleInput {
            tty: console::is_tty(stdin.as_fd()),
            file,
        })
    }
}

impl Vmm {
    fn new(
        vm: Vm,
        memory: GuestMemoryMmap,
        vcpus: Vec<Vcpu>,
        legacy: LegacyDevices,
        console_drain: Option<console::ConsoleDrain>,
        virtio: VirtioDevices,
        snapshot: snapshot::SnapshotSupport,
    ) -> Self {
        Vmm {
            vm,
            vcpus,
            legacy,
            console_drain,
            virtio,
            memory,
            snapshot,
        }
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.memory
    }

    /// The number of vCPUs.
    pub fn vcpu_count(&self) -> usize {
        self.vcpus.len()
    }
}
