//! The virtio-mmio transport, version 2 ("modern") register layout
//! (virtio spec v1.2 §4.2.2), one 4 KiB window per device.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueState, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::EventFd;

use super::persist::{QueueSnapshot, RestoreError, TransportState};
use super::status::{ACKNOWLEDGE, DEVICE_NEEDS_RESET, DRIVER, DRIVER_OK, FAILED, FEATURES_OK};
use super::{Activation, IrqLine, VirtioDevice, INT_CONFIG, INT_VRING, VIRTIO_F_VERSION_1};
use crate::bus::BusDevice;

/// Size of each device's register window.
pub const MMIO_REGION_SIZE: u64 = 0x1000;
/// Offset of QueueNotify, where the VMM puts the queues' ioeventfds.
pub const QUEUE_NOTIFY_OFFSET: u64 = 0x050;

// Register offsets (spec §4.2.2, table "MMIO Device Register Layout").
const MAGIC_VALUE: u64 = 0x000;
const VERSION: u64 = 0x004;
const DEVICE_ID: u64 = 0x008;
const VENDOR_ID: u64 = 0x00c;
const DEVICE_FEATURES: u64 = 0x010;
const DEVICE_FEATURES_SEL: u64 = 0x014;
const DRIVER_FEATURES: u64 = 0x020;
const DRIVER_FEATURES_SEL: u64 = 0x024;
const QUEUE_SEL: u64 = 0x030;
const QUEUE_NUM_MAX: u64 = 0x034;
const QUEUE_NUM: u64 = 0x038;
const QUEUE_READY: u64 = 0x044;
const INTERRUPT_STATUS: u64 = 0x060;
const INTERRUPT_ACK: u64 = 0x064;
const STATUS: u64 = 0x070;
const QUEUE_DESC_LOW: u64 = 0x080;
const QUEUE_DESC_HIGH: u64 = 0x084;
const QUEUE_DRIVER_LOW: u64 = 0x090;
const QUEUE_DRIVER_HIGH: u64 = 0x094;
const QUEUE_DEVICE_LOW: u64 = 0x0a0;
const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const CONFIG_GENERATION: u64 = 0x0fc;
/// Device-specific configuration space starts here.
const CONFIG_SPACE: u64 = 0x100;

/// "virt" in little-endian.
const MMIO_MAGIC: u32 = 0x7472_6976;
/// The modern register layout.
const MMIO_VERSION: u32 = 2;
/// Vendor id reported to the guest (none assigned; as Firecracker).
const MMIO_VENDOR_ID: u32 = 0;

/// What a driver did that the transport refused or that broke the device,
/// for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransportCounters {
    /// Register accesses ignored: not 4 bytes wide or not aligned, of an
    /// unknown register, or a write the register takes only at another
    /// step (queue layout outside queue setup or of a ready queue,
    /// features outside negotiation, a status change out of order), a
    /// value a queue cannot take, and notifications of a queue the device
    /// does not have. Configuration-space accesses are never counted.
    pub ignored_accesses: u64,
    /// Times the device set DEVICE_NEEDS_RESET (a ready queue outside
    /// guest memory or with a value it cannot take, a failed activation).
    pub needs_reset: u64,
    /// Passes over a queue that found its available ring broken (an index
    /// too far ahead, or moving back) or its used ring not writable.
    pub queue_errors: u64,
}

/// The transport state of one virtio-mmio device.
pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemoryMmap,
    irq: IrqLine,
    queues: Vec<Queue>,
    /// The queues' notification events; the device gets duplicates.
    queue_evts: Vec<EventFd>,
    /// Whether the device holds an activation.
    active: bool,
    /// Queues the driver wrote a value to that they cannot take.
    invalid_queues: Vec<bool>,
    device_type: u32,
    avail_features: u64,
    device_features_sel: u32,
    driver_features_sel: u32,
    acked_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
    ignored_accesses: u64,
    needs_reset: u64,
}

/// `addr` with its high (or low) 32 bits replaced by `value`.
fn with_half(addr: u64, high: bool, value: u32) -> u64 {
    if high {
        (addr & 0xffff_ffff) | (u64::from(value) << 32)
    } else {
        (addr & !0xffff_ffff) | u64::from(value)
    }
}

fn lock(device: &Mutex<dyn VirtioDevice>) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
    device.lock().unwrap_or_else(|e| e.into_inner())
}

impl MmioTransport {
    /// A transport for `device`, notified through `queue_evts` (one per
    /// queue, in order) and interrupting through `irq`.
    pub fn new(
        device: Arc<Mutex<dyn VirtioDevice>>,
        mem: GuestMemoryMmap,
        irq: IrqLine,
        queue_evts: Vec<EventFd>,
    ) -> Self {
        let (device_type, avail_features, queues) = {
            let d = lock(&device);
            let queues: Vec<Queue> = d
                .queue_max_sizes()
                .iter()
                .map(|&max| Queue::new(max).expect("device queue sizes are powers of two"))
                .collect();
            (d.device_type(), d.avail_features(), queues)
        };
        MmioTransport {
            device,
            mem,
            irq,
            invalid_queues: vec![false; queues.len()],
            queues,
            queue_evts,
            active: false,
            device_type,
            avail_features,
            device_features_sel: 0,
            driver_features_sel: 0,
            acked_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
            ignored_accesses: 0,
            needs_reset: 0,
        }
    }

    /// The virtio device id of the device behind it.
    pub fn device_type(&self) -> u32 {
        self.device_type
    }

    /// What the driver did wrong so far (see [`TransportCounters`]).
    pub fn counters(&self) -> TransportCounters {
        TransportCounters {
            ignored_accesses: self.ignored_accesses,
            needs_reset: self.needs_reset,
            queue_errors: lock(&self.device).common().queue_errors(),
        }
    }

    /// Counts an access the transport ignored.
    fn ignored(&mut self) {
        self.ignored_accesses += 1;
    }

    /// The device status the driver set.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The features the driver accepted.
    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Tells the driver the device's configuration changed (for instance a
    /// disk's new capacity).
    pub fn config_changed(&mut self) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & DRIVER_OK != 0 {
            if let Err(e) = self.irq.trigger(INT_CONFIG) {
                log::warn!("virtio: cannot raise a config-change interrupt: {e}");
            }
        }
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK
    /// (spec §4.2.3.2), and a queue's layout only while it is not ready.
    fn queue_config_allowed(&self) -> bool {
        self.status & FEATURES_OK != 0 && self.status & DRIVER_OK == 0
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let queue = self.queues.get(self.queue_sel as usize);
        match offset {
            MAGIC_VALUE => MMIO_MAGIC,
            VERSION => MMIO_VERSION,
            DEVICE_ID => self.device_type,
            VENDOR_ID => MMIO_VENDOR_ID,
            DEVICE_FEATURES => match self.device_features_sel {
                0 => self.avail_features as u32,
                1 => (self.avail_features >> 32) as u32,
                _ => 0,
            },
            QUEUE_NUM_MAX => queue.map_or(0, |q| u32::from(q.max_size())),
            QUEUE_READY => queue.map_or(0, |q| u32::from(q.ready())),
            INTERRUPT_STATUS => self.irq.status(),
            STATUS => self.status,
            CONFIG_GENERATION => self.config_generation,
            _ => {
                log::debug!("virtio-mmio: read of unknown register {offset:#x}");
                self.ignored();
                0
            }
        }
    }

    fn write_register(&mut self, offset: u64, value: u32) {
        match offset {
            DEVICE_FEATURES_SEL => self.device_features_sel = value,
            DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            DRIVER_FEATURES => {
                // Only while negotiating (spec §3.1.1 step 5).
                if self.status & (DRIVER | FEATURES_OK) != DRIVER {
                    log::debug!("virtio-mmio: driver features written outside negotiation");
                    self.ignored();
                    return;
                }
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return self.ignored(),
                };
                let mask = 0xffff_ffffu64 << shift;
                self.acked_features =
                    (self.acked_features & !mask) | ((u64::from(value) << shift) & mask);
            }
            QUEUE_SEL => self.queue_sel = value,
            QUEUE_NUM | QUEUE_READY | QUEUE_DESC_LOW | QUEUE_DESC_HIGH | QUEUE_DRIVER_LOW
            | QUEUE_DRIVER_HIGH | QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                self.write_queue_register(offset, value)
            }
            QUEUE_NOTIFY_OFFSET => self.notify_without_ioeventfd(value),
            INTERRUPT_ACK => self.irq.ack(value),
            STATUS => self.write_status(value),
            _ => {
                log::debug!("virtio-mmio: write of unknown register {offset:#x}");
                self.ignored();
            }
        }
    }

    fn write_queue_register(&mut self, offset: u64, value: u32) {
        if !self.queue_config_allowed() {
            log::debug!("virtio-mmio: queue register {offset:#x} written outside queue setup");
            return self.ignored();
        }
        let index = self.queue_sel as usize;
        let Some(q) = self.queues.get_mut(index) else {
            return self.ignored();
        };
        if offset != QUEUE_READY && q.ready() {
            log::debug!("virtio-mmio: queue layout changed while the queue is ready");
            return self.ignored();
        }
        // A value the queue cannot take (a size that is not a power of two
        // up to the maximum, a misaligned ring) marks the queue invalid
        // rather than leaving an old value in place: the device must never
        // use a ring other than the driver's.
        let ok = match offset {
            QUEUE_NUM => u16::try_from(value).is_ok_and(|n| q.try_set_size(n).is_ok()),
            QUEUE_READY => {
                q.set_ready(value == 1);
                true
            }
            QUEUE_DESC_LOW | QUEUE_DESC_HIGH => {
                let a = with_half(q.desc_table(), offset == QUEUE_DESC_HIGH, value);
                q.try_set_desc_table_address(GuestAddress(a)).is_ok()
            }
            QUEUE_DRIVER_LOW | QUEUE_DRIVER_HIGH => {
                let a = with_half(q.avail_ring(), offset == QUEUE_DRIVER_HIGH, value);
                q.try_set_avail_ring_address(GuestAddress(a)).is_ok()
            }
            QUEUE_DEVICE_LOW | QUEUE_DEVICE_HIGH => {
                let a = with_half(q.used_ring(), offset == QUEUE_DEVICE_HIGH, value);
                q.try_set_used_ring_address(GuestAddress(a)).is_ok()
            }
            _ => true,
        };
        if !ok {
            log::debug!(
                "virtio-mmio: queue {index}: invalid value {value:#x} for register {offset:#x}"
            );
            self.invalid_queues[index] = true;
            self.ignored();
        }
    }

    /// A QueueNotify write that no ioeventfd caught (there always is one
    /// when the VMM wired the device; this keeps the transport correct on
    /// its own).
    fn notify_without_ioeventfd(&mut self, queue: u32) {
        let Some(evt) = self.queue_evts.get(queue as usize) else {
            log::debug!("virtio-mmio: notification of queue {queue}, which the device lacks");
            return self.ignored();
        };
        if let Err(e) = evt.write(1) {
            log::warn!("virtio-mmio: cannot forward a queue notification: {e}");
        }
    }

    fn write_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & FAILED != 0 {
            self.status |= FAILED;
            return;
        }
        let new_bits = value & !self.status;
        if value & self.status != self.status {
            log::debug!("virtio-mmio: driver cleared status bits without a reset");
            return self.ignored();
        }
        match new_bits {
            ACKNOWLEDGE if self.status == 0 => self.status = value,
            DRIVER if self.status == ACKNOWLEDGE => self.status = value,
            FEATURES_OK if self.status == ACKNOWLEDGE | DRIVER => self.features_ok(value),
            DRIVER_OK if self.status == ACKNOWLEDGE | DRIVER | FEATURES_OK => self.driver_ok(value),
            0 => {}
            _ => {
                log::debug!(
                    "virtio-mmio: invalid status transition {:#x} -> {value:#x}",
                    self.status
                );
                self.ignored();
            }
        }
    }

    fn features_ok(&mut self, value: u32) {
        let unknown = self.acked_features & !self.avail_features;
        if unknown != 0 {
            log::debug!(
                "virtio-mmio: driver accepted features the device does not offer: {unknown:#x}"
            );
            return self.ignored();
        }
        // The modern transport needs VERSION_1; leaving FEATURES_OK clear
        // tells the driver so (spec §3.1.1 step 6).
        if self.acked_features & (1 << VIRTIO_F_VERSION_1) == 0 {
            log::debug!("virtio-mmio: driver did not accept VIRTIO_F_VERSION_1");
            return self.ignored();
        }
        lock(&self.device).set_acked_features(self.acked_features);
        self.status = value;
    }

    fn driver_ok(&mut self, value: u32) {
        let ready_invalid = self
            .queues
            .iter()
            .zip(&self.invalid_queues)
            .position(|(q, &bad)| q.ready() && (bad || !q.is_valid(&self.mem)));
        if let Some(index) = ready_invalid {
            log::debug!("virtio-mmio: queue {index} is not valid in guest memory");
            self.needs_reset();
            return;
        }
        let queue_evts = match self.queue_evts.iter().map(EventFd::try_clone).collect() {
            Ok(evts) => evts,
            Err(e) => {
                log::warn!("virtio-mmio: cannot duplicate the queue events: {e}");
                self.needs_reset();
                return;
            }
        };
        // The device gets its own copy of each queue; the transport keeps the
        // registers' view (sizes, addresses, ready) for the driver.
        let queues = self
            .queues
            .iter()
            .map(|q| Queue::try_from(q.state()).expect("a queue's own state is valid"))
            .collect();
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            queue_evts,
            irq: self.irq.clone(),
        };
        let result = lock(&self.device).activate(activation);
        match result {
            Ok(()) => {
                self.active = true;
                self.status = value;
            }
            Err(e) => {
                log::warn!(
                    "virtio-mmio: cannot activate device type {}: {e}",
                    self.device_type
                );
                self.needs_reset();
            }
        }
    }

    /// The transport's snapshot state: its registers, and each queue as
    /// the device last used it (while active: how far it got).
    pub fn save_state(&self) -> TransportState {
        let device_queues: Option<Vec<QueueSnapshot>> = if self.active {
            lock(&self.device)
                .common_mut()
                .active()
                .map(|a| a.queues.iter().map(|q| q.state().into()).collect())
        } else {
            None
        };
        TransportState {
            device_type: self.device_type,
            status: self.status,
            acked_features: self.acked_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation,
            interrupt_status: self.irq.status(),
            queues: device_queues
                .unwrap_or_else(|| self.queues.iter().map(|q| q.state().into()).collect()),
            invalid_queues: self.invalid_queues.clone(),
        }
    }

    /// Puts this (new, never used) transport and its device where `state`
    /// says: registers, accepted features (the device is told, as at
    /// FEATURES_OK), and, when the driver had set DRIVER_OK, the device
    /// activated again with its queues where it left them. The pending
    /// interrupt causes are raised again. Checks that `state` fits first;
    /// on an error nothing was changed.
    pub fn restore_state(&mut self, state: &TransportState) -> Result<(), RestoreError> {
        if state.device_type != self.device_type {
            return Err(RestoreError::DeviceType {
                saved: state.device_type,
                found: self.device_type,
            });
        }
        let found: Vec<u16> = self.queues.iter().map(|q| q.max_size()).collect();
        let saved: Vec<u16> = state.queues.iter().map(|q| q.max_size).collect();
        if found != saved || state.invalid_queues.len() != found.len() {
            return Err(RestoreError::Queues {
                device_type: self.device_type,
                saved,
                found,
            });
        }
        let queues = state
            .queues
            .iter()
            .enumerate()
            .map(|(index, q)| {
                Queue::try_from(QueueState::from(*q)).map_err(|e| RestoreError::Queue {
                    device_type: self.device_type,
                    index,
                    why: e.to_string(),
                })
            })
            .collect::<Result<Vec<Queue>, _>>()?;
        let active = state.status & DRIVER_OK != 0;
        if active {
            if let Some(index) = queues
                .iter()
                .position(|q| q.ready() && !q.is_valid(&self.mem))
            {
                return Err(RestoreError::Queue {
                    device_type: self.device_type,
                    index,
                    why: "its rings are not in guest memory".into(),
                });
            }
        }
        let activation = if active {
            let queue_evts = self
                .queue_evts
                .iter()
                .map(EventFd::try_clone)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| RestoreError::Activate {
                    device_type: self.device_type,
                    why: format!("cannot duplicate the queue events: {e}"),
                })?;
            let own = queues
                .iter()
                .map(|q| Queue::try_from(q.state()).expect("a queue's own state is valid"))
                .collect();
            Some(Activation {
                mem: self.mem.clone(),
                queues: own,
                queue_evts,
                irq: self.irq.clone(),
            })
        } else {
            None
        };
        {
            let mut device = lock(&self.device);
            if state.status & FEATURES_OK != 0 {
                device.set_acked_features(state.acked_features);
            }
            if let Some(activation) = activation {
                device
                    .activate(activation)
                    .map_err(|e| RestoreError::Activate {
                        device_type: self.device_type,
                        why: e.to_string(),
                    })?;
            }
        }
        self.active = active;
        self.queues = queues;
        self.invalid_queues = state.invalid_queues.clone();
        self.status = state.status;
        self.acked_features = state.acked_features;
        self.device_features_sel = state.device_features_sel;
        self.driver_features_sel = state.driver_features_sel;
        self.queue_sel = state.queue_sel;
        self.config_generation = state.config_generation;
        if state.interrupt_status != 0 {
            for cause in [INT_VRING, INT_CONFIG] {
                if state.interrupt_status & cause != 0 {
                    if let Err(e) = self.irq.trigger(cause) {
                        log::warn!("virtio-mmio: cannot raise an interrupt: {e}");
                    }
                }
            }
        }
        if active {
            // Requests the driver posted just before the snapshot, whose
            // notification the old process had not handled yet.
            for evt in &self.queue_evts {
                if let Err(e) = evt.write(1) {
                    log::warn!("virtio-mmio: cannot kick a restored queue: {e}");
                }
            }
        }
        Ok(())
    }

    fn needs_reset(&mut self) {
        self.needs_reset += 1;
        self.status |= DEVICE_NEEDS_RESET;
        self.config_changed();
        // Raise the line even before DRIVER_OK so the driver looks.
        if let Err(e) = self.irq.trigger(INT_CONFIG) {
            log::warn!("virtio-mmio: cannot raise an interrupt: {e}");
        }
    }

    fn reset(&mut self) {
        if self.active {
            lock(&self.device).reset();
            self.active = false;
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.invalid_queues.fill(false);
        self.status = 0;
        self.acked_features = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.queue_sel = 0;
        self.irq.clear();
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            lock(&self.device).read_config(offset - CONFIG_SPACE, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            log::debug!(
                "virtio-mmio: {}-byte read of register {offset:#x}",
                data.len()
            );
            self.ignored();
            data.fill(0);
            return;
        }
        data.copy_from_slice(&self.read_register(offset).to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            lock(&self.device).write_config(offset - CONFIG_SPACE, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            log::debug!(
                "virtio-mmio: {}-byte write of register {offset:#x}",
                data.len()
            );
            return self.ignored();
        };
        if !offset.is_multiple_of(4) {
            return self.ignored();
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }
}

#[cfg(test)]
#[path = "mmio_tests.rs"]
mod tests;
