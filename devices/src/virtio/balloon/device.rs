//! The balloon device model: its configuration space, its queues' roles,
//! and what each queue's buffers do to guest memory.

use std::io;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use virtio_queue::QueueT;
use vmm_sys_util::timerfd::TimerFd;

use super::discard::{region_page_sizes, PAGE_SIZE};
use super::queues::{
    hint_batch, pfn_batch, report_batch, stats_batch, take_stop_ack, Pages, MAX_PFNS_PER_CHAIN,
};
use super::stats::{GuestStats, MAX_STAT_ENTRIES, STAT_ENTRY_LEN};
use crate::virtio::queue::{drain, interrupt_if_wanted};
use crate::virtio::{device_type, VirtioCommon, VirtioDevice, INT_CONFIG, VIRTIO_F_VERSION_1};

/// Size of each queue.
pub const BALLOON_QUEUE_SIZE: u16 = 256;
/// Feature bit: the stats queue exists (virtio v1.2 §5.5.3).
pub const VIRTIO_BALLOON_F_STATS_VQ: u32 = 1;
/// Feature bit: the guest deflates the balloon when it runs out of memory.
pub const VIRTIO_BALLOON_F_DEFLATE_ON_OOM: u32 = 2;
/// Feature bit: the free page hinting queue exists.
pub const VIRTIO_BALLOON_F_FREE_PAGE_HINT: u32 = 3;
/// Feature bit: the free page reporting queue exists.
pub const VIRTIO_BALLOON_F_PAGE_REPORTING: u32 = 5;
/// Hinting command id: the guest has finished hinting (from the guest), or
/// the host asks for no hints (the host's initial command).
pub const FREE_PAGE_HINT_STOP: u32 = 0;
/// Hinting command id: the host is done with the hints; the guest may use
/// the hinted pages again.
pub const FREE_PAGE_HINT_DONE: u32 = 1;

/// Bytes of the configuration space: le32 `num_pages` (the target, set by
/// the device), le32 `actual` (written by the driver), le32
/// `free_page_hint_cmd_id`.
const CONFIG_LEN: usize = 12;
const CONFIG_ACTUAL: std::ops::Range<usize> = 4..8;
/// Pages in a MiB.
pub const PAGES_PER_MIB: u32 = (1 << 20) / PAGE_SIZE as u32;

/// What the balloon offers, fixed when it is created (Firecracker's
/// `PUT /balloon` fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonOptions {
    /// The first target, MiB.
    pub amount_mib: u32,
    /// Offer VIRTIO_BALLOON_F_DEFLATE_ON_OOM.
    pub deflate_on_oom: bool,
    /// Seconds between statistics (0: no stats queue).
    pub stats_polling_interval_s: u16,
    /// Offer free page hinting.
    pub free_page_hinting: bool,
    /// Offer free page reporting.
    pub free_page_reporting: bool,
}

/// A request to the balloon cannot be carried out.
#[derive(Debug, thiserror::Error)]
pub enum BalloonError {
    /// A target larger than guest memory.
    #[error("amount_mib {requested} is more than the guest's {memory} MiB of memory")]
    TooLarge {
        /// What was asked for.
        requested: u32,
        /// Guest memory, MiB.
        memory: u32,
    },
    /// Statistics were not enabled when the device was made.
    #[error("not enabled (stats_polling_interval_s was 0 at InstanceStart)")]
    StatsDisabled,
    /// Statistics cannot be turned on or off once the device exists: the
    /// stats queue is there or not.
    #[error("statistics cannot be turned on or off after InstanceStart (stats_polling_interval_s {from} to {to})")]
    StatsOnOff {
        /// The interval now.
        from: u16,
        /// The one asked for.
        to: u16,
    },
    /// Hinting was not enabled when the device was made.
    #[error("free page hinting is not enabled (free_page_hinting was false at InstanceStart)")]
    HintingDisabled,
    /// The device's events cannot be made.
    #[error("cannot create the device's events: {0}")]
    Create(#[source] io::Error),
    /// The stats timer cannot be armed.
    #[error("cannot arm the statistics timer: {0}")]
    Timer(#[source] io::Error),
}

/// The state of free page hinting (virtio v1.2 §5.5.6.6).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HintingState {
    /// The command id the host set last ([`FREE_PAGE_HINT_STOP`] at first).
    pub host_cmd: u32,
    /// The last id a run was started with.
    pub last_cmd_id: u32,
    /// The last command id the guest sent, if any.
    pub guest_cmd: Option<u32>,
    /// Whether the device answers the guest's STOP with DONE by itself.
    pub acknowledge_on_stop: bool,
}

/// What the device has done, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BalloonCounters {
    /// Pages the guest put in the balloon (inside guest memory).
    pub inflated_pages: u64,
    /// Pages the guest took back out.
    pub deflated_pages: u64,
    /// Bytes of inflated pages given back to the host.
    pub inflated_bytes_freed: u64,
    /// Free page reports, one per range.
    pub reported_ranges: u64,
    /// Bytes of reported free pages given back to the host.
    pub reported_bytes_freed: u64,
    /// Hinted free ranges of the current run.
    pub hinted_ranges: u64,
    /// Bytes of hinted free pages given back to the host.
    pub hinted_bytes_freed: u64,
    /// Page frame numbers outside guest memory (nothing was done for them).
    pub pages_outside: u64,
    /// Buffers that were not what their queue takes (returned, unused).
    pub malformed: u64,
    /// Ranges the host refused to free.
    pub discard_failures: u64,
    /// Statistics buffers the guest sent.
    pub stats_updates: u64,
}

/// What a snapshot keeps of the balloon besides its transport.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BalloonState {
    /// The configuration space (target, actual, hint command id).
    pub config_space: Vec<u8>,
    /// The statistics interval now.
    pub stats_polling_interval_s: u16,
    /// The stats buffer the device holds until the next poll.
    pub held_stats: Option<u16>,
    /// The guest's last statistics.
    pub stats: GuestStats,
    /// Free page hinting.
    pub hinting: HintingState,
}

/// The queue index of each of the balloon's queues: inflate and deflate
/// always, the others when their feature is offered (numbered in order, as
/// drivers set up only the queues of features they see).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueRoles {
    /// The stats queue.
    pub stats: Option<usize>,
    /// The free page hinting queue.
    pub hinting: Option<usize>,
    /// The free page reporting queue.
    pub reporting: Option<usize>,
}

/// The inflate queue's index.
pub const INFLATE_QUEUE: usize = 0;
/// The deflate queue's index.
pub const DEFLATE_QUEUE: usize = 1;

impl QueueRoles {
    fn new(o: &BalloonOptions) -> Self {
        let mut next = 2;
        let mut role = |on: bool| {
            on.then(|| {
                next += 1;
                next - 1
            })
        };
        QueueRoles {
            stats: role(o.stats_polling_interval_s > 0),
            hinting: role(o.free_page_hinting),
            reporting: role(o.free_page_reporting),
        }
    }

    fn count(&self) -> usize {
        2 + [self.stats, self.hinting, self.reporting]
            .iter()
            .filter(|q| q.is_some())
            .count()
    }
}

/// The virtio-balloon device (virtio v1.2 §5.5).
pub struct Balloon {
    pub(super) common: VirtioCommon,
    pub(super) roles: QueueRoles,
    /// Guest memory, MiB: the largest target.
    mem_mib: u32,
    stats_interval: u16,
    /// The stats buffer held until the next poll.
    held_stats: Option<u16>,
    stats: GuestStats,
    hinting: HintingState,
    pub(super) pages: Pages,
    /// Fires every stats interval.
    pub(super) timer: TimerFd,
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Balloon {
    /// A balloon for a guest of `mem_mib` MiB, offering what `options` say.
    pub fn new(options: BalloonOptions, mem_mib: u32) -> Result<Self, BalloonError> {
        if options.amount_mib > mem_mib {
            return Err(BalloonError::TooLarge {
                requested: options.amount_mib,
                memory: mem_mib,
            });
        }
        let roles = QueueRoles::new(&options);
        let mut features = 1u64 << VIRTIO_F_VERSION_1;
        for (on, bit) in [
            (options.deflate_on_oom, VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
            (roles.stats.is_some(), VIRTIO_BALLOON_F_STATS_VQ),
            (options.free_page_hinting, VIRTIO_BALLOON_F_FREE_PAGE_HINT),
            (options.free_page_reporting, VIRTIO_BALLOON_F_PAGE_REPORTING),
        ] {
            if on {
                features |= 1 << bit;
            }
        }
        let mut config = vec![0u8; CONFIG_LEN];
        config[..4].copy_from_slice(&(options.amount_mib * PAGES_PER_MIB).to_le_bytes());
        let common = VirtioCommon::new(
            "virtio-balloon".to_string(),
            device_type::BALLOON,
            &vec![BALLOON_QUEUE_SIZE; roles.count()],
            features,
            config,
        )
        .map_err(BalloonError::Create)?;
        Ok(Balloon {
            common,
            roles,
            mem_mib,
            stats_interval: options.stats_polling_interval_s,
            held_stats: None,
            stats: GuestStats::default(),
            hinting: HintingState::default(),
            pages: Pages {
                page_sizes: Vec::new(),
                pfns: Vec::with_capacity(MAX_PFNS_PER_CHAIN),
                bytes: Vec::with_capacity(MAX_STAT_ENTRIES * STAT_ENTRY_LEN),
                counters: BalloonCounters::default(),
                used: false,
                partial: Default::default(),
            },
            timer: TimerFd::new().map_err(|e| BalloonError::Create(e.into()))?,
        })
    }

    fn config(&self) -> &[u8] {
        &self.common.state().config_space
    }

    /// The target, in pages.
    pub fn target_pages(&self) -> u32 {
        le32(self.config(), 0)
    }

    /// The pages the driver says the balloon holds.
    pub fn actual_pages(&self) -> u32 {
        le32(self.config(), 4)
    }

    /// What the device offers now: the target as `amount_mib`, the
    /// interval as it is.
    pub fn options(&self) -> BalloonOptions {
        let offered = |bit: u32| self.common.avail_features() & (1 << bit) != 0;
        BalloonOptions {
            amount_mib: self.target_pages() / PAGES_PER_MIB,
            deflate_on_oom: offered(VIRTIO_BALLOON_F_DEFLATE_ON_OOM),
            stats_polling_interval_s: self.stats_interval,
            free_page_hinting: self.roles.hinting.is_some(),
            free_page_reporting: self.roles.reporting.is_some(),
        }
    }

    /// The counters so far.
    pub fn counters(&self) -> BalloonCounters {
        self.pages.counters
    }

    /// Sets the target to `amount_mib`. The caller tells the driver (a
    /// configuration change through the transport).
    pub fn set_target(&mut self, amount_mib: u32) -> Result<(), BalloonError> {
        if amount_mib > self.mem_mib {
            return Err(BalloonError::TooLarge {
                requested: amount_mib,
                memory: self.mem_mib,
            });
        }
        let pages = amount_mib * PAGES_PER_MIB;
        self.common.config_space_mut()[..4].copy_from_slice(&pages.to_le_bytes());
        Ok(())
    }

    /// The guest's last statistics, with the target and actual pages.
    pub fn stats(&self) -> Result<(u32, u32, GuestStats), BalloonError> {
        if self.roles.stats.is_none() {
            return Err(BalloonError::StatsDisabled);
        }
        Ok((self.target_pages(), self.actual_pages(), self.stats))
    }

    /// Changes the statistics interval (not to or from 0) and asks the
    /// guest for statistics at once.
    pub fn set_stats_interval(&mut self, seconds: u16) -> Result<(), BalloonError> {
        if self.roles.stats.is_none() || seconds == 0 {
            return Err(BalloonError::StatsOnOff {
                from: self.stats_interval,
                to: seconds,
            });
        }
        self.stats_interval = seconds;
        if self.common.is_active() {
            self.arm_timer()?;
            self.return_stats_buffer();
        }
        Ok(())
    }

    /// Arms the stats timer for the current interval (none: disarmed).
    pub(super) fn arm_timer(&mut self) -> Result<(), BalloonError> {
        let every = Duration::from_secs(u64::from(self.stats_interval));
        let period = (!every.is_zero()).then_some(every);
        self.timer
            .reset(every, period)
            .map_err(|e| BalloonError::Timer(e.into()))
    }

    /// The stats timer fired: the held buffer goes back to the guest,
    /// which fills it again.
    pub(super) fn stats_timer_expired(&mut self) {
        if let Err(e) = self.timer.wait() {
            log::warn!("virtio-balloon: cannot read the statistics timer: {e}");
        }
        self.return_stats_buffer();
    }

    fn return_stats_buffer(&mut self) {
        let (Some(index), Some(head)) = (self.roles.stats, self.held_stats) else {
            return;
        };
        self.held_stats = None;
        self.common.run_pass(index, |queue, mem, irq| {
            queue.add_used(mem, head, 0)?;
            interrupt_if_wanted(queue, mem, irq, true, "virtio-balloon")?;
            Ok(false)
        });
    }

    /// Starts a free page hinting run: a new command id in the
    /// configuration space. The caller tells the driver.
    pub fn start_hinting(&mut self, acknowledge_on_stop: bool) -> Result<(), BalloonError> {
        if self.roles.hinting.is_none() {
            return Err(BalloonError::HintingDisabled);
        }
        // 0 and 1 are STOP and DONE.
        let id = self.hinting.last_cmd_id.wrapping_add(1).max(2);
        self.hinting.last_cmd_id = id;
        self.hinting.acknowledge_on_stop = acknowledge_on_stop;
        self.set_hint_cmd(id);
        Ok(())
    }

    /// Ends the hinting run: DONE, so the guest may use the hinted pages.
    /// The caller tells the driver.
    pub fn stop_hinting(&mut self) -> Result<(), BalloonError> {
        if self.roles.hinting.is_none() {
            return Err(BalloonError::HintingDisabled);
        }
        self.set_hint_cmd(FREE_PAGE_HINT_DONE);
        Ok(())
    }

    /// The last command of each side.
    pub fn hinting_status(&self) -> Result<HintingState, BalloonError> {
        if self.roles.hinting.is_none() {
            return Err(BalloonError::HintingDisabled);
        }
        Ok(self.hinting)
    }

    fn set_hint_cmd(&mut self, id: u32) {
        self.hinting.host_cmd = id;
        self.common.config_space_mut()[8..12].copy_from_slice(&id.to_le_bytes());
    }

    /// What a snapshot keeps.
    pub fn save_state(&self) -> BalloonState {
        BalloonState {
            config_space: self.config().to_vec(),
            stats_polling_interval_s: self.stats_interval,
            held_stats: self.held_stats,
            stats: self.stats,
            hinting: self.hinting,
        }
    }

    /// Puts back what [`Balloon::save_state`] kept (after the transport's
    /// restore). A state of another shape is refused whole.
    pub fn restore_state(&mut self, state: &BalloonState) -> Result<(), String> {
        if state.config_space.len() != CONFIG_LEN {
            return Err(format!(
                "balloon: a {}-byte configuration space, not {CONFIG_LEN}",
                state.config_space.len()
            ));
        }
        if (state.stats_polling_interval_s == 0) != self.roles.stats.is_none() {
            return Err("balloon: the statistics interval does not fit the device".into());
        }
        if state.held_stats.is_some_and(|h| h >= BALLOON_QUEUE_SIZE) {
            return Err("balloon: the held statistics buffer is not in the queue".into());
        }
        self.common
            .config_space_mut()
            .copy_from_slice(&state.config_space);
        self.stats_interval = state.stats_polling_interval_s;
        self.held_stats = state.held_stats;
        self.stats = state.stats;
        self.hinting = state.hinting;
        Ok(())
    }

    /// Serves queue `index`.
    pub(super) fn process(&mut self, index: usize) {
        let Balloon {
            common,
            roles,
            pages,
            held_stats,
            stats,
            hinting,
            ..
        } = self;
        let mut config_change = false;
        common.run_pass(index, |queue, mem, irq| {
            let result = if index == INFLATE_QUEUE || index == DEFLATE_QUEUE {
                drain(queue, mem, |q| {
                    pfn_batch(q, mem, pages, index == INFLATE_QUEUE)
                })
            } else if Some(index) == roles.stats {
                drain(queue, mem, |q| {
                    stats_batch(q, mem, pages, held_stats, stats)
                })
            } else if Some(index) == roles.reporting {
                drain(queue, mem, |q| report_batch(q, mem, pages))
            } else if Some(index) == roles.hinting {
                let r = drain(queue, mem, |q| hint_batch(q, mem, pages, hinting));
                config_change = take_stop_ack(hinting);
                r
            } else {
                Ok(false)
            };
            // The stats buffer is held, not returned: no interrupt for it.
            interrupt_if_wanted(queue, mem, irq, pages.used, "virtio-balloon")?;
            pages.used = false;
            result
        });
        if config_change {
            // A one-field change: no torn read, so the generation can stay.
            self.common.config_space_mut()[8..12]
                .copy_from_slice(&FREE_PAGE_HINT_DONE.to_le_bytes());
            if let Some(a) = self.common.active() {
                if let Err(e) = a.irq.trigger(INT_CONFIG) {
                    log::warn!("virtio-balloon: cannot raise a config-change interrupt: {e}");
                }
            }
        }
    }

    /// Reads the page sizes of guest memory (on the VMM thread, once
    /// active).
    pub(super) fn learn_memory(&mut self) {
        if let Some(a) = self.common.active() {
            self.pages.page_sizes = region_page_sizes(&a.mem);
        }
    }
}

impl VirtioDevice for Balloon {
    fn common(&self) -> &VirtioCommon {
        &self.common
    }

    fn common_mut(&mut self) -> &mut VirtioCommon {
        &mut self.common
    }

    /// Only `actual` is the driver's to write (virtio v1.2 §5.5.4).
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let config = self.common.config_space_mut();
        for (i, &byte) in data.iter().enumerate() {
            match start.checked_add(i) {
                Some(at) if CONFIG_ACTUAL.contains(&at) => config[at] = byte,
                _ => log::debug!("virtio-balloon: ignored a config write at {offset:#x}"),
            }
        }
    }

    fn reset(&mut self) {
        self.common.reset();
        self.held_stats = None;
        self.hinting.guest_cmd = None;
        self.pages.partial = Default::default();
        self.common.config_space_mut()[CONFIG_ACTUAL].fill(0);
    }
}

#[cfg(test)]
#[path = "device_tests.rs"]
mod tests;
