//! vCPU exit handling: a free function from a KVM exit to what the vCPU
//! does next, so that it is tested without KVM.

use std::sync::atomic::{AtomicU64, Ordering};

use devices::Bus;
use kvm_bindings::{KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::VcpuExit;

/// The buses vCPU exits are dispatched to.
#[derive(Clone, Default)]
pub struct IoBuses {
    /// Port I/O devices.
    pub pio: Bus,
    /// Memory-mapped devices.
    pub mmio: Bus,
}

/// Why a vCPU stopped running the guest, as far as the exit itself says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// The guest asked for a reset (`KVM_SYSTEM_EVENT_RESET`).
    Reset,
    /// The guest powered off (`KVM_SYSTEM_EVENT_SHUTDOWN`).
    PowerOff,
    /// The vCPU triple-faulted (`KVM_EXIT_SHUTDOWN`).
    TripleFault,
    /// KVM reported an internal error; details are in `kvm_run`.
    InternalError,
    /// KVM could not enter the guest.
    FailEntry(u64),
    /// An exit podvm does not expect from the guests it builds.
    Unexpected(&'static str),
}

/// What the vCPU loop does after an exit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitAction {
    /// Run the guest again.
    Continue,
    /// Stop this vCPU and report why.
    Stop(StopKind),
}

/// How many exits of each kind a vCPU took, for metrics.
#[derive(Debug, Default)]
pub struct ExitCounters {
    /// Port reads.
    pub io_in: AtomicU64,
    /// Port writes.
    pub io_out: AtomicU64,
    /// MMIO reads.
    pub mmio_read: AtomicU64,
    /// MMIO writes.
    pub mmio_write: AtomicU64,
    /// Every other exit.
    pub other: AtomicU64,
}

impl ExitCounters {
    /// Counts `exit`.
    pub fn record(&self, exit: &VcpuExit<'_>) {
        let c = match exit {
            VcpuExit::IoIn(..) => &self.io_in,
            VcpuExit::IoOut(..) => &self.io_out,
            VcpuExit::MmioRead(..) => &self.mmio_read,
            VcpuExit::MmioWrite(..) => &self.mmio_write,
            _ => &self.other,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts as (reason, count) pairs.
    pub fn snapshot(&self) -> [(&'static str, u64); 5] {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("io_in", g(&self.io_in)),
            ("io_out", g(&self.io_out)),
            ("mmio_read", g(&self.mmio_read)),
            ("mmio_write", g(&self.mmio_write)),
            ("other", g(&self.other)),
        ]
    }
}

/// Byte an unclaimed read returns: the floating bus of a PC.
const UNCLAIMED_READ: u8 = 0xff;

/// Handles one exit: device accesses go to the buses, everything else
/// says whether the vCPU keeps running.
pub fn handle_exit(exit: VcpuExit<'_>, io: &IoBuses) -> ExitAction {
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !io.pio.read(u64::from(port), data) {
                data.fill(UNCLAIMED_READ);
            }
            ExitAction::Continue
        }
        VcpuExit::IoOut(port, data) => {
            if !io.pio.write(u64::from(port), data) {
                log::trace!("unclaimed port write {port:#x}: {data:x?}");
            }
            ExitAction::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            if !io.mmio.read(addr, data) {
                data.fill(UNCLAIMED_READ);
            }
            ExitAction::Continue
        }
        VcpuExit::MmioWrite(addr, data) => {
            if !io.mmio.write(addr, data) {
                log::trace!("unclaimed MMIO write {addr:#x}: {data:x?}");
            }
            ExitAction::Continue
        }
        // With the in-kernel LAPIC, HLT is handled by KVM; should one
        // reach us anyway, the guest simply runs again when woken.
        VcpuExit::Hlt => ExitAction::Continue,
        VcpuExit::Shutdown => ExitAction::Stop(StopKind::TripleFault),
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_RESET => ExitAction::Stop(StopKind::Reset),
            KVM_SYSTEM_EVENT_SHUTDOWN => ExitAction::Stop(StopKind::PowerOff),
            _ => ExitAction::Stop(StopKind::Unexpected("system event")),
        },
        VcpuExit::InternalError => ExitAction::Stop(StopKind::InternalError),
        VcpuExit::FailEntry(reason, _cpu) => ExitAction::Stop(StopKind::FailEntry(reason)),
        VcpuExit::Intr | VcpuExit::IrqWindowOpen => ExitAction::Continue,
        VcpuExit::Exception => ExitAction::Stop(StopKind::Unexpected("exception")),
        VcpuExit::Debug(_) => ExitAction::Stop(StopKind::Unexpected("debug")),
        VcpuExit::Hypercall(_) => ExitAction::Stop(StopKind::Unexpected("hypercall")),
        _ => ExitAction::Stop(StopKind::Unexpected("unknown exit reason")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::BusDevice;
    use std::sync::{Arc, Mutex};

    #[derive(Default)]
    struct Echo(Vec<u8>);
    impl BusDevice for Echo {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8 + 1);
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0.extend_from_slice(data);
        }
    }

    fn buses() -> (IoBuses, Arc<Mutex<Echo>>) {
        let dev = Arc::new(Mutex::new(Echo::default()));
        let mut io = IoBuses::default();
        io.pio.insert(0x3f8, 8, dev.clone()).unwrap();
        io.mmio.insert(0xd000_0000, 0x1000, dev.clone()).unwrap();
        (io, dev)
    }

    #[test]
    fn device_accesses_reach_the_buses() {
        let (io, dev) = buses();
        assert_eq!(
            handle_exit(VcpuExit::IoOut(0x3f8, b"h"), &io),
            ExitAction::Continue
        );
        let mut d = [0u8; 1];
        assert_eq!(
            handle_exit(VcpuExit::IoIn(0x3fd, &mut d), &io),
            ExitAction::Continue
        );
        assert_eq!(d, [6]);
        assert_eq!(
            handle_exit(VcpuExit::MmioWrite(0xd000_0004, b"ab"), &io),
            ExitAction::Continue
        );
        let mut w = [0u8; 4];
        handle_exit(VcpuExit::MmioRead(0xd000_0001, &mut w), &io);
        assert_eq!(w, [2; 4]);
        assert_eq!(dev.lock().unwrap().0, b"hab");
    }

    #[test]
    fn unclaimed_reads_float_high() {
        let (io, _) = buses();
        let mut d = [0u8; 2];
        handle_exit(VcpuExit::IoIn(0x80, &mut d), &io);
        assert_eq!(d, [0xff, 0xff]);
        let mut m = [0u8; 4];
        handle_exit(VcpuExit::MmioRead(0x1000, &mut m), &io);
        assert_eq!(m, [0xff; 4]);
        assert_eq!(
            handle_exit(VcpuExit::IoOut(0x80, &[1]), &io),
            ExitAction::Continue
        );
    }

    #[test]
    fn terminal_exits_stop_the_vcpu() {
        let io = IoBuses::default();
        let cases = [
            (VcpuExit::Shutdown, StopKind::TripleFault),
            (VcpuExit::InternalError, StopKind::InternalError),
            (VcpuExit::FailEntry(7, 0), StopKind::FailEntry(7)),
            (
                VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_RESET, &[]),
                StopKind::Reset,
            ),
            (
                VcpuExit::SystemEvent(KVM_SYSTEM_EVENT_SHUTDOWN, &[]),
                StopKind::PowerOff,
            ),
            (VcpuExit::Exception, StopKind::Unexpected("exception")),
        ];
        for (exit, kind) in cases {
            assert_eq!(handle_exit(exit, &io), ExitAction::Stop(kind));
        }
        assert_eq!(handle_exit(VcpuExit::Hlt, &io), ExitAction::Continue);
        assert_eq!(handle_exit(VcpuExit::Intr, &io), ExitAction::Continue);
    }
}
