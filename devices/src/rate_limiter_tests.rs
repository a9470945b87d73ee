use super::*;

const MS: u64 = 1_000_000;

fn bucket(size: u64, burst: u64, refill_ms: u64) -> TokenBucket {
    TokenBucket::new(BucketConfig::new(size, burst, refill_ms).unwrap(), 0)
}

#[test]
fn bucket_parameters_are_checked() {
    assert_eq!(BucketConfig::new(0, 0, 100), Err(BucketError::ZeroSize));
    assert_eq!(BucketConfig::new(1, 0, 0), Err(BucketError::ZeroRefillTime));
    let too_long = u64::MAX / 1_000_000 + 1;
    assert_eq!(
        BucketConfig::new(1, 0, too_long),
        Err(BucketError::RefillTimeTooLong(too_long))
    );
    let c = BucketConfig::new(10, 5, u64::MAX / 1_000_000).unwrap();
    assert_eq!((c.size(), c.one_time_burst()), (10, 5));
    assert_eq!(
        BucketConfig::new(1, 0, 250).unwrap().refill_time(),
        Duration::from_millis(250)
    );
    assert_eq!(
        BucketError::ZeroRefillTime.to_string(),
        "refill_time must be at least 1 ms"
    );
}

#[test]
fn a_bucket_starts_full_and_refills_linearly() {
    // 1000 tokens per second.
    let mut b = bucket(1000, 0, 1000);
    assert_eq!(b.consume(1000, 0), Ok(()));
    assert_eq!(b.level(), 0);
    // Nothing left: one token takes 1 ms.
    assert_eq!(b.consume(1, 0), Err(MS));
    assert_eq!(b.consume(100, 0), Err(100 * MS));
    // Half a token after half a millisecond: not yet.
    assert_eq!(b.consume(1, MS / 2), Err(MS / 2));
    assert_eq!(b.consume(1, MS), Ok(()));
    // 250 ms make 250 tokens.
    assert_eq!(b.consume(250, 251 * MS), Ok(()));
    assert_eq!(b.level(), 0);
    // Never more than the size, however long it waits.
    assert_eq!(b.consume(0, 10_000 * MS), Ok(()));
    assert_eq!(b.consume(1, 10_000 * MS), Ok(()));
    assert_eq!(b.level(), 999);
}

#[test]
fn fractions_of_a_token_are_not_lost_between_frequent_calls() {
    // 3 tokens every 10 ms: one per 3.33 ms.
    let mut b = bucket(3, 0, 10);
    b.consume(3, 0).unwrap();
    let mut served = 0;
    // Looking every 1 ms for 100 ms makes exactly 30 tokens.
    for t in 1..=100 {
        while b.consume(1, t * MS).is_ok() {
            served += 1;
        }
    }
    assert_eq!(served, 30);
}

#[test]
fn the_one_time_burst_is_spent_first_and_never_comes_back() {
    let mut b = bucket(10, 25, 100);
    assert_eq!(b.consume(20, 0), Ok(()));
    assert_eq!((b.burst(), b.level()), (5, 10));
    // 5 from the burst, 3 from the bucket.
    assert_eq!(b.consume(8, 0), Ok(()));
    assert_eq!((b.burst(), b.level()), (0, 7));
    // A refused request takes nothing, not even burst.
    let mut c = bucket(10, 5, 100);
    c.consume(10 + 5, 0).unwrap();
    c.burst = 3;
    assert_eq!(c.consume(8, 0), Err(50 * MS));
    assert_eq!((c.burst(), c.level()), (3, 0));
    // Refilled, the bucket is back; the burst is what was left.
    assert_eq!(c.consume(0, 1000 * MS), Ok(()));
    assert_eq!(c.consume(13, 1000 * MS), Ok(()));
    assert_eq!((c.burst(), c.level()), (0, 0));
}

#[test]
fn a_request_larger_than_the_bucket_waits_for_a_full_bucket_and_goes_into_debt() {
    let mut b = bucket(100, 0, 100);
    b.consume(60, 0).unwrap();
    // 250 tokens from a 100-token bucket: wait until it is full (60 ms
    // to make the 60 taken), then it goes.
    assert_eq!(b.consume(250, 0), Err(60 * MS));
    assert_eq!(b.consume(250, 60 * MS), Ok(()));
    assert_eq!(b.level(), -150);
    // The debt is paid back before anything else goes: 1 token needs
    // 151 ms of refill.
    assert_eq!(b.consume(1, 60 * MS), Err(151 * MS));
    assert_eq!(b.consume(1, 211 * MS), Ok(()));
    // An empty request always goes.
    let mut d = bucket(1, 0, 1000);
    d.consume(5, 0).unwrap();
    assert_eq!(d.consume(0, 0), Ok(()));
}

#[test]
fn extreme_values_do_not_overflow() {
    let mut b = bucket(u64::MAX, 0, u64::MAX / 1_000_000);
    assert_eq!(b.consume(u64::MAX, 0), Ok(()));
    assert!(b.consume(u64::MAX, 1).is_err());
    assert_eq!(b.consume(1, u64::MAX), Ok(()));
    let mut tiny = bucket(1, 0, u64::MAX / 1_000_000);
    tiny.consume(u64::MAX, 0).unwrap();
    assert_eq!(tiny.consume(1, 0), Err(u64::MAX));
}

fn limiter(
    bandwidth: Option<(u64, u64, u64)>,
    ops: Option<(u64, u64, u64)>,
) -> (RateLimiter, ManualClock) {
    let clock = ManualClock::new();
    let cfg = |(s, b, r)| BucketConfig::new(s, b, r).unwrap();
    let l = RateLimiter::new(bandwidth.map(cfg), ops.map(cfg), Box::new(clock.clone()));
    (l, clock)
}

#[test]
fn without_buckets_everything_goes() {
    let mut l = RateLimiter::unlimited();
    assert!(!l.is_limited());
    for _ in 0..1000 {
        assert!(l.consume(u64::MAX));
    }
    assert_eq!(l.take_wait(), None);
    assert_eq!(l.counters(), LimiterCounters::default());
}

#[test]
fn a_request_needs_both_buckets_and_takes_from_both_or_neither() {
    // 1000 bytes/s and 2 operations per 100 ms.
    let (mut l, clock) = limiter(Some((1000, 0, 1000)), Some((2, 0, 100)));
    assert!(l.consume(600));
    // Bytes enough, operations enough: both taken.
    assert!(l.consume(400));
    assert_eq!(l.bandwidth().unwrap().level(), 0);
    assert_eq!(l.ops().unwrap().level(), 0);
    // Both short: the longer wait wins (1000 ms for the bytes).
    assert!(!l.consume(1000));
    assert_eq!(l.take_wait(), Some(Duration::from_secs(1)));
    assert_eq!(l.take_wait(), None, "asked once");
    assert!(l.is_blocked());
    // Blocked until the timer says so, whatever the clock.
    clock.advance(Duration::from_secs(5));
    assert!(!l.consume(1));
    l.unblock();
    // Bytes plenty now, operations too.
    assert!(l.consume(10));
    assert!(l.consume(10));
    assert!(!l.consume(10));
    assert_eq!(l.take_wait(), Some(Duration::from_millis(50)));
    // The refused request took no bytes.
    assert_eq!(l.bandwidth().unwrap().level(), 980);
    assert_eq!(l.ops().unwrap().level(), 0);
    // A request of no bytes still costs an operation.
    clock.advance(Duration::from_millis(50));
    l.unblock();
    assert!(l.consume(0));
    assert!(!l.consume(0));
}

#[test]
fn refusals_and_the_requests_they_delay_are_counted_once() {
    let (mut l, clock) = limiter(None, Some((1, 0, 100)));
    assert!(l.consume(512));
    // The same request refused twice (a PATCH woke the queue between)
    // is one delayed request.
    assert!(!l.consume(512));
    l.unblock();
    assert!(!l.consume(512));
    l.unblock();
    clock.advance(Duration::from_millis(100));
    assert!(l.consume(512));
    assert!(!l.consume(4096));
    l.unblock();
    clock.advance(Duration::from_millis(100));
    assert!(l.consume(4096));
    assert_eq!(
        l.counters(),
        LimiterCounters {
            throttled: 3,
            delayed_requests: 2,
            delayed_bytes: 512 + 4096,
        }
    );
}

#[test]
fn an_update_replaces_or_drops_buckets_full_and_unblocks() {
    let (mut l, clock) = limiter(Some((100, 0, 1000)), Some((1, 0, 1000)));
    assert!(l.consume(100));
    assert!(!l.consume(1));
    assert!(l.is_blocked());
    // Keep the bytes, a bigger operations bucket: the bytes stay empty.
    let ops = BucketConfig::new(10, 0, 1000).unwrap();
    l.update(BucketUpdate::Keep, BucketUpdate::Set(ops));
    assert!(!l.is_blocked());
    assert_eq!(l.take_wait(), None);
    assert_eq!(l.ops().unwrap().config(), ops);
    assert_eq!(l.ops().unwrap().level(), 10);
    assert_eq!(l.bandwidth().unwrap().level(), 0);
    assert!(!l.consume(1), "no bytes yet");
    l.unblock();
    clock.advance(Duration::from_millis(10));
    assert!(l.consume(1));
    // Dropping the bytes bucket leaves the operations limit alone.
    l.update(BucketUpdate::Disable, BucketUpdate::Keep);
    assert!(l.bandwidth().is_none());
    assert!(l.consume(1_000_000));
    assert_eq!(l.ops().unwrap().level(), 8);
    // Dropping both lifts every limit; the request that waited is
    // counted when it goes.
    for _ in 0..8 {
        assert!(l.consume(1));
    }
    assert!(!l.consume(7));
    l.update(BucketUpdate::Keep, BucketUpdate::Disable);
    assert!(!l.is_limited());
    assert!(l.consume(7));
    assert_eq!(l.counters().delayed_requests, 2);
    assert_eq!(l.counters().delayed_bytes, 1 + 7);
}

#[test]
fn the_refill_timer_arms_for_the_wait_and_unblocks_on_expiry() {
    let (mut l, _clock) = limiter(None, Some((1, 0, 20)));
    let mut t = RefillTimer::new().unwrap();
    t.arm_for(&mut l, "test");
    assert!(!t.is_armed(), "nothing asked");
    assert!(l.consume(0));
    assert!(!l.consume(0));
    t.arm_for(&mut l, "test");
    assert!(t.is_armed());
    // A read before expiry does not block (and finds nothing).
    let mut fd = libc::pollfd {
        fd: t.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, for at most 5 s.
    let n = unsafe { libc::poll(&mut fd, 1, 5000) };
    assert_eq!(n, 1, "the timer fires");
    t.expired(&mut l);
    assert!(!l.is_blocked());
    assert!(!t.is_armed());
    // Disarmed before expiry: expiring then reads nothing, blocks not.
    assert!(!l.consume(0));
    t.arm_for(&mut l, "test");
    t.disarm("test");
    assert!(!t.is_armed());
    t.expired(&mut l);
    assert!(!l.is_blocked());
}
