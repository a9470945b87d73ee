//! Rate limiters of drives, network interfaces and the entropy device, as
//! Firecracker describes them: a bucket of bytes (`bandwidth`) and one of
//! operations (`ops`), each optional.
//!
//! A bucket of `size` 0 is no limit (Firecracker's way to turn one off,
//! also in a `PATCH`). A bucket with a size needs a `refill_time` of at
//! least 1 ms: Firecracker takes 0 as "no limit" too, which silently drops
//! what the client asked for, so podvm refuses it naming the field.

use serde::{Deserialize, Serialize};

/// The longest refill time, in milliseconds: 2^64 nanoseconds.
pub const MAX_REFILL_TIME_MS: u64 = u64::MAX / 1_000_000;

/// One token bucket (Firecracker's `TokenBucket`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenBucketConfig {
    /// The most tokens the bucket holds (bytes or operations); 0: no
    /// limit.
    pub size: u64,
    /// Extra tokens spent first, once (they never refill).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub one_time_burst: Option<u64>,
    /// Milliseconds an empty bucket takes to fill: `size` tokens per
    /// `refill_time`.
    pub refill_time: u64,
}

impl TokenBucketConfig {
    /// Whether it limits anything.
    pub fn is_limit(&self) -> bool {
        self.size != 0
    }
}

/// A rate limiter (Firecracker's `RateLimiter`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimiterConfig {
    /// Bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth: Option<TokenBucketConfig>,
    /// Operations: requests, frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ops: Option<TokenBucketConfig>,
}

/// A bucket that cannot be honoured. Its `Display` names the field from
/// the rate limiter down (`bandwidth.refill_time …`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RateLimiterError {
    /// A bucket with a size and no refill time.
    #[error(
        "{bucket}.refill_time 0 (a bucket of size {size} needs at least 1 ms; size 0 turns it off)"
    )]
    ZeroRefillTime {
        /// `bandwidth` or `ops`.
        bucket: &'static str,
        /// Its size.
        size: u64,
    },
    /// A refill time that does not fit 64 bits of nanoseconds.
    #[error("{bucket}.refill_time {refill_time} (more than {MAX_REFILL_TIME_MS} ms)")]
    RefillTimeTooLong {
        /// `bandwidth` or `ops`.
        bucket: &'static str,
        /// The refill time, in milliseconds.
        refill_time: u64,
    },
}

impl RateLimiterConfig {
    /// Its buckets, by name.
    fn buckets(&self) -> [(&'static str, Option<&TokenBucketConfig>); 2] {
        [
            ("bandwidth", self.bandwidth.as_ref()),
            ("ops", self.ops.as_ref()),
        ]
    }

    /// Checks every bucket with a size can be honoured.
    pub fn check(&self) -> Result<(), RateLimiterError> {
        for (bucket, b) in self.buckets() {
            let Some(b) = b.filter(|b| b.is_limit()) else {
                continue;
            };
            if b.refill_time == 0 {
                return Err(RateLimiterError::ZeroRefillTime {
                    bucket,
                    size: b.size,
                });
            }
            if b.refill_time > MAX_REFILL_TIME_MS {
                return Err(RateLimiterError::RefillTimeTooLong {
                    bucket,
                    refill_time: b.refill_time,
                });
            }
        }
        Ok(())
    }

    /// The limiter without its buckets of size 0, or none when no bucket
    /// is left: what the device is limited by, as `GET /vm/config` shows
    /// it.
    pub fn effective(self) -> Option<RateLimiterConfig> {
        let keep = |b: Option<TokenBucketConfig>| b.filter(TokenBucketConfig::is_limit);
        let cfg = RateLimiterConfig {
            bandwidth: keep(self.bandwidth),
            ops: keep(self.ops),
        };
        (cfg.bandwidth.is_some() || cfg.ops.is_some()).then_some(cfg)
    }

    /// `old` after the update `self` (a `PATCH`): a bucket given replaces
    /// the old one (size 0 removes it), a bucket not given stays.
    pub fn applied_to(self, old: Option<RateLimiterConfig>) -> Option<RateLimiterConfig> {
        let old = old.unwrap_or_default();
        RateLimiterConfig {
            bandwidth: self.bandwidth.or(old.bandwidth),
            ops: self.ops.or(old.ops),
        }
        .effective()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bucket(size: u64, refill_time: u64) -> TokenBucketConfig {
        TokenBucketConfig {
            size,
            one_time_burst: None,
            refill_time,
        }
    }

    #[test]
    fn firecracker_json_round_trips() {
        let json = r#"{"bandwidth":{"size":1048576,"one_time_burst":4096,"refill_time":1000},"ops":{"size":100,"refill_time":10}}"#;
        let cfg: RateLimiterConfig = serde_json::from_str(json).unwrap();
        assert_eq!(cfg.bandwidth.unwrap().one_time_burst, Some(4096));
        assert_eq!(cfg.ops, Some(bucket(100, 10)));
        assert_eq!(serde_json::to_string(&cfg).unwrap(), json);
        let empty: RateLimiterConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, RateLimiterConfig::default());
        for bad in [
            r#"{"bandwidth": {"size": 1}}"#,
            r#"{"bandwidth": {"refill_time": 1}}"#,
            r#"{"ops": {"size": -1, "refill_time": 1}}"#,
            r#"{"ops": {"size": 1, "refill_time": 1, "burst": 2}}"#,
            r#"{"iops": {}}"#,
        ] {
            assert!(
                serde_json::from_str::<RateLimiterConfig>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_bucket_with_a_size_needs_a_refill_time_that_fits() {
        let with = |bandwidth, ops| RateLimiterConfig { bandwidth, ops }.check();
        assert_eq!(
            with(Some(bucket(1, 1)), Some(bucket(1, MAX_REFILL_TIME_MS))),
            Ok(())
        );
        // Size 0 is no limit, whatever the refill time.
        assert_eq!(with(Some(bucket(0, 0)), None), Ok(()));
        let e = with(None, Some(bucket(5, 0))).unwrap_err();
        assert_eq!(
            e.to_string(),
            "ops.refill_time 0 (a bucket of size 5 needs at least 1 ms; size 0 turns it off)"
        );
        let e = with(Some(bucket(5, MAX_REFILL_TIME_MS + 1)), None).unwrap_err();
        assert_eq!(
            e,
            RateLimiterError::RefillTimeTooLong {
                bucket: "bandwidth",
                refill_time: MAX_REFILL_TIME_MS + 1
            }
        );
        assert!(e
            .to_string()
            .starts_with("bandwidth.refill_time 18446744073710 "));
    }

    #[test]
    fn size_zero_buckets_are_no_limit_and_an_update_merges_bucket_by_bucket() {
        let full = RateLimiterConfig {
            bandwidth: Some(bucket(1000, 100)),
            ops: Some(bucket(10, 100)),
        };
        assert_eq!(full.effective(), Some(full));
        let off = RateLimiterConfig {
            bandwidth: Some(bucket(0, 0)),
            ops: None,
        };
        assert_eq!(off.effective(), None);
        // Only the bytes change; the operations bucket stays.
        let update = RateLimiterConfig {
            bandwidth: Some(bucket(5, 1)),
            ops: None,
        };
        assert_eq!(
            update.applied_to(Some(full)),
            Some(RateLimiterConfig {
                bandwidth: Some(bucket(5, 1)),
                ops: Some(bucket(10, 100)),
            })
        );
        // A size 0 bucket removes one; removing both leaves none.
        let drop_ops = RateLimiterConfig {
            bandwidth: None,
            ops: Some(bucket(0, 0)),
        };
        assert_eq!(
            drop_ops.applied_to(Some(full)),
            Some(RateLimiterConfig {
                bandwidth: Some(bucket(1000, 100)),
                ops: None,
            })
        );
        assert_eq!(off.applied_to(drop_ops.applied_to(Some(full))), None);
        assert_eq!(update.applied_to(None), update.effective());
        // An empty update changes nothing.
        assert_eq!(
            RateLimiterConfig::default().applied_to(Some(full)),
            Some(full)
        );
    }
}
