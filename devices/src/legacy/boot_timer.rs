//! The boot-timer port (0x3f0, as in Firecracker): the guest's init writes
//! [`BOOT_TIMER_MAGIC`] to it when user space is reached, and podvm reports
//! how long that took since the VMM process started.

use std::time::{Duration, Instant};

use crate::bus::BusDevice;

/// The value a guest writes to say "user space reached".
pub const BOOT_TIMER_MAGIC: u8 = 123;

/// Records the time from `start` to the guest's magic write.
pub struct BootTimer {
    start: Instant,
    now: fn() -> Instant,
    boot_time: Option<Duration>,
}

impl BootTimer {
    /// A timer counting from `start` (the VMM process's start).
    pub fn new(start: Instant) -> Self {
        Self::with_clock(start, Instant::now)
    }

    /// A timer with an injected clock, for tests.
    pub fn with_clock(start: Instant, now: fn() -> Instant) -> Self {
        BootTimer {
            start,
            now,
            boot_time: None,
        }
    }

    /// The time of the first magic write, if it happened.
    pub fn boot_time(&self) -> Option<Duration> {
        self.boot_time
    }
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != 0 || data.first() != Some(&BOOT_TIMER_MAGIC) {
            return;
        }
        let elapsed = (self.now)().saturating_duration_since(self.start);
        // Reported on every write (a rebooting guest may boot again), kept
        // from the first.
        self.boot_time.get_or_insert(elapsed);
        log::info!("guest-boot-time = {} us", elapsed.as_micros());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_magic_value_stops_the_clock() {
        let start = Instant::now() - Duration::from_millis(5);
        let mut t = BootTimer::new(start);
        t.write(0, &[1]);
        t.write(1, &[BOOT_TIMER_MAGIC]);
        assert_eq!(t.boot_time(), None);
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert!(t.boot_time().unwrap() >= Duration::from_millis(5));
    }

    #[test]
    fn measures_with_the_injected_clock() {
        fn later() -> Instant {
            // Far enough in the future that it never precedes `start`.
            Instant::now() + Duration::from_secs(3600)
        }
        let mut t = BootTimer::with_clock(Instant::now(), later);
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert!(t.boot_time().unwrap() >= Duration::from_secs(3599));
    }
}
