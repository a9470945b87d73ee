//! The network device model: features, configuration space, activation.

use std::io;

use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
    VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_STATUS, VIRTIO_NET_S_LINK_UP,
};

use super::{process_rxq, process_txq, NetBackend, Rx, RxCounters, Tap, Tx, TxCounters};
use super::{RX_QUEUE, TX_QUEUE};
use crate::rate_limiter::{BucketUpdate, RateLimiter, RefillTimer};
use crate::virtio::rng::host_entropy;
use crate::virtio::{device_type, VirtioCommon, VirtioDevice, VIRTIO_F_VERSION_1};

/// Size of each of the two queues.
pub const NET_QUEUE_SIZE: u16 = 256;

/// Features the device offers (spec §5.1.3). HOST_* features need no help
/// from the device: the tap takes checksum and GSO requests in the vnet
/// header as they are. GUEST_* ones become tap offloads once accepted.
const AVAIL_FEATURES: u64 = (1 << VIRTIO_F_VERSION_1)
    | (1 << VIRTIO_NET_F_CSUM)
    | (1 << VIRTIO_NET_F_GUEST_CSUM)
    | (1 << VIRTIO_NET_F_MAC)
    | (1 << VIRTIO_NET_F_GUEST_TSO4)
    | (1 << VIRTIO_NET_F_GUEST_TSO6)
    | (1 << VIRTIO_NET_F_HOST_TSO4)
    | (1 << VIRTIO_NET_F_HOST_TSO6)
    | (1 << VIRTIO_NET_F_MRG_RXBUF)
    | (1 << VIRTIO_NET_F_STATUS);

/// Configuration space layout (spec §5.1.4, `struct virtio_net_config`):
/// `mac` at 0, `status` at 6, `max_virtqueue_pairs` at 8.
const CONFIG_MAC: usize = 0;
const CONFIG_STATUS: usize = 6;
const CONFIG_MAX_VQ_PAIRS: usize = 8;
const CONFIG_LEN: usize = 10;

/// A network device could not be created. The caller names the
/// interface.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The event that tells the event loop about activation could not be
    /// created.
    #[error("cannot create the device's state event: {0}")]
    CreateStateEvent(#[source] io::Error),
    /// A rate limiter's timer could not be created.
    #[error("cannot create a rate limiter's timer: {0}")]
    CreateTimer(#[source] io::Error),
}

/// What a network device has done, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetCounters {
    /// The transmit side.
    pub tx: TxCounters,
    /// The receive side.
    pub rx: RxCounters,
}

/// The virtio-net device, over a [`Tap`] or, in tests, a fake backend.
pub struct Net<B = Tap> {
    id: String,
    mac: [u8; 6],
    pub(super) common: VirtioCommon,
    pub(super) backend: B,
    pub(super) tx: Tx,
    pub(super) rx: Rx,
    /// Brings the receive side back when its rate limiter refused a frame.
    pub(super) rx_timer: RefillTimer,
    /// The same for the transmit side.
    pub(super) tx_timer: RefillTimer,
}

impl<B: NetBackend> Net<B> {
    /// A network device `id` with MAC address `mac`, exchanging frames with
    /// `backend`.
    pub fn new(id: String, backend: B, mac: [u8; 6]) -> Result<Self, NetError> {
        let mut config = vec![0u8; CONFIG_LEN];
        config[CONFIG_MAC..CONFIG_MAC + 6].copy_from_slice(&mac);
        // The link is always up: the tap's carrier is the host's business.
        config[CONFIG_STATUS..CONFIG_STATUS + 2]
            .copy_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
        config[CONFIG_MAX_VQ_PAIRS..CONFIG_MAX_VQ_PAIRS + 2].copy_from_slice(&1u16.to_le_bytes());
        let common = VirtioCommon::new(
            format!("virtio-net {id:?}"),
            device_type::NET,
            &[NET_QUEUE_SIZE, NET_QUEUE_SIZE],
            AVAIL_FEATURES,
            config,
        )
        .map_err(NetError::CreateStateEvent)?;
        Ok(Net {
            id,
            mac,
            common,
            backend,
            tx: Tx::new(),
            rx: Rx::new(),
            rx_timer: RefillTimer::new().map_err(NetError::CreateTimer)?,
            tx_timer: RefillTimer::new().map_err(NetError::CreateTimer)?,
        })
    }

    /// The interface id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The guest's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    /// The backend (the tap).
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// What the device has done so far.
    pub fn counters(&self) -> NetCounters {
        NetCounters {
            tx: self.tx.counters,
            rx: self.rx.counters,
        }
    }

    /// Limits received frames with `limiter` (before the device runs).
    pub fn set_rx_rate_limiter(&mut self, limiter: RateLimiter) {
        self.rx.limiter = limiter;
    }

    /// Limits transmitted frames with `limiter` (before the device runs).
    pub fn set_tx_rate_limiter(&mut self, limiter: RateLimiter) {
        self.tx.limiter = limiter;
    }

    /// The receive side's rate limiter, with its counters.
    pub fn rx_rate_limiter(&self) -> &RateLimiter {
        &self.rx.limiter
    }

    /// The transmit side's rate limiter, with its counters.
    pub fn tx_rate_limiter(&self) -> &RateLimiter {
        &self.tx.limiter
    }

    /// Changes the receive side's buckets (`PATCH
    /// /network-interfaces/{id}`); a new bucket starts full. A frame
    /// waiting for tokens is looked at again at once.
    pub fn update_rx_rate_limiter(&mut self, bandwidth: BucketUpdate, ops: BucketUpdate) {
        self.rx.limiter.update(bandwidth, ops);
        self.rx_timer.disarm(self.common.name());
        self.kick(RX_QUEUE);
    }

    /// Changes the transmit side's buckets, as
    /// [`Net::update_rx_rate_limiter`] does the receive side's.
    pub fn update_tx_rate_limiter(&mut self, bandwidth: BucketUpdate, ops: BucketUpdate) {
        self.tx.limiter.update(bandwidth, ops);
        self.tx_timer.disarm(self.common.name());
        self.kick(TX_QUEUE);
    }

    /// Has the event loop serve queue `index` as if the driver notified
    /// it (the receiveq's pass reads the tap).
    fn kick(&mut self, index: usize) {
        let name = self.common.name().to_string();
        if let Some(active) = self.common.active() {
            if let Err(e) = active.queue_evts[index].write(1) {
                log::warn!("{name}: cannot reschedule queue {index}: {e}");
            }
        }
    }

    /// Sends every frame the driver queued for transmission. While the
    /// rate limiter waits for tokens it sends nothing: its timer brings
    /// the device back.
    pub(super) fn process_tx(&mut self) {
        if self.tx.limiter.is_blocked() {
            return;
        }
        let (backend, tx) = (&mut self.backend, &mut self.tx);
        self.common.run_pass(TX_QUEUE, |queue, mem, irq| {
            process_txq(queue, mem, backend, tx, irq)
        });
        self.tx_timer
            .arm_for(&mut self.tx.limiter, self.common.name());
    }

    /// Moves waiting frames from the backend into the driver's receive
    /// buffers, as far as they go. While the rate limiter waits for tokens
    /// it reads nothing: frames wait in the tap, and the limiter's timer
    /// brings the device back to read them (the tap's edge-triggered
    /// readiness would not come again for them).
    pub(super) fn process_rx(&mut self) {
        if self.rx.limiter.is_blocked() {
            return;
        }
        let (backend, rx) = (&mut self.backend, &mut self.rx);
        self.common.run_pass(RX_QUEUE, |queue, mem, irq| {
            process_rxq(queue, mem, backend, rx, irq)
        });
        self.rx_timer
            .arm_for(&mut self.rx.limiter, self.common.name());
    }
}

/// The tap offloads matching the features a driver accepted: the tap may
/// only hand the guest what the guest can take (spec §5.1.6.4). The kernel
/// wants TSO only together with checksum offload, as the spec does
/// (§5.1.3.1).
pub(super) fn tap_offloads(features: u64) -> u32 {
    let has = |bit: u32| features & (1 << bit) != 0;
    if !has(VIRTIO_NET_F_GUEST_CSUM) {
        return 0;
    }
    let mut flags = libc::TUN_F_CSUM;
    if has(VIRTIO_NET_F_GUEST_TSO4) {
        flags |= libc::TUN_F_TSO4;
    }
    if has(VIRTIO_NET_F_GUEST_TSO6) {
        flags |= libc::TUN_F_TSO6;
    }
    flags
}

/// The driver must not write the configuration space of a modern device
/// (spec §5.1.4.2); the MAC is set by the host.
impl<B: NetBackend> VirtioDevice for Net<B> {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    fn set_acked_features(&mut self, features: u64) {
        self.common.set_acked_features(features);
        let acked = self.common.acked_features();
        self.rx.set_features(acked);
        let flags = tap_offloads(acked);
        if let Err(e) = self.backend.set_offload(flags) {
            log::warn!(
                "{}: cannot set the tap's offloads to {flags:#x}: {e}",
                self.common.name()
            );
            // Never hand the guest more than it accepted.
            if let Err(e) = self.backend.set_offload(0) {
                log::warn!(
                    "{}: cannot clear the tap's offloads: {e}",
                    self.common.name()
                );
            }
        }
    }

    fn reset(&mut self) {
        // A frame held for the old rings is dropped with them. (The
        // transmit side holds nothing between passes.)
        self.rx.reset();
        // Frames read after the next negotiation must match it.
        if let Err(e) = self.backend.set_offload(0) {
            log::warn!(
                "{}: cannot clear the tap's offloads: {e}",
                self.common.name()
            );
        }
        // The common part keeps its own duplicates of the watched queue
        // events until the event loop has let go of them.
        self.common.reset();
    }
}

/// A random locally administered unicast MAC address, `02:xx:xx:xx:xx:xx`
/// (IEEE 802: bit 1 of the first byte set, bit 0 clear).
pub fn random_mac() -> [u8; 6] {
    let mut mac = [0u8; 6];
    if let Err(e) = host_entropy(&mut mac) {
        // getrandom fails only on kernels without it (before 3.17); std's
        // hasher keys come from the OS's randomness too.
        log::warn!("getrandom failed ({e}); generating a MAC address from std's hasher");
        use std::hash::{BuildHasher, Hasher};
        let bytes = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            .to_le_bytes();
        mac.copy_from_slice(&bytes[..6]);
    }
    mac[0] = 0x02;
    mac
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::virtio::net::test_utils::FakeBackend;

    const MAC: [u8; 6] = [0x06, 0x00, 0xac, 0x10, 0x00, 0x02];

    fn net() -> Net<FakeBackend> {
        Net::new("eth0".into(), FakeBackend::new(), MAC).unwrap()
    }

    fn config(net: &Net<FakeBackend>, offset: u64, len: usize) -> Vec<u8> {
        let mut data = vec![0xff; len];
        net.read_config(offset, &mut data);
        data
    }

    #[test]
    fn identity_queues_and_features() {
        let n = net();
        assert_eq!(n.id(), "eth0");
        assert_eq!(n.mac(), MAC);
        assert_eq!(n.device_type(), 1);
        assert_eq!(n.queue_max_sizes(), &[256, 256]);
        let bits: Vec<u32> = (0..64)
            .filter(|b| n.avail_features() & (1 << b) != 0)
            .collect();
        assert_eq!(bits, vec![0, 1, 5, 7, 8, 11, 12, 15, 16, 32]);
    }

    #[test]
    fn config_space_holds_mac_status_and_queue_pairs() {
        let n = net();
        assert_eq!(config(&n, 0, 6), MAC);
        assert_eq!(config(&n, 6, 2), [1, 0]);
        assert_eq!(config(&n, 8, 2), [1, 0]);
        // Odd widths and offsets.
        assert_eq!(config(&n, 5, 3), [0x02, 1, 0]);
        assert_eq!(config(&n, 1, 1), [0x00]);
        assert_eq!(config(&n, 0, 4), [0x06, 0x00, 0xac, 0x10]);
        // Past the end: zeros, also for a read straddling it.
        assert_eq!(config(&n, 9, 4), [0, 0, 0, 0]);
        assert_eq!(config(&n, 8, 4), [1, 0, 0, 0]);
        assert_eq!(config(&n, 0x100, 4), [0, 0, 0, 0]);
        assert_eq!(config(&n, u64::MAX, 8), [0; 8]);
    }

    #[test]
    fn config_writes_are_ignored() {
        let mut n = net();
        n.write_config(0, &[0xaa; 6]);
        n.write_config(6, &[0, 0]);
        assert_eq!(config(&n, 0, 10), [6, 0, 0xac, 0x10, 0, 2, 1, 0, 1, 0]);
        assert_eq!(n.mac(), MAC);
    }

    #[test]
    fn accepted_guest_offloads_become_tap_offloads() {
        let version_1 = 1u64 << VIRTIO_F_VERSION_1;
        let cases = [
            (version_1, 0),
            (
                version_1 | (1 << VIRTIO_NET_F_CSUM) | (1 << VIRTIO_NET_F_HOST_TSO4),
                0,
            ),
            (version_1 | (1 << VIRTIO_NET_F_GUEST_CSUM), libc::TUN_F_CSUM),
            (
                version_1
                    | (1 << VIRTIO_NET_F_GUEST_CSUM)
                    | (1 << VIRTIO_NET_F_GUEST_TSO4)
                    | (1 << VIRTIO_NET_F_GUEST_TSO6),
                libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
            ),
            // TSO without checksum offload breaks the spec; the tap gets
            // neither.
            (version_1 | (1 << VIRTIO_NET_F_GUEST_TSO4), 0),
            (
                AVAIL_FEATURES,
                libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6,
            ),
        ];
        for (features, want) in cases {
            let mut n = net();
            n.set_acked_features(features);
            assert_eq!(n.backend().offload, Some(want), "features {features:#x}");
        }
    }

    #[test]
    fn reset_clears_the_offloads() {
        let mut n = net();
        n.set_acked_features(AVAIL_FEATURES);
        n.reset();
        assert_eq!(n.backend().offload, Some(0));
    }

    #[test]
    fn random_macs_are_locally_administered_unicast() {
        let a = random_mac();
        let b = random_mac();
        assert_eq!(a[0], 0x02);
        assert_eq!(a[0] & 0x01, 0, "unicast");
        assert_eq!(a[0] & 0x02, 0x02, "locally administered");
        assert_ne!(a, b);
    }
}
