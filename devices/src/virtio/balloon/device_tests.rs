use super::*;
use crate::virtio::{Activation, IrqLine, INT_VRING};
use virtio_queue::desc::{split::Descriptor as RawDescriptor, RawDescriptor as Raw};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::Queue;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

const WRITE: u16 = 2;
const NEXT: u16 = 1;
/// 8 MiB of guest memory; queue i at i * 4 KiB; buffers from 1 MiB.
const MEM: usize = 8 << 20;

fn all() -> BalloonOptions {
    BalloonOptions {
        amount_mib: 0,
        deflate_on_oom: true,
        stats_polling_interval_s: 1,
        free_page_hinting: true,
        free_page_reporting: true,
    }
}

struct Rig {
    mem: &'static GuestMemoryMmap,
    /// Each queue's rings (made once: making one zeroes them).
    vqs: Vec<MockSplitQueue<'static, GuestMemoryMmap>>,
    dev: Balloon,
    irq: IrqLine,
}

impl Rig {
    fn new(options: BalloonOptions) -> Self {
        let mem: &'static GuestMemoryMmap = Box::leak(Box::new(
            GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM)]).unwrap(),
        ));
        let mut dev = Balloon::new(options, 8).unwrap();
        let irq = IrqLine::new(EventFd::new(EFD_NONBLOCK).unwrap());
        let n = dev.queue_max_sizes().len();
        let vqs: Vec<_> = (0..n)
            .map(|i| MockSplitQueue::create(mem, GuestAddress(i as u64 * 0x1000), 16))
            .collect();
        let queues: Vec<Queue> = vqs.iter().map(|vq| vq.create_queue().unwrap()).collect();
        dev.activate(Activation {
            mem: mem.clone(),
            queues,
            queue_evts: (0..n)
                .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
                .collect(),
            irq: irq.clone(),
        })
        .unwrap();
        dev.learn_memory();
        Rig { mem, vqs, dev, irq }
    }

    fn vq(&self, index: usize) -> &MockSplitQueue<'static, GuestMemoryMmap> {
        &self.vqs[index]
    }

    /// Posts `descs` on queue `index` at descriptor `at` and runs the
    /// device over it.
    fn post(&mut self, index: usize, descs: &[Raw], at: u16) {
        self.vq(index).add_desc_chains(descs, at).unwrap();
        self.dev.process(index);
    }

    fn used_idx(&self, index: usize) -> u16 {
        self.vq(index).used().idx().load()
    }

    /// Writes the le32 `pfns` at `addr`; the readable descriptor of them.
    fn pfns(&self, addr: u64, pfns: &[u32]) -> Raw {
        let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.mem.write_slice(&bytes, GuestAddress(addr)).unwrap();
        Raw::from(RawDescriptor::new(addr, bytes.len() as u32, 0, 0))
    }

    fn fill(&self, addr: u64, len: usize) {
        self.mem
            .write_slice(&vec![0x5a; len], GuestAddress(addr))
            .unwrap();
    }

    fn byte(&self, addr: u64) -> u8 {
        self.mem.read_obj(GuestAddress(addr)).unwrap()
    }
}

fn config_u32(dev: &Balloon, at: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read_config(at, &mut b);
    u32::from_le_bytes(b)
}

#[test]
fn features_queues_and_config_follow_the_options() {
    let dev = Balloon::new(BalloonOptions::default(), 128).unwrap();
    assert_eq!(dev.device_type(), 5);
    assert_eq!(dev.avail_features(), 1 << 32);
    assert_eq!(dev.queue_max_sizes(), &[256, 256]);
    let dev = Balloon::new(
        BalloonOptions {
            amount_mib: 3,
            ..all()
        },
        128,
    )
    .unwrap();
    assert_eq!(
        dev.avail_features(),
        1 << 32 | 1 << 1 | 1 << 2 | 1 << 3 | 1 << 5
    );
    assert_eq!(dev.queue_max_sizes().len(), 5);
    assert_eq!(
        dev.roles,
        QueueRoles {
            stats: Some(2),
            hinting: Some(3),
            reporting: Some(4)
        }
    );
    assert_eq!(config_u32(&dev, 0), 3 * 256, "num_pages");
    assert_eq!(dev.options().amount_mib, 3);
    // Reporting alone takes the third queue.
    let dev = Balloon::new(
        BalloonOptions {
            free_page_reporting: true,
            ..Default::default()
        },
        128,
    )
    .unwrap();
    assert_eq!(dev.roles.reporting, Some(2));
    assert!(matches!(
        Balloon::new(
            BalloonOptions {
                amount_mib: 129,
                ..Default::default()
            },
            128
        ),
        Err(BalloonError::TooLarge {
            requested: 129,
            memory: 128
        })
    ));
}

#[test]
fn the_driver_writes_only_actual() {
    let mut dev = Balloon::new(
        BalloonOptions {
            amount_mib: 1,
            ..Default::default()
        },
        128,
    )
    .unwrap();
    dev.write_config(0, &[0xff; 12]);
    assert_eq!(config_u32(&dev, 0), 256, "num_pages is the device's");
    assert_eq!(config_u32(&dev, 4), u32::MAX);
    assert_eq!(config_u32(&dev, 8), 0, "the hint command is the device's");
    dev.write_config(5, &[0]);
    assert_eq!(dev.actual_pages(), 0xffff_00ff);
    dev.write_config(u64::MAX, &[1, 2]);
    dev.reset();
    assert_eq!(dev.actual_pages(), 0, "a reset empties the balloon");
    assert_eq!(dev.target_pages(), 256);
}

#[test]
fn inflated_pages_are_freed_once_and_counted_and_outside_ones_are_not() {
    let mut rig = Rig::new(all());
    rig.fill(0x40_0000, 0x10_0000);
    // Pages 0x400..0x403, one twice, and two past the end of memory.
    let d = rig.pfns(0x10_0000, &[0x401, 0x400, 0x402, 0x401, 0x1_0000, 0x1_0001]);
    rig.post(INFLATE_QUEUE, &[d], 0);
    assert_eq!(rig.used_idx(INFLATE_QUEUE), 1);
    assert_eq!(rig.irq.status(), INT_VRING);
    let c = rig.dev.counters();
    assert_eq!(c.inflated_pages, 3);
    assert_eq!(c.inflated_bytes_freed, 3 * 4096);
    assert_eq!(c.pages_outside, 2);
    assert_eq!(c.malformed, 0);
    assert_eq!(rig.byte(0x40_0000), 0);
    assert_eq!(rig.byte(0x40_2fff), 0);
    assert_eq!(rig.byte(0x40_3000), 0x5a, "the next page is kept");
    // Deflating counts and frees nothing.
    rig.fill(0x40_0000, 0x1000);
    let d = rig.pfns(0x10_1000, &[0x400, 0x2_0000]);
    rig.post(DEFLATE_QUEUE, &[d], 0);
    assert_eq!(rig.used_idx(DEFLATE_QUEUE), 1);
    let c = rig.dev.counters();
    assert_eq!((c.deflated_pages, c.pages_outside), (1, 3));
    assert_eq!(rig.byte(0x40_0000), 0x5a);
}

#[test]
fn malformed_page_lists_are_returned_and_free_nothing() {
    let mut rig = Rig::new(all());
    rig.fill(0x40_0000, 0x1000);
    rig.pfns(0x10_0000, &[0x400]);
    let writable = Raw::from(RawDescriptor::new(0x10_0000, 4, WRITE, 0));
    let partial = Raw::from(RawDescriptor::new(0x10_0000, 6, 0, 0));
    let outside = Raw::from(RawDescriptor::new(MEM as u64, 4, 0, 0));
    let too_many = Raw::from(RawDescriptor::new(0x20_0000, 4 * 4097, 0, 0));
    rig.post(INFLATE_QUEUE, &[writable, partial, outside, too_many], 0);
    assert_eq!(rig.used_idx(INFLATE_QUEUE), 4);
    let c = rig.dev.counters();
    assert_eq!((c.malformed, c.inflated_pages), (4, 0));
    assert_eq!(rig.byte(0x40_0000), 0x5a);
}

#[test]
fn statistics_are_recorded_and_held_until_the_timer() {
    let mut rig = Rig::new(all());
    let stats_q = rig.dev.roles.stats.unwrap();
    let mut entries = Vec::new();
    for (tag, value) in [(4u16, 1234u64), (3, 7)] {
        entries.extend(tag.to_le_bytes());
        entries.extend(value.to_le_bytes());
    }
    rig.mem
        .write_slice(&entries, GuestAddress(0x10_0000))
        .unwrap();
    let d = Raw::from(RawDescriptor::new(0x10_0000, 20, 0, 0));
    rig.post(stats_q, &[d], 0);
    assert_eq!(rig.used_idx(stats_q), 0, "held");
    let (target, actual, s) = rig.dev.stats().unwrap();
    assert_eq!((target, actual), (0, 0));
    assert_eq!((s.free_memory, s.minor_faults), (Some(1234), Some(7)));
    assert_eq!(rig.dev.counters().stats_updates, 1);
    // The poll gives it back.
    rig.dev.return_stats_buffer();
    assert_eq!(rig.used_idx(stats_q), 1);
    assert_eq!(rig.irq.status(), INT_VRING);
    rig.dev.return_stats_buffer();
    assert_eq!(rig.used_idx(stats_q), 1, "nothing held, nothing returned");
    // A second buffer while one is held gives the first back.
    rig.post(stats_q, &[d], 1);
    rig.post(stats_q, &[d], 2);
    assert_eq!(rig.used_idx(stats_q), 2);
    let first = rig.vq(stats_q).used().ring().ref_at(1).unwrap().load();
    assert_eq!(first.id(), 1);
    assert_eq!(rig.dev.save_state().held_stats, Some(2));
}

#[test]
fn reported_ranges_inside_memory_are_freed_and_others_are_not() {
    let mut rig = Rig::new(all());
    let q = rig.dev.roles.reporting.unwrap();
    rig.fill(0x40_0000, 0x40_0000);
    let inside = Raw::from(RawDescriptor::new(0x40_0000, 0x20_0000, WRITE | NEXT, 1));
    let across_end = Raw::from(RawDescriptor::new(MEM as u64 - 0x1000, 0x2000, WRITE, 0));
    rig.post(q, &[inside, across_end], 0);
    assert_eq!(rig.used_idx(q), 1);
    let c = rig.dev.counters();
    assert_eq!(c.reported_ranges, 2);
    assert_eq!(c.reported_bytes_freed, 0x20_0000);
    assert_eq!(c.malformed, 1);
    assert_eq!(rig.byte(0x5f_ffff), 0);
    assert_eq!(rig.byte(0x60_0000), 0x5a);
    assert_eq!(
        rig.byte(MEM as u64 - 1),
        0x5a,
        "nothing of a range across the end"
    );
}

#[test]
fn hints_free_pages_only_during_the_hosts_run() {
    let mut rig = Rig::new(all());
    let q = rig.dev.roles.hinting.unwrap();
    rig.fill(0x40_0000, 0x30_0000);
    let cmd = |rig: &Rig, addr: u64, id: u32| {
        rig.mem.write_obj(id.to_le(), GuestAddress(addr)).unwrap();
        Raw::from(RawDescriptor::new(addr, 4, 0, 0))
    };
    // Before any run: a range is ignored.
    let range = Raw::from(RawDescriptor::new(0x40_0000, 0x1000, WRITE, 0));
    rig.post(q, &[range], 0);
    assert_eq!(rig.dev.counters().hinted_ranges, 0);
    assert_eq!(rig.byte(0x40_0000), 0x5a);

    rig.dev.start_hinting(true).unwrap();
    assert_eq!(config_u32(&rig.dev, 8), 2);
    let start = cmd(&rig, 0x10_0000, 2);
    let range = Raw::from(RawDescriptor::new(0x40_0000, 0x10_0000, WRITE, 0));
    rig.post(q, &[start, range], 1);
    assert_eq!(rig.dev.counters().hinted_bytes_freed, 0x10_0000);
    assert_eq!(rig.byte(0x40_0000), 0);
    let status = rig.dev.hinting_status().unwrap();
    assert_eq!((status.host_cmd, status.guest_cmd), (2, Some(2)));
    // The guest's STOP is answered with DONE, a config change.
    rig.irq.ack(u32::MAX);
    let stop = cmd(&rig, 0x10_0010, FREE_PAGE_HINT_STOP);
    rig.post(q, &[stop], 3);
    assert_eq!(config_u32(&rig.dev, 8), FREE_PAGE_HINT_DONE);
    assert_eq!(rig.irq.status() & INT_CONFIG, INT_CONFIG);
    let status = rig.dev.hinting_status().unwrap();
    assert_eq!((status.host_cmd, status.guest_cmd), (1, Some(0)));
    // A stale range of the old run frees nothing.
    let stale = cmd(&rig, 0x10_0020, 2);
    let range = Raw::from(RawDescriptor::new(0x50_0000, 0x1000, WRITE, 0));
    rig.post(q, &[stale, range], 4);
    assert_eq!(rig.byte(0x50_0000), 0x5a);
    // The next run has a new id; without the ack, STOP leaves it.
    rig.dev.start_hinting(false).unwrap();
    assert_eq!(config_u32(&rig.dev, 8), 3);
    let stop = cmd(&rig, 0x10_0030, FREE_PAGE_HINT_STOP);
    rig.post(q, &[stop], 6);
    assert_eq!(config_u32(&rig.dev, 8), 3);
    rig.dev.stop_hinting().unwrap();
    assert_eq!(config_u32(&rig.dev, 8), FREE_PAGE_HINT_DONE);
}

#[test]
fn requests_of_what_is_not_enabled_are_refused() {
    let mut dev = Balloon::new(BalloonOptions::default(), 64).unwrap();
    assert!(matches!(dev.stats(), Err(BalloonError::StatsDisabled)));
    assert!(matches!(
        dev.set_stats_interval(5),
        Err(BalloonError::StatsOnOff { from: 0, to: 5 })
    ));
    assert!(matches!(
        dev.start_hinting(true),
        Err(BalloonError::HintingDisabled)
    ));
    assert!(matches!(
        dev.stop_hinting(),
        Err(BalloonError::HintingDisabled)
    ));
    assert!(dev.hinting_status().is_err());
    assert!(matches!(
        dev.set_target(65),
        Err(BalloonError::TooLarge { .. })
    ));
    dev.set_target(64).unwrap();
    assert_eq!(dev.target_pages(), 64 * 256);
    let mut dev = Balloon::new(all(), 64).unwrap();
    assert!(matches!(
        dev.set_stats_interval(0),
        Err(BalloonError::StatsOnOff { from: 1, to: 0 })
    ));
    dev.set_stats_interval(9).unwrap();
    assert_eq!(dev.options().stats_polling_interval_s, 9);
}

#[test]
fn the_state_moves_to_a_new_device_and_a_bad_one_is_refused() {
    let mut rig = Rig::new(all());
    rig.dev.set_target(4).unwrap();
    rig.dev.write_config(4, &100u32.to_le_bytes());
    rig.dev.start_hinting(true).unwrap();
    let state = rig.dev.save_state();
    let json = serde_json::to_string(&state).unwrap();
    let mut other = Balloon::new(all(), 8).unwrap();
    other
        .restore_state(&serde_json::from_str(&json).unwrap())
        .unwrap();
    assert_eq!(other.save_state(), state);
    assert_eq!((other.target_pages(), other.actual_pages()), (1024, 100));
    let mut bad = state.clone();
    bad.config_space.pop();
    assert!(other.restore_state(&bad).is_err());
    let mut bad = state.clone();
    bad.stats_polling_interval_s = 0;
    assert!(other.restore_state(&bad).is_err());
    let mut bad = state;
    bad.held_stats = Some(256);
    assert!(other.restore_state(&bad).is_err());
}

#[test]
fn on_huge_pages_a_huge_page_goes_once_all_its_pages_are_in_the_balloon() {
    let mut rig = Rig::new(all());
    rig.dev.pages.page_sizes = vec![2 << 20];
    rig.fill(0x40_0000, 0x20_0000);
    let first: Vec<u32> = (0x400..0x500).collect();
    let d = rig.pfns(0x10_0000, &first);
    rig.post(INFLATE_QUEUE, &[d], 0);
    assert_eq!(
        rig.dev.counters().inflated_bytes_freed,
        0,
        "half a huge page"
    );
    assert_eq!(rig.byte(0x40_0000), 0x5a);
    // One page out and in again, then the other half.
    let d = rig.pfns(0x10_1000, &[0x400]);
    rig.post(DEFLATE_QUEUE, &[d], 0);
    let second: Vec<u32> = (0x500..0x600).collect();
    let d = rig.pfns(0x10_2000, &second);
    rig.post(INFLATE_QUEUE, &[d], 1);
    assert_eq!(
        rig.dev.counters().inflated_bytes_freed,
        0,
        "page 0x400 is out"
    );
    let d = rig.pfns(0x10_3000, &[0x400]);
    rig.post(INFLATE_QUEUE, &[d], 2);
    let c = rig.dev.counters();
    assert_eq!(c.inflated_bytes_freed, 2 << 20);
    assert_eq!(c.inflated_pages, 513);
    assert_eq!(rig.byte(0x40_0000), 0);
    assert_eq!(rig.byte(0x5f_ffff), 0);
}
