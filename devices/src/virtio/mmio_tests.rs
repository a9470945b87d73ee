use super::*;
use crate::virtio::{ActivateError, VirtioCommon};
use vm_memory::GuestAddress;
use vmm_sys_util::eventfd::EFD_NONBLOCK;

/// A device that records what the transport did to it.
struct Dummy {
    common: VirtioCommon,
    acked: u64,
    active: Option<Activation>,
    fail_activate: bool,
    activations: usize,
    resets: usize,
}

impl Dummy {
    /// Device type 42, queues of 16 and 8, a config space of `config`.
    fn new(config: &[u8]) -> Self {
        let features = (1 << VIRTIO_F_VERSION_1) | 0b101;
        Dummy {
            common: VirtioCommon::new("dummy".into(), 42, &[16, 8], features, config.to_vec())
                .unwrap(),
            acked: 0,
            active: None,
            fail_activate: false,
            activations: 0,
            resets: 0,
        }
    }
}

impl VirtioDevice for Dummy {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }
    fn set_acked_features(&mut self, features: u64) {
        self.acked = features;
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let start = offset as usize;
        self.common.config_space_mut()[start..start + data.len()].copy_from_slice(data);
    }
    fn activate(&mut self, activation: Activation) -> Result<(), ActivateError> {
        if self.fail_activate {
            return Err(ActivateError::Device("nope".into()));
        }
        self.activations += 1;
        self.active = Some(activation);
        Ok(())
    }
    fn reset(&mut self) {
        assert!(
            self.active.take().is_some(),
            "only an active device is reset"
        );
        self.resets += 1;
    }
}

struct Fixture {
    t: MmioTransport,
    dev: Arc<Mutex<Dummy>>,
    irq: IrqLine,
}

fn fixture() -> Fixture {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let dev = Arc::new(Mutex::new(Dummy::new(b"podvmcfg")));
    let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
    let evts = (0..2)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let t = MmioTransport::new(dev.clone(), mem, irq.clone(), evts);
    Fixture { t, dev, irq }
}

fn r(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

/// Drives the driver side up to FEATURES_OK and sets up both queues.
fn negotiate(t: &mut MmioTransport) {
    w(t, STATUS, ACKNOWLEDGE);
    w(t, STATUS, ACKNOWLEDGE | DRIVER);
    w(t, DRIVER_FEATURES_SEL, 0);
    w(t, DRIVER_FEATURES, 0b100);
    w(t, DRIVER_FEATURES_SEL, 1);
    w(t, DRIVER_FEATURES, 1);
    w(t, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    for (q, base) in [(0u32, 0x1000u32), (1, 0x4000)] {
        w(t, QUEUE_SEL, q);
        w(t, QUEUE_NUM, 8);
        w(t, QUEUE_DESC_LOW, base);
        w(t, QUEUE_DRIVER_LOW, base + 0x1000);
        w(t, QUEUE_DEVICE_LOW, base + 0x2000);
        w(t, QUEUE_READY, 1);
    }
}

#[test]
fn identification_registers() {
    let mut f = fixture();
    assert_eq!(r(&mut f.t, MAGIC_VALUE), 0x7472_6976);
    assert_eq!(r(&mut f.t, VERSION), 2);
    assert_eq!(r(&mut f.t, DEVICE_ID), 42);
    assert_eq!(r(&mut f.t, VENDOR_ID), 0);
    w(&mut f.t, DEVICE_FEATURES_SEL, 0);
    assert_eq!(r(&mut f.t, DEVICE_FEATURES), 0b101);
    w(&mut f.t, DEVICE_FEATURES_SEL, 1);
    assert_eq!(r(&mut f.t, DEVICE_FEATURES), 1);
    w(&mut f.t, DEVICE_FEATURES_SEL, 2);
    assert_eq!(r(&mut f.t, DEVICE_FEATURES), 0);
    w(&mut f.t, QUEUE_SEL, 1);
    assert_eq!(r(&mut f.t, QUEUE_NUM_MAX), 8);
    w(&mut f.t, QUEUE_SEL, 7);
    assert_eq!(r(&mut f.t, QUEUE_NUM_MAX), 0);
}

#[test]
fn full_negotiation_activates_the_device() {
    let mut f = fixture();
    negotiate(&mut f.t);
    assert_eq!(f.dev.lock().unwrap().acked, (1 << 32) | 0b100);
    w(
        &mut f.t,
        STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(r(&mut f.t, STATUS), 0xf);
    let d = f.dev.lock().unwrap();
    let a = d.active.as_ref().expect("activated");
    assert_eq!(a.queues.len(), 2);
    assert_eq!(a.queue_evts.len(), 2);
    assert!(a.queues.iter().all(|q| q.ready() && q.size() == 8));
}

#[test]
fn features_without_version_1_are_refused() {
    let mut f = fixture();
    w(&mut f.t, STATUS, ACKNOWLEDGE);
    w(&mut f.t, STATUS, ACKNOWLEDGE | DRIVER);
    w(&mut f.t, DRIVER_FEATURES, 0b1);
    w(&mut f.t, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(r(&mut f.t, STATUS) & FEATURES_OK, 0);
    // Features the device never offered are refused too.
    w(&mut f.t, DRIVER_FEATURES_SEL, 1);
    w(&mut f.t, DRIVER_FEATURES, 0b11);
    w(&mut f.t, STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(r(&mut f.t, STATUS) & FEATURES_OK, 0);
}

#[test]
fn status_must_advance_in_order() {
    let mut f = fixture();
    w(&mut f.t, STATUS, DRIVER_OK);
    assert_eq!(r(&mut f.t, STATUS), 0);
    w(&mut f.t, STATUS, ACKNOWLEDGE);
    w(
        &mut f.t,
        STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    );
    assert_eq!(r(&mut f.t, STATUS), ACKNOWLEDGE);
    assert!(f.dev.lock().unwrap().active.is_none());
}

#[test]
fn queue_registers_only_during_setup() {
    let mut f = fixture();
    w(&mut f.t, QUEUE_NUM, 4);
    w(&mut f.t, QUEUE_READY, 1);
    assert_eq!(r(&mut f.t, QUEUE_READY), 0, "before FEATURES_OK");
    negotiate(&mut f.t);
    w(&mut f.t, STATUS, 0xf);
    w(&mut f.t, QUEUE_SEL, 0);
    w(&mut f.t, QUEUE_READY, 0);
    assert_eq!(r(&mut f.t, QUEUE_READY), 1, "after DRIVER_OK");
}

#[test]
fn invalid_queue_sets_needs_reset() {
    let mut f = fixture();
    negotiate(&mut f.t);
    w(&mut f.t, QUEUE_SEL, 1);
    w(&mut f.t, QUEUE_READY, 0);
    // Outside the 1 MiB of guest memory.
    w(&mut f.t, QUEUE_DESC_LOW, 0x4000_0000);
    w(&mut f.t, QUEUE_READY, 1);
    w(&mut f.t, STATUS, 0xf);
    assert_ne!(r(&mut f.t, STATUS) & DEVICE_NEEDS_RESET, 0);
    assert_eq!(r(&mut f.t, STATUS) & DRIVER_OK, 0);
    assert!(f.dev.lock().unwrap().active.is_none());
    assert_ne!(f.irq.status() & INT_CONFIG, 0);
}

#[test]
fn sizes_and_ring_addresses_the_queue_cannot_take_prevent_activation() {
    for (reg, value) in [
        (QUEUE_NUM, 100),
        (QUEUE_NUM, 0x1_0008),
        (QUEUE_NUM, 32),
        (QUEUE_DESC_LOW, 0x1008),
        (QUEUE_DEVICE_LOW, 0x3002),
    ] {
        let mut f = fixture();
        negotiate(&mut f.t);
        w(&mut f.t, QUEUE_SEL, 0);
        w(&mut f.t, QUEUE_READY, 0);
        w(&mut f.t, reg, value);
        w(&mut f.t, QUEUE_READY, 1);
        w(&mut f.t, STATUS, 0xf);
        assert_ne!(
            r(&mut f.t, STATUS) & DEVICE_NEEDS_RESET,
            0,
            "{reg:#x}={value:#x}"
        );
        assert!(f.dev.lock().unwrap().active.is_none());
        // A reset clears the mark.
        w(&mut f.t, STATUS, 0);
        negotiate(&mut f.t);
        w(&mut f.t, STATUS, 0xf);
        assert_eq!(r(&mut f.t, STATUS), 0xf);
    }
}

#[test]
fn high_halves_of_ring_addresses_combine() {
    let mut f = fixture();
    negotiate(&mut f.t);
    w(&mut f.t, QUEUE_SEL, 1);
    w(&mut f.t, QUEUE_READY, 0);
    w(&mut f.t, QUEUE_DESC_HIGH, 1);
    assert_eq!(f.t.queues[1].desc_table(), 0x1_0000_4000);
    w(&mut f.t, QUEUE_DESC_HIGH, 0);
    assert_eq!(f.t.queues[1].desc_table(), 0x4000);
}

#[test]
fn failed_activation_sets_needs_reset_and_a_reset_recovers() {
    let mut f = fixture();
    f.dev.lock().unwrap().fail_activate = true;
    negotiate(&mut f.t);
    w(&mut f.t, STATUS, 0xf);
    assert_ne!(r(&mut f.t, STATUS) & DEVICE_NEEDS_RESET, 0);
    f.dev.lock().unwrap().fail_activate = false;
    w(&mut f.t, STATUS, 0);
    negotiate(&mut f.t);
    w(&mut f.t, STATUS, 0xf);
    assert_eq!(r(&mut f.t, STATUS), 0xf);
    // The device's queue events are the transport's, duplicated.
    let d = f.dev.lock().unwrap();
    d.active.as_ref().unwrap().queue_evts[0].write(1).unwrap();
    assert_eq!(f.t.queue_evts[0].read().unwrap(), 1);
}

#[test]
fn reset_returns_the_device_to_its_initial_state_and_allows_reactivation() {
    let mut f = fixture();
    negotiate(&mut f.t);
    w(&mut f.t, STATUS, 0xf);
    f.irq.trigger(INT_VRING).unwrap();
    w(&mut f.t, STATUS, 0);
    assert_eq!(r(&mut f.t, STATUS), 0);
    assert_eq!(r(&mut f.t, INTERRUPT_STATUS), 0);
    assert!(f.dev.lock().unwrap().active.is_none());
    assert_eq!(f.dev.lock().unwrap().resets, 1);
    // A second reset finds nothing to stop in the device.
    w(&mut f.t, STATUS, 0);
    assert_eq!(f.dev.lock().unwrap().resets, 1);
    w(&mut f.t, QUEUE_SEL, 0);
    assert_eq!(r(&mut f.t, QUEUE_READY), 0);
    negotiate(&mut f.t);
    w(&mut f.t, STATUS, 0xf);
    assert_eq!(f.dev.lock().unwrap().activations, 2);
}

#[test]
fn interrupt_status_and_ack() {
    let mut f = fixture();
    f.irq.trigger(INT_VRING).unwrap();
    f.irq.trigger(INT_CONFIG).unwrap();
    assert_eq!(r(&mut f.t, INTERRUPT_STATUS), 3);
    w(&mut f.t, INTERRUPT_ACK, INT_VRING);
    assert_eq!(r(&mut f.t, INTERRUPT_STATUS), INT_CONFIG);
}

#[test]
fn config_space_and_generation() {
    let mut f = fixture();
    let mut b = [0u8; 4];
    f.t.read(CONFIG_SPACE + 4, &mut b);
    assert_eq!(&b, b"mcfg");
    f.t.write(CONFIG_SPACE, b"PO");
    let mut one = [0u8; 2];
    f.t.read(CONFIG_SPACE, &mut one);
    assert_eq!(&one, b"PO");
    let g = r(&mut f.t, CONFIG_GENERATION);
    f.t.config_changed();
    assert_eq!(r(&mut f.t, CONFIG_GENERATION), g + 1);
}

#[test]
fn odd_sized_register_accesses_are_ignored() {
    let mut f = fixture();
    let mut b = [0xffu8; 2];
    f.t.read(MAGIC_VALUE, &mut b);
    assert_eq!(b, [0, 0]);
    f.t.write(STATUS, &[1]);
    assert_eq!(r(&mut f.t, STATUS), 0);
    let mut b = [0u8; 4];
    f.t.read(0x002, &mut b);
    assert_eq!(b, [0; 4]);
}

#[test]
fn refused_accesses_and_needs_reset_are_counted() {
    let mut f = fixture();
    let mut b = [0u8; 2];
    f.t.read(MAGIC_VALUE, &mut b);
    f.t.write(STATUS + 2, &[1, 0, 0, 0]);
    w(&mut f.t, 0x0f0, 1);
    assert_eq!(r(&mut f.t, 0x0a8), 0);
    w(&mut f.t, QUEUE_NUM, 4);
    w(&mut f.t, QUEUE_NOTIFY_OFFSET, 9);
    // Any width goes in the configuration space.
    f.t.read(CONFIG_SPACE + 1, &mut b);
    f.t.write(CONFIG_SPACE, &[1]);
    // The registers the driver may use at this step are not counted.
    w(&mut f.t, STATUS, ACKNOWLEDGE);
    w(&mut f.t, QUEUE_NOTIFY_OFFSET, 1);
    let c = f.t.counters();
    assert_eq!(
        (c.ignored_accesses, c.needs_reset, c.queue_errors),
        (6, 0, 0)
    );
    w(&mut f.t, STATUS, 0);
    negotiate(&mut f.t);
    w(&mut f.t, QUEUE_SEL, 1);
    w(&mut f.t, QUEUE_READY, 0);
    w(&mut f.t, QUEUE_DESC_LOW, 0x4000_0000);
    w(&mut f.t, QUEUE_READY, 1);
    w(&mut f.t, STATUS, 0xf);
    assert_eq!(f.t.counters().needs_reset, 1);
    assert_eq!(
        f.t.counters().ignored_accesses,
        6,
        "an address outside memory is a valid value"
    );
    w(&mut f.t, QUEUE_NUM, 3);
    assert_eq!(
        f.t.counters().ignored_accesses,
        7,
        "the layout of a ready queue"
    );
}

#[test]
fn notify_without_ioeventfd_reaches_the_queue_event() {
    let mut f = fixture();
    w(&mut f.t, QUEUE_NOTIFY_OFFSET, 1);
    assert_eq!(f.t.queue_evts[1].read().unwrap(), 1);
    w(&mut f.t, QUEUE_NOTIFY_OFFSET, 9);
}

/// A device whose activation is its common part's, as every real one.
struct Plain {
    common: VirtioCommon,
}

impl VirtioDevice for Plain {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }
    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }
}

fn plain(device_type: u32, queues: &[u16]) -> (MmioTransport, Arc<Mutex<Plain>>, Vec<EventFd>) {
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let features = (1 << VIRTIO_F_VERSION_1) | 0b101;
    let dev = Arc::new(Mutex::new(Plain {
        common: VirtioCommon::new("plain".into(), device_type, queues, features, Vec::new())
            .unwrap(),
    }));
    let evts: Vec<EventFd> = queues
        .iter()
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let own = evts.iter().map(|e| e.try_clone().unwrap()).collect();
    let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
    (MmioTransport::new(dev.clone(), mem, irq, own), dev, evts)
}

#[test]
fn a_saved_transport_restores_into_a_new_one_with_its_device_active_where_it_left_off() {
    let (mut t, dev, _) = plain(42, &[16, 8]);
    negotiate(&mut t);
    w(&mut t, STATUS, 0xf);
    // The device got as far as avail entry 5 / used entry 3 of queue 1.
    {
        let mut d = dev.lock().unwrap();
        let q = &mut d.common.active().unwrap().queues[1];
        q.set_next_avail(5);
        q.set_next_used(3);
    }
    t.irq.trigger(INT_VRING).unwrap();
    w(&mut t, QUEUE_SEL, 1);
    let saved = t.save_state();
    assert_eq!(saved.status, 0xf);
    assert_eq!(saved.acked_features, (1 << 32) | 0b100);
    assert_eq!(
        (saved.queues[1].next_avail, saved.queues[1].next_used),
        (5, 3)
    );
    assert_eq!(saved.queues[1].size, 8);
    assert_eq!(saved.interrupt_status, INT_VRING);

    let (mut t2, dev2, evts2) = plain(42, &[16, 8]);
    t2.restore_state(&saved).unwrap();
    assert_eq!(
        t2.save_state(),
        saved,
        "the restored transport saves the same"
    );
    assert_eq!(r(&mut t2, STATUS), 0xf);
    assert_eq!(r(&mut t2, INTERRUPT_STATUS), INT_VRING);
    assert_eq!(r(&mut t2, QUEUE_NUM_MAX), 8, "QueueSel came back");
    let mut d = dev2.lock().unwrap();
    assert_eq!(d.common.acked_features(), (1 << 32) | 0b100);
    let a = d.common.active().expect("active again");
    assert_eq!((a.queues[1].next_avail(), a.queues[1].next_used()), (5, 3));
    assert_eq!(a.queues[0].desc_table(), 0x1000);
    drop(d);
    // Every queue is kicked once, for requests posted just before.
    for e in &evts2 {
        assert_eq!(e.read().unwrap(), 1);
    }
    // The driver can still reset it.
    w(&mut t2, STATUS, 0);
    assert!(!dev2.lock().unwrap().common.is_active());
}

#[test]
fn features_reach_the_device_only_once_the_driver_had_accepted_them() {
    let (mut t, _, _) = plain(42, &[16, 8]);
    w(&mut t, STATUS, ACKNOWLEDGE);
    w(&mut t, STATUS, ACKNOWLEDGE | DRIVER);
    w(&mut t, DRIVER_FEATURES, 0b100);
    let saved = t.save_state();
    assert_eq!(saved.acked_features, 0b100, "written, not yet accepted");
    let (mut t2, dev2, _) = plain(42, &[16, 8]);
    t2.restore_state(&saved).unwrap();
    assert_eq!(dev2.lock().unwrap().common.acked_features(), 0);
    assert_eq!(r(&mut t2, STATUS), ACKNOWLEDGE | DRIVER);
}

#[test]
fn a_transport_that_never_got_driver_ok_restores_inactive() {
    let (mut t, _, _) = plain(42, &[16, 8]);
    negotiate(&mut t);
    let saved = t.save_state();
    let (mut t2, dev2, evts2) = plain(42, &[16, 8]);
    t2.restore_state(&saved).unwrap();
    assert_eq!(r(&mut t2, STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert!(!dev2.lock().unwrap().common.is_active());
    assert!(evts2[0].read().is_err(), "no kick");
    // The driver goes on where it was.
    w(&mut t2, STATUS, 0xf);
    assert!(dev2.lock().unwrap().common.is_active());
}

#[test]
fn a_state_that_does_not_fit_is_refused_and_changes_nothing() {
    let (mut t, _, _) = plain(42, &[16, 8]);
    negotiate(&mut t);
    w(&mut t, STATUS, 0xf);
    let saved = t.save_state();
    let (mut other, _, _) = plain(7, &[16, 8]);
    assert_eq!(
        other.restore_state(&saved),
        Err(RestoreError::DeviceType {
            saved: 42,
            found: 7
        })
    );
    let (mut fewer, _, _) = plain(42, &[16]);
    assert!(matches!(
        fewer.restore_state(&saved),
        Err(RestoreError::Queues { .. })
    ));
    let mut marks = saved.clone();
    marks.invalid_queues.pop();
    let (mut t4, _, _) = plain(42, &[16, 8]);
    assert!(matches!(
        t4.restore_state(&marks),
        Err(RestoreError::Queues { .. })
    ));
    let mut bad = saved.clone();
    bad.queues[0].size = 3;
    let (mut t3, dev3, _) = plain(42, &[16, 8]);
    assert!(matches!(
        t3.restore_state(&bad),
        Err(RestoreError::Queue { index: 0, .. })
    ));
    let mut outside = saved.clone();
    outside.queues[1].desc_table = 0x4000_0000;
    assert!(matches!(
        t3.restore_state(&outside),
        Err(RestoreError::Queue { index: 1, .. })
    ));
    assert_eq!(r(&mut t3, STATUS), 0, "unchanged");
    assert!(!dev3.lock().unwrap().common.is_active());
}
