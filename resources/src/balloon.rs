//! The memory balloon: Firecracker's `balloon` (`PUT /balloon`, a config
//! file's `balloon`) and the calls that change it once the VM runs.

use serde::{Deserialize, Serialize};

/// `PUT /balloon`, a config file's `balloon`, `GET /balloon`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonConfig {
    /// Target size, MiB: memory the guest is asked to give up.
    pub amount_mib: u32,
    /// Whether the guest takes pages back from the balloon when it runs
    /// out of memory.
    pub deflate_on_oom: bool,
    /// Seconds between statistics from the guest; 0 disables them (and
    /// they cannot be turned on after boot).
    #[serde(default)]
    pub stats_polling_interval_s: u16,
    /// Whether free page hinting is offered.
    #[serde(default)]
    pub free_page_hinting: bool,
    /// Whether free page reporting is offered.
    #[serde(default)]
    pub free_page_reporting: bool,
}

/// `PATCH /balloon`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonUpdate {
    /// The new target, MiB.
    pub amount_mib: u32,
}

/// `PATCH /balloon/statistics`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalloonStatsUpdate {
    /// The new interval, seconds.
    pub stats_polling_interval_s: u16,
}

fn yes() -> bool {
    true
}

/// `PATCH /balloon/hinting/start` (the body may be left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HintingStart {
    /// Whether the VMM answers the guest's end of hinting with DONE itself
    /// (true unless said), so that the guest may use the hinted pages again
    /// without a `hinting/stop`.
    #[serde(default = "yes")]
    pub acknowledge_on_stop: bool,
}

impl Default for HintingStart {
    fn default() -> Self {
        HintingStart {
            acknowledge_on_stop: true,
        }
    }
}

/// What the balloon calls ask of the VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BalloonAction {
    /// `PUT /balloon` (before boot).
    Put(BalloonConfig),
    /// `PATCH /balloon`.
    SetTarget(u32),
    /// `GET /balloon`.
    Describe,
    /// `GET /balloon/statistics`.
    Stats,
    /// `PATCH /balloon/statistics`.
    SetStatsInterval(u16),
    /// `PATCH /balloon/hinting/start`.
    StartHinting(HintingStart),
    /// `PATCH /balloon/hinting/stop`.
    StopHinting,
    /// `GET /balloon/hinting/status`.
    HintingStatus,
}

impl BalloonAction {
    /// The action's name in metrics.
    pub fn name(&self) -> &'static str {
        match self {
            BalloonAction::Put(_) => "put_balloon",
            BalloonAction::SetTarget(_) => "patch_balloon",
            BalloonAction::Describe => "get_balloon",
            BalloonAction::Stats => "get_balloon_stats",
            BalloonAction::SetStatsInterval(_) => "patch_balloon_stats",
            BalloonAction::StartHinting(_) => "start_balloon_hinting",
            BalloonAction::StopHinting => "stop_balloon_hinting",
            BalloonAction::HintingStatus => "get_balloon_hinting",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firecrackers_fields_with_their_defaults() {
        let b: BalloonConfig =
            serde_json::from_str(r#"{"amount_mib": 64, "deflate_on_oom": true}"#).unwrap();
        assert_eq!(
            b,
            BalloonConfig {
                amount_mib: 64,
                deflate_on_oom: true,
                ..Default::default()
            }
        );
        let b: BalloonConfig = serde_json::from_str(
            r#"{"amount_mib": 0, "deflate_on_oom": false, "stats_polling_interval_s": 5,
                "free_page_hinting": true, "free_page_reporting": true}"#,
        )
        .unwrap();
        assert!(b.free_page_hinting && b.free_page_reporting);
        assert_eq!(b.stats_polling_interval_s, 5);
        for bad in [
            r#"{"amount_mib": 1}"#,
            r#"{"deflate_on_oom": true}"#,
            r#"{"amount_mib": -1, "deflate_on_oom": true}"#,
            r#"{"amount_mib": 1, "deflate_on_oom": true, "stats_polling_interval_s": 70000}"#,
            r#"{"amount_mib": 1, "deflate_on_oom": true, "must_tell_host": true}"#,
        ] {
            assert!(serde_json::from_str::<BalloonConfig>(bad).is_err(), "{bad}");
        }
        let h: HintingStart = serde_json::from_str("{}").unwrap();
        assert!(h.acknowledge_on_stop);
        assert_eq!(HintingStart::default(), h);
        assert!(serde_json::from_str::<BalloonUpdate>(r#"{"amount_mib": 1, "x": 1}"#).is_err());
        assert_eq!(BalloonAction::Stats.name(), "get_balloon_stats");
    }
}
