//! The vsock device model: identity, features, the configuration space
//! (`le64 guest_cid`, spec §5.10.4), activation and reset. The protocol
//! lives in the muxer and the queue functions; this is the thin glue to
//! the transport.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Instant;

use vmm_sys_util::timerfd::TimerFd;

use super::muxer::{Muxer, MuxerError, MuxerOptions, VsockCounters};
use super::queues::{process_eventq, process_rxq, process_txq, Scratch};
use super::{unix, EVENT_QUEUE, RX_QUEUE, TX_QUEUE};
use crate::virtio::queue::log_this;
use crate::virtio::{device_type, Activation, VirtioCommon, VirtioDevice, VIRTIO_F_VERSION_1};

/// Size of each of the three queues.
pub const VSOCK_QUEUE_SIZE: u16 = 256;
/// Features offered: VERSION_1 only. Neither VIRTIO_F_INDIRECT_DESC
/// (chains using it are refused) nor VIRTIO_F_EVENT_IDX; with no
/// VIRTIO_VSOCK_F_* bit negotiated the device is stream-only (§5.10.3).
const AVAIL_FEATURES: u64 = 1 << VIRTIO_F_VERSION_1;

/// A vsock device could not be created.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    /// The CID is one of the reserved ones (0 hypervisor, 1 local, 2 host,
    /// `u32::MAX` any) or does not fit the 32 bits drivers use.
    #[error("guest CID {0} is invalid: it must be from 3 to 4294967294")]
    InvalidCid(u64),
    /// The Unix socket could not be set up.
    #[error("{0}")]
    Listen(#[source] MuxerError),
    /// The event that tells the event loop about activation could not be
    /// created.
    #[error("cannot create the device's state event: {0}")]
    CreateStateEvent(#[source] io::Error),
    /// The timer of the connections' deadlines could not be created.
    #[error("cannot create the device's timer: {0}")]
    CreateTimer(#[source] io::Error),
}

/// The virtio-vsock device, with its host side on Unix sockets.
pub struct Vsock {
    cid: u64,
    pub(super) common: VirtioCommon,
    pub(super) muxer: Muxer,
    scratch: Scratch,
    /// A TRANSPORT_RESET event waits for an event buffer.
    reset_event_pending: bool,
    /// Fires at the muxer's earliest deadline.
    pub(super) timer: TimerFd,
    /// The deadline the timer is set for.
    pub(super) timer_armed: Option<Instant>,
    /// Event-queue errors (a driver that broke its ring), for rate-limited
    /// logs.
    event_errors: u64,
}

impl Vsock {
    /// A device for a guest of CID `guest_cid`, listening on `uds_path`
    /// (which must not exist yet) for host connections, and connecting
    /// guest connections to port P to `<uds_path>_P`.
    pub fn new(guest_cid: u64, uds_path: PathBuf) -> Result<Self, VsockError> {
        Self::with_options(guest_cid, uds_path, MuxerOptions::default())
    }

    /// As [`Vsock::new`], with a connection limit and a clock of one's own.
    pub fn with_options(
        guest_cid: u64,
        uds_path: PathBuf,
        options: MuxerOptions,
    ) -> Result<Self, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&guest_cid) {
            return Err(VsockError::InvalidCid(guest_cid));
        }
        // `struct virtio_vsock_config`: `le64 guest_cid`, read-only.
        let common = VirtioCommon::new(
            "virtio-vsock".to_string(),
            device_type::VSOCK,
            &[VSOCK_QUEUE_SIZE, VSOCK_QUEUE_SIZE, VSOCK_QUEUE_SIZE],
            AVAIL_FEATURES,
            guest_cid.to_le_bytes().to_vec(),
        )
        .map_err(VsockError::CreateStateEvent)?;
        let timer = TimerFd::new().map_err(|e| VsockError::CreateTimer(e.into()))?;
        // A timer read after a re-arm must not block the event loop.
        unix::set_nonblocking(&timer).map_err(VsockError::CreateTimer)?;
        let muxer = Muxer::new(guest_cid, uds_path, options).map_err(VsockError::Listen)?;
        Ok(Vsock {
            cid: guest_cid,
            common,
            muxer,
            scratch: Scratch::new(),
            reset_event_pending: false,
            timer,
            timer_armed: None,
            event_errors: 0,
        })
    }

    /// The guest's CID.
    pub fn guest_cid(&self) -> u64 {
        self.cid
    }

    /// The Unix socket host processes connect to.
    pub fn uds_path(&self) -> &Path {
        self.muxer.uds_path()
    }

    /// What the device has done so far.
    pub fn counters(&self) -> VsockCounters {
        self.muxer.counters()
    }

    /// Tells the driver that every connection is gone
    /// (VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, spec §5.10.6.7), as after a
    /// snapshot restore: podvm's side of every connection is dropped now,
    /// and the event goes into the driver's next event buffer (the event
    /// loop is kicked through the event queue's notification). On an
    /// inactive device only the connections go: a driver that activates
    /// it starts with none anyway.
    pub fn transport_reset(&mut self) {
        self.muxer.drop_all();
        let Some(a) = self.common.active() else {
            return;
        };
        self.reset_event_pending = true;
        if let Err(e) = a.queue_evts[EVENT_QUEUE].write(1) {
            log::warn!("virtio-vsock: cannot kick the event queue: {e}");
        }
    }

    /// Hands the driver's transmitted packets to the muxer.
    pub(super) fn process_tx(&mut self) {
        let (muxer, scratch) = (&mut self.muxer, &mut self.scratch);
        self.common.run_pass(TX_QUEUE, |queue, mem, irq| {
            process_txq(queue, mem, muxer, scratch, irq)
        });
    }

    /// Delivers what the muxer has for the guest.
    pub(super) fn process_rx(&mut self) {
        if !self.muxer.has_rx() {
            return;
        }
        let (muxer, scratch) = (&mut self.muxer, &mut self.scratch);
        self.common.run_pass(RX_QUEUE, |queue, mem, irq| {
            process_rxq(queue, mem, muxer, scratch, irq)
        });
    }

    /// Posts a pending TRANSPORT_RESET event.
    pub(super) fn process_events(&mut self) {
        if !self.reset_event_pending {
            return;
        }
        let Some(Activation {
            mem, queues, irq, ..
        }) = self.common.active()
        else {
            return;
        };
        if let Err(e) = process_eventq(
            &mut queues[EVENT_QUEUE],
            mem,
            &mut self.reset_event_pending,
            &mut self.muxer,
            irq,
        ) {
            if log_this(&mut self.event_errors) {
                log::warn!("virtio-vsock event queue: {e}");
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn reset(&mut self) {
        // Every connection ends with the device (its host streams see EOF
        // now; the event loop closes them).
        self.muxer.drop_all();
        self.reset_event_pending = false;
        self.common.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::vsock::test_utils::{test_irq, test_mem, Driver};
    use crate::virtio::ActivateError;
    use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

    fn vsock(dir: &tempfile::TempDir, cid: u64) -> Result<Vsock, VsockError> {
        Vsock::new(cid, dir.path().join("v.sock"))
    }

    #[test]
    fn identity_queues_features_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let v = vsock(&dir, 0x1_0203).unwrap();
        assert_eq!(v.device_type(), 19);
        assert_eq!(v.queue_max_sizes(), &[256, 256, 256]);
        assert_eq!(v.avail_features(), 1 << 32);
        assert_eq!(v.guest_cid(), 0x1_0203);
        assert_eq!(v.uds_path(), dir.path().join("v.sock"));
        let read = |offset, len| {
            let mut d = vec![0xffu8; len];
            v.read_config(offset, &mut d);
            d
        };
        assert_eq!(read(0, 8), [3, 2, 1, 0, 0, 0, 0, 0]);
        assert_eq!(read(0, 4), [3, 2, 1, 0]);
        assert_eq!(read(1, 2), [2, 1]);
        assert_eq!(read(6, 4), [0, 0, 0, 0]);
        assert_eq!(read(u64::MAX, 4), [0; 4]);
    }

    #[test]
    fn config_writes_and_unknown_features_change_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut v = vsock(&dir, 3).unwrap();
        v.write_config(0, &[9; 8]);
        let mut d = [0u8; 8];
        v.read_config(0, &mut d);
        assert_eq!(d, [3, 0, 0, 0, 0, 0, 0, 0]);
        v.set_acked_features(u64::MAX);
        assert_eq!(v.common.acked_features(), 1 << 32);
    }

    #[test]
    fn reserved_cids_and_bad_paths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 32] {
            assert!(matches!(vsock(&dir, cid), Err(VsockError::InvalidCid(c)) if c == cid));
        }
        assert!(vsock(&dir, u64::from(u32::MAX) - 1).is_ok());
        let e = Vsock::new(3, dir.path().join("missing/v.sock"))
            .err()
            .unwrap();
        assert!(matches!(e, VsockError::Listen(_)));
        assert!(e.to_string().contains("missing/v.sock"), "{e}");
    }

    #[test]
    fn activation_needs_all_three_queues() {
        let dir = tempfile::tempdir().unwrap();
        let mem = test_mem();
        let driver = Driver::new(&mem);
        let mut v = vsock(&dir, 3).unwrap();
        let evts: Vec<EventFd> = (0..3)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let mut queues = driver.queues();
        queues.truncate(2);
        let a = Activation {
            mem: mem.clone(),
            queues,
            queue_evts: evts.iter().map(|e| e.try_clone().unwrap()).collect(),
            irq: test_irq(),
        };
        assert!(matches!(
            v.activate(a),
            Err(ActivateError::Queues { need: 3, got: 2 })
        ));
        let a = Activation {
            mem: mem.clone(),
            queues: driver.queues(),
            queue_evts: evts,
            irq: test_irq(),
        };
        v.activate(a).unwrap();
        assert!(v.common.is_active());
        v.reset();
        assert!(!v.common.is_active());
    }
}
