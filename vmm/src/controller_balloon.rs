//! The controller's answers to the `/balloon` calls: the configuration
//! before `InstanceStart`, the running device after it (Firecracker's
//! rules: `PUT` only before boot; statistics and hinting only on a running
//! VM whose balloon has them).

use resources::action::{ActionError, ActionResult, VmmData};
use resources::{BalloonAction, BalloonConfig, HintingStart, VmSpec};

use super::{fail, probe_spec, Controller};
use crate::builder::BalloonHandle;

/// What the balloon calls say when there is no balloon.
const NO_BALLOON: &str = "balloon: no balloon device was configured (PUT /balloon)";

impl Controller {
    /// Answers one balloon call.
    pub(super) fn balloon(&mut self, action: BalloonAction) -> ActionResult {
        match action {
            BalloonAction::Put(cfg) => {
                self.before_boot("balloon")?;
                check_balloon(&self.config.machine, cfg)?;
                self.config.balloon = Some(cfg);
                Ok(VmmData::Empty)
            }
            BalloonAction::SetTarget(amount_mib) => {
                let mut cfg = self.balloon_config()?;
                cfg.amount_mib = amount_mib;
                match self.running_balloon("balloon")? {
                    Some(b) => b.set_target(amount_mib).map_err(balloon_err("balloon"))?,
                    None => check_balloon(&self.config.machine, cfg)?,
                }
                self.config.balloon = Some(cfg);
                Ok(VmmData::Empty)
            }
            BalloonAction::Describe => Ok(VmmData::Json(serde_json::json!(self.balloon_config()?))),
            BalloonAction::Stats => {
                let what = "balloon statistics";
                let cfg = self.balloon_config()?;
                let Some(b) = self.running_balloon(what)? else {
                    return fail(if cfg.stats_polling_interval_s == 0 {
                        format!("{what}: not enabled (stats_polling_interval_s is 0)")
                    } else {
                        format!("{what}: the VM is not running")
                    });
                };
                b.stats().map(VmmData::Json).map_err(balloon_err(what))
            }
            BalloonAction::SetStatsInterval(seconds) => {
                let mut cfg = self.balloon_config()?;
                cfg.stats_polling_interval_s = seconds;
                if let Some(b) = self.running_balloon("balloon statistics")? {
                    b.set_stats_interval(seconds)
                        .map_err(balloon_err("balloon statistics"))?;
                }
                self.config.balloon = Some(cfg);
                Ok(VmmData::Empty)
            }
            BalloonAction::StartHinting(HintingStart {
                acknowledge_on_stop,
            }) => self.hinting("balloon hinting/start", |b| {
                b.start_hinting(acknowledge_on_stop)
                    .map(|()| VmmData::Empty)
            }),
            BalloonAction::StopHinting => self.hinting("balloon hinting/stop", |b| {
                b.stop_hinting().map(|()| VmmData::Empty)
            }),
            BalloonAction::HintingStatus => self.hinting("balloon hinting/status", |b| {
                b.hinting_status().map(VmmData::Json)
            }),
        }
    }

    /// The configured balloon, or the error every call but `PUT` gives
    /// without one.
    fn balloon_config(&self) -> Result<BalloonConfig, ActionError> {
        self.config
            .balloon
            .ok_or_else(|| ActionError(NO_BALLOON.into()))
    }

    /// The running VM's balloon; `None` before `InstanceStart`.
    fn running_balloon(&self, what: &str) -> Result<Option<&BalloonHandle>, ActionError> {
        let Some(vm) = &self.running else {
            return Ok(None);
        };
        match &vm.virtio.balloon {
            Some(b) => Ok(Some(b)),
            // A VM restored from a snapshot without one.
            None => fail(format!("{what}: this VM has no balloon device")),
        }
    }

    /// A hinting call: needs a balloon, a running VM and hinting enabled.
    fn hinting(
        &self,
        what: &str,
        call: impl FnOnce(&BalloonHandle) -> Result<VmmData, devices::virtio::balloon::BalloonError>,
    ) -> ActionResult {
        let cfg = self.balloon_config()?;
        if !cfg.free_page_hinting {
            return fail(format!(
                "{what}: free page hinting is not enabled (free_page_hinting was false)"
            ));
        }
        match self.running_balloon(what)? {
            Some(b) => call(b).map_err(balloon_err(what)),
            None => fail(format!("{what}: the VM is not running")),
        }
    }
}

fn balloon_err(
    what: &str,
) -> impl FnOnce(devices::virtio::balloon::BalloonError) -> ActionError + '_ {
    move |e| ActionError(format!("{what}: {e}"))
}

/// Refuses a balloon the spec would refuse with `machine`, at the call.
fn check_balloon(
    machine: &resources::MachineConfig,
    cfg: BalloonConfig,
) -> Result<(), ActionError> {
    let probe = VmSpec {
        balloon: Some(cfg),
        ..probe_spec(machine.clone())
    };
    probe
        .validate(u32::MAX)
        .map_err(|e| ActionError(e.to_string()))
}
