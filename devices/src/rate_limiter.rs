//! Rate limiting of a device queue with two token buckets, one counting
//! bytes and one counting operations (requests, frames), with
//! Firecracker's semantics:
//!
//! - a bucket holds up to `size` tokens and starts full; it refills
//!   linearly, `size` tokens every `refill_time`;
//! - a one-time burst of extra tokens, which never refills, is spent
//!   before the bucket's own;
//! - a request larger than the whole bucket cannot ever wait for enough
//!   tokens: it goes through once the bucket is full, leaving the bucket
//!   in debt by the difference, which the refill then pays back before the
//!   next request goes (Firecracker lets it through at any level and keeps
//!   the device off the queue for the debt's refill time instead: the same
//!   long-run rate);
//! - a request takes its tokens from both buckets or from neither.
//!
//! The logic ([`TokenBucket`], [`RateLimiter`]) is plain arithmetic over
//! an injected [`Clock`], so tests drive it with a [`ManualClock`]. A
//! refused request tells the limiter how long until it could go; the
//! device then arms its [`RefillTimer`] (a timerfd in the event loop) for
//! that long, stops serving the queue, leaves the request where it is, and
//! resumes when the timer fires. Nothing spins, nothing is dropped.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use vmm_sys_util::timerfd::TimerFd;

/// A monotonic clock: the time since some fixed origin.
pub trait Clock: Send {
    /// The time now, since the clock's origin.
    fn now(&self) -> Duration;
}

/// The host's monotonic clock (`CLOCK_MONOTONIC`, through the vDSO: no
/// system call).
#[derive(Clone, Copy, Debug)]
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that moves only when told to (tests and benchmarks). Clones
/// share the same time.
#[derive(Clone, Debug, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock at time zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        // Relaxed: the time is the only thing shared.
        let _ = self
            .nanos
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |t| {
                Some(t.saturating_add(by))
            });
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.nanos.load(Ordering::Relaxed))
    }
}

/// A bucket's parameters cannot make a bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BucketError {
    /// A bucket of no tokens would refuse everything forever.
    #[error("size must be at least 1")]
    ZeroSize,
    /// A bucket that refills in no time limits nothing.
    #[error("refill_time must be at least 1 ms")]
    ZeroRefillTime,
    /// The refill time does not fit 64 bits of nanoseconds (584 years).
    #[error("refill_time {0} ms is longer than 584 years")]
    RefillTimeTooLong(u64),
}

/// What a token bucket is: its size, its one-time burst, its refill time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BucketConfig {
    size: u64,
    one_time_burst: u64,
    refill_ns: u64,
}

impl BucketConfig {
    /// A bucket of `size` tokens refilled in `refill_time_ms`, with
    /// `one_time_burst` extra tokens at first.
    pub fn new(size: u64, one_time_burst: u64, refill_time_ms: u64) -> Result<Self, BucketError> {
        if size == 0 {
            return Err(BucketError::ZeroSize);
        }
        if refill_time_ms == 0 {
            return Err(BucketError::ZeroRefillTime);
        }
        let refill_ns = refill_time_ms
            .checked_mul(1_000_000)
            .ok_or(BucketError::RefillTimeTooLong(refill_time_ms))?;
        Ok(BucketConfig {
            size,
            one_time_burst,
            refill_ns,
        })
    }

    /// The most tokens the bucket holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The extra tokens spent first, once.
    pub fn one_time_burst(&self) -> u64 {
        self.one_time_burst
    }

    /// The time an empty bucket takes to fill.
    pub fn refill_time(&self) -> Duration {
        Duration::from_nanos(self.refill_ns)
    }
}

/// How a request would take its tokens from one bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Take {
    from_burst: u64,
    from_level: u64,
}

/// One token bucket. Time is passed in (nanoseconds of a [`Clock`]), so
/// that it is plain arithmetic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    config: BucketConfig,
    /// Tokens in the bucket: at most `size`, below zero while a request
    /// larger than the bucket is being paid back.
    level: i128,
    /// What is left of the one-time burst.
    burst: u64,
    /// When `level` was last brought up to date.
    last: u64,
    /// The part of a token made since, in units of 1/`refill_ns` token
    /// (below `refill_ns`): kept, so that frequent looks lose nothing to
    /// rounding.
    frac: u128,
}

impl TokenBucket {
    /// A full bucket (with its whole burst) at time `now` (nanoseconds).
    pub fn new(config: BucketConfig, now: u64) -> Self {
        TokenBucket {
            config,
            level: i128::from(config.size),
            burst: config.one_time_burst,
            last: now,
            frac: 0,
        }
    }

    /// The bucket's parameters.
    pub fn config(&self) -> BucketConfig {
        self.config
    }

    /// Tokens in the bucket (negative: in debt), burst not included, as of
    /// the last look.
    pub fn level(&self) -> i128 {
        self.level
    }

    /// What is left of the one-time burst.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// Adds the tokens made since the last look: `size` per `refill_ns`.
    fn refill(&mut self, now: u64) {
        let size = i128::from(self.config.size);
        let elapsed = now.saturating_sub(self.last);
        self.last = self.last.max(now);
        if self.level >= size {
            // A full bucket gains nothing from the time that passes.
            self.frac = 0;
            return;
        }
        // elapsed * size < 2^128; only the remainder's addition can
        // overflow, far past what fills any bucket.
        let total = (u128::from(elapsed) * u128::from(self.config.size)).saturating_add(self.frac);
        let refill = u128::from(self.config.refill_ns);
        self.frac = total % refill;
        let made = i128::try_from(total / refill).unwrap_or(i128::MAX);
        self.level = self.level.saturating_add(made);
        if self.level >= size {
            self.level = size;
            self.frac = 0;
        }
    }

    /// How `n` tokens would be taken at `now`, or how long until they can
    /// be (nanoseconds).
    fn check(&mut self, n: u64, now: u64) -> Result<Take, u64> {
        let from_burst = self.burst.min(n);
        let rest = n - from_burst;
        if rest == 0 {
            return Ok(Take {
                from_burst,
                from_level: 0,
            });
        }
        self.refill(now);
        let size = self.config.size;
        let full = self.level >= i128::from(size);
        if i128::from(rest) <= self.level || (rest > size && full) {
            return Ok(Take {
                from_burst,
                from_level: rest,
            });
        }
        // Wait until the bucket holds the request, or is full for one
        // larger than itself: `deficit` more tokens, of which `frac` of
        // one is made already (`deficit` ≥ 1, so the subtraction cannot
        // underflow).
        let deficit = (i128::from(rest.min(size)) - self.level) as u128;
        let wait = deficit
            .checked_mul(u128::from(self.config.refill_ns))
            .map_or(u128::MAX, |t| (t - self.frac).div_ceil(u128::from(size)));
        // At least 1 ns: a zero wait would disarm a timer.
        Err(u64::try_from(wait).unwrap_or(u64::MAX).max(1))
    }

    fn apply(&mut self, take: Take) {
        self.burst -= take.from_burst;
        self.level -= i128::from(take.from_level);
    }

    /// Takes `n` tokens at `now` (nanoseconds), or says how long until it
    /// could (nanoseconds), taking nothing.
    pub fn consume(&mut self, n: u64, now: u64) -> Result<(), u64> {
        let take = self.check(n, now)?;
        self.apply(take);
        Ok(())
    }
}

/// How to change one bucket of a running limiter (`PATCH`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BucketUpdate {
    /// Keep it as it is.
    Keep,
    /// No limit of this kind any more.
    Disable,
    /// A new bucket, full.
    Set(BucketConfig),
}

/// What a limiter did, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LimiterCounters {
    /// Times the limiter stopped its queue until a refill.
    pub throttled: u64,
    /// Requests served later than they could have been, once tokens came.
    pub delayed_requests: u64,
    /// Their bytes.
    pub delayed_bytes: u64,
}

/// The rate limiter of one queue: a bytes bucket and an operations bucket,
/// each optional. Without either it lets everything through at the cost
/// of one branch.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    clock: Box<dyn Clock>,
    /// A request was refused and the refill timer is (to be) armed: every
    /// request is refused until [`RateLimiter::unblock`].
    blocked: bool,
    /// How long the device's timer must wait, asked by the last refusal
    /// and not yet taken by [`RefillTimer::arm_for`].
    wait: Option<Duration>,
    /// The request at the head of the queue was refused and has not gone
    /// yet: the next one let through is it (devices keep order), and is
    /// counted as delayed.
    delayed: bool,
    counters: LimiterCounters,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("bandwidth", &self.bandwidth)
            .field("ops", &self.ops)
            .field("blocked", &self.blocked)
            .field("counters", &self.counters)
            .finish()
    }
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::unlimited()
    }
}

fn nanos(clock: &dyn Clock) -> u64 {
    u64::try_from(clock.now().as_nanos()).unwrap_or(u64::MAX)
}

impl RateLimiter {
    /// A limiter that limits nothing (until updated).
    pub fn unlimited() -> Self {
        Self::new(None, None, Box::new(MonotonicClock::new()))
    }

    /// A limiter of `bandwidth` (bytes) and `ops` (operations), each
    /// optional, on `clock`. Both buckets start full.
    pub fn new(
        bandwidth: Option<BucketConfig>,
        ops: Option<BucketConfig>,
        clock: Box<dyn Clock>,
    ) -> Self {
        let now = nanos(&*clock);
        RateLimiter {
            bandwidth: bandwidth.map(|c| TokenBucket::new(c, now)),
            ops: ops.map(|c| TokenBucket::new(c, now)),
            clock,
            blocked: false,
            wait: None,
            delayed: false,
            counters: LimiterCounters::default(),
        }
    }

    /// Whether it limits anything.
    pub fn is_limited(&self) -> bool {
        self.bandwidth.is_some() || self.ops.is_some()
    }

    /// The bytes bucket.
    pub fn bandwidth(&self) -> Option<&TokenBucket> {
        self.bandwidth.as_ref()
    }

    /// The operations bucket.
    pub fn ops(&self) -> Option<&TokenBucket> {
        self.ops.as_ref()
    }

    /// Whether it refuses every request until its timer fires.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// What it did so far.
    pub fn counters(&self) -> LimiterCounters {
        self.counters
    }

    /// Lets one operation of `bytes` through, taking its tokens, or
    /// refuses it, taking none: the caller leaves the request where it is
    /// and stops serving the queue until the refill timer fires
    /// ([`RefillTimer::arm_for`], [`RateLimiter::unblock`]).
    pub fn consume(&mut self, bytes: u64) -> bool {
        self.consume_with(|| bytes)
    }

    /// [`RateLimiter::consume`] for an operation whose size `bytes` works
    /// out, only called when the limiter needs it: a limiter without
    /// buckets costs one branch per operation.
    #[inline]
    pub fn consume_with(&mut self, bytes: impl FnOnce() -> u64) -> bool {
        if self.bandwidth.is_none() && self.ops.is_none() {
            if self.delayed {
                // A limit was lifted under a waiting request.
                self.count_delayed(bytes());
            }
            return true;
        }
        self.consume_limited(bytes())
    }

    fn consume_limited(&mut self, bytes: u64) -> bool {
        if self.blocked {
            return false;
        }
        let now = nanos(&*self.clock);
        let bandwidth = self.bandwidth.as_mut().map(|b| b.check(bytes, now));
        let ops = self.ops.as_mut().map(|b| b.check(1, now));
        match (bandwidth, ops) {
            (Some(Err(a)), Some(Err(b))) => self.refuse(a.max(b)),
            (Some(Err(wait)), _) | (_, Some(Err(wait))) => self.refuse(wait),
            (bandwidth, ops) => {
                if let (Some(bucket), Some(Ok(take))) = (&mut self.bandwidth, bandwidth) {
                    bucket.apply(take);
                }
                if let (Some(bucket), Some(Ok(take))) = (&mut self.ops, ops) {
                    bucket.apply(take);
                }
                if self.delayed {
                    self.count_delayed(bytes);
                }
                true
            }
        }
    }

    fn count_delayed(&mut self, bytes: u64) {
        self.delayed = false;
        self.counters.delayed_requests += 1;
        self.counters.delayed_bytes += bytes;
    }

    fn refuse(&mut self, wait_ns: u64) -> bool {
        self.blocked = true;
        self.delayed = true;
        self.wait = Some(Duration::from_nanos(wait_ns));
        self.counters.throttled += 1;
        false
    }

    /// How long the refill timer must wait, once per refusal.
    pub fn take_wait(&mut self) -> Option<Duration> {
        self.wait.take()
    }

    /// Serves requests again (the refill timer fired, or could not be
    /// armed).
    pub fn unblock(&mut self) {
        self.blocked = false;
        self.wait = None;
    }

    /// Changes its buckets: a new bucket starts full. A blocked limiter is
    /// unblocked, so that the caller serves the queue again under the new
    /// limits (and disarms the timer).
    pub fn update(&mut self, bandwidth: BucketUpdate, ops: BucketUpdate) {
        let now = nanos(&*self.clock);
        for (bucket, update) in [(&mut self.bandwidth, bandwidth), (&mut self.ops, ops)] {
            match update {
                BucketUpdate::Keep => {}
                BucketUpdate::Disable => *bucket = None,
                BucketUpdate::Set(config) => *bucket = Some(TokenBucket::new(config, now)),
            }
        }
        self.unblock();
    }
}

/// The timer that brings a throttled queue back: a non-blocking timerfd
/// that the device watches in the event loop while it is active.
pub struct RefillTimer {
    fd: TimerFd,
}

impl RefillTimer {
    /// A disarmed timer.
    pub fn new() -> io::Result<Self> {
        let fd = TimerFd::new().map_err(io::Error::from)?;
        // A read after a disarm (a PATCH) finds nothing: it must not block
        // the event loop.
        let raw = fd.as_raw_fd();
        // SAFETY: F_GETFL on an fd this owns; no memory is passed.
        let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: F_SETFL on an fd this owns; no memory is passed.
        if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(RefillTimer { fd })
    }

    /// Arms the timer for the wait `limiter` asked for, if it asked. When
    /// the timer cannot be set, the limiter is unblocked (and the failure
    /// logged, for `device`), so that the next notification retries
    /// rather than the queue stalling for good.
    pub fn arm_for(&mut self, limiter: &mut RateLimiter, device: &str) {
        let Some(wait) = limiter.take_wait() else {
            return;
        };
        if let Err(e) = self.fd.reset(wait, None) {
            log::error!("{device}: cannot set the rate limiter's timer: {e}");
            limiter.unblock();
        }
    }

    /// Consumes the timer's expiry and unblocks `limiter`.
    pub fn expired(&mut self, limiter: &mut RateLimiter) {
        // Nothing to read after a disarm: the limiter is unblocked anyway.
        let _ = self.fd.wait();
        limiter.unblock();
    }

    /// Disarms the timer (the limits changed).
    pub fn disarm(&mut self, device: &str) {
        if let Err(e) = self.fd.clear() {
            log::warn!("{device}: cannot disarm the rate limiter's timer: {e}");
        }
    }

    /// Whether the timer is armed (`timerfd_gettime`, which the VMM
    /// thread's seccomp filter does not allow: for tests).
    #[cfg(test)]
    pub fn is_armed(&self) -> bool {
        self.fd.is_armed().unwrap_or(false)
    }
}

impl AsRawFd for RefillTimer {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
#[path = "rate_limiter_tests.rs"]
mod tests;
