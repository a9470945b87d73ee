//! The VMM thread's side of the control API: the configuration a client
//! builds up before `InstanceStart`, the running VM after it, and one
//! function that answers each [`VmmAction`].
//!
//! Actions arrive on a channel; an `EventFd` wakes the event loop, which
//! handles them between device events ([`serve_actions`]). Nothing here
//! blocks on a client.

use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use resources::action::{
    ActionError, ActionResult, InstanceInfo, InstanceState, MachineConfigUpdate, MetricsConfig,
    VmmAction, VmmData,
};
use resources::{BootSourceConfig, DriveConfig, MachineConfig, NetConfig, SerialConfig, VmSpec};

use crate::persist::{prefetch_working_set, record_working_set, WorkingSet};
use crate::runtime::{EventLoop, RunError, RunningVm};
use crate::seccomp::SeccompFilters;
use crate::snapshot::{read_snapshot, LoadOptions, SnapshotKind};
use crate::{BuildContext, ConsoleInput, VmExit, Vmm};
use std::path::PathBuf;

/// podvm's version, as `GET /` and `GET /version` report it.
pub const VMM_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The configuration a client builds before `InstanceStart`.
#[derive(Clone, Debug, Default)]
pub struct PendingConfig {
    /// Machine configuration.
    pub machine: MachineConfig,
    /// Boot source, once given.
    pub boot_source: Option<BootSourceConfig>,
    /// Drives, in the order they were first put.
    pub drives: Vec<DriveConfig>,
    /// Network interfaces.
    pub net: Vec<NetConfig>,
    /// Whether an entropy device was put.
    pub entropy: bool,
    /// The entropy device's rate limiter.
    pub entropy_rate_limiter: Option<resources::RateLimiterConfig>,
    /// The vsock device, once put.
    pub vsock: Option<resources::VsockConfig>,
    /// The balloon, once put (its target and interval as last changed).
    pub balloon: Option<resources::BalloonConfig>,
    /// Where the console goes (standard output, unless flags or a
    /// snapshot say otherwise).
    pub serial: SerialConfig,
}

impl PendingConfig {
    /// The configuration of an already complete spec.
    pub fn from_spec(spec: VmSpec) -> Self {
        PendingConfig {
            machine: spec.machine,
            boot_source: Some(spec.boot_source),
            drives: spec.drives,
            net: spec.net,
            entropy: spec.entropy,
            entropy_rate_limiter: spec.entropy_rate_limiter,
            vsock: spec.vsock,
            balloon: spec.balloon,
            serial: spec.serial,
        }
    }

    fn spec(&self) -> Result<VmSpec, ActionError> {
        let boot_source = self.boot_source.clone().ok_or_else(|| {
            ActionError("InstanceStart: no boot source was configured (PUT /boot-source)".into())
        })?;
        Ok(VmSpec {
            machine: self.machine.clone(),
            boot_source,
            serial: self.serial.clone(),
            drives: self.drives.clone(),
            net: self.net.clone(),
            entropy: self.entropy,
            entropy_rate_limiter: self.entropy_rate_limiter,
            vsock: self.vsock.clone(),
            balloon: self.balloon,
        })
    }

    /// The configuration in Firecracker's config-file shape
    /// (`GET /vm/config`).
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "machine-config": self.machine,
            "drives": self.drives,
            "network-interfaces": self.net,
        });
        if let Some(b) = &self.boot_source {
            v["boot-source"] = serde_json::json!(b);
        }
        if self.entropy {
            v["entropy"] = match &self.entropy_rate_limiter {
                Some(l) => serde_json::json!({ "rate_limiter": l }),
                None => serde_json::json!({}),
            };
        }
        if let Some(vsock) = &self.vsock {
            v["vsock"] = serde_json::json!(vsock);
        }
        if let Some(balloon) = &self.balloon {
            v["balloon"] = serde_json::json!(balloon);
        }
        v
    }
}

/// Answers actions: configures before boot, then drives the running VM.
pub struct Controller {
    id: String,
    /// Where metrics go, once configured.
    metrics: Option<std::fs::File>,
    /// API actions handled, by name.
    api_counts: std::collections::BTreeMap<&'static str, u64>,
    config: PendingConfig,
    running: Option<RunningVm>,
    start_time: Instant,
    serial_input: Option<ConsoleInput>,
    /// The filters every vCPU thread installs (none: `--no-seccomp`).
    seccomp: Option<SeccompFilters>,
    /// Where to record the working set of a restored VM, once due.
    working_set: Option<(PathBuf, Arc<AtomicBool>)>,
}

fn fail<T>(msg: impl Into<String>) -> Result<T, ActionError> {
    Err(ActionError(msg.into()))
}

impl Controller {
    /// A controller for instance `id`; `serial_input` is typed into the
    /// console once the VM runs, whose vCPUs run under `seccomp`'s vCPU
    /// filter.
    pub fn new(
        id: String,
        config: PendingConfig,
        start_time: Instant,
        serial_input: Option<ConsoleInput>,
        seccomp: Option<SeccompFilters>,
    ) -> Self {
        Controller {
            id,
            metrics: None,
            api_counts: std::collections::BTreeMap::new(),
            config,
            running: None,
            start_time,
            serial_input,
            seccomp,
            working_set: None,
        }
    }

    /// Records the pages a restored VM touched since its load as its
    /// snapshot's working set, once [`WORKING_SET_WINDOW`] has passed.
    fn record_working_set_if_due(&mut self) {
        let due = self
            .working_set
            .as_ref()
            .is_some_and(|(_, due)| due.load(Ordering::Acquire));
        if !due {
            return;
        }
        let Some((path, _)) = self.working_set.take() else {
            return;
        };
        let Some(vm) = &self.running else {
            return;
        };
        let result = record_working_set(&vm.memory)
            .map_err(|e| e.to_string())
            .and_then(|set| {
                let json = serde_json::to_vec(&set).map_err(|e| e.to_string())?;
                std::fs::write(&path, json).map_err(|e| e.to_string())?;
                Ok(set.pages())
            });
        match result {
            Ok(pages) => log::info!(
                "working set of {pages} pages recorded in {}",
                path.display()
            ),
            Err(e) => log::warn!("cannot record the working set in {}: {e}", path.display()),
        }
    }

    fn state(&self) -> InstanceState {
        match &self.running {
            None => InstanceState::NotStarted,
            Some(vm) if vm.is_paused() => InstanceState::Paused,
            Some(_) => InstanceState::Running,
        }
    }

    fn before_boot(&self, what: &str) -> Result<(), ActionError> {
        if self.running.is_some() {
            return fail(format!("{what} cannot be changed after InstanceStart"));
        }
        Ok(())
    }

    /// Whether anything that describes the VM was configured (a snapshot
    /// load brings its own configuration, as in Firecracker).
    fn configured(&self) -> bool {
        let c = &self.config;
        c.boot_source.is_some()
            || !c.drives.is_empty()
            || !c.net.is_empty()
            || c.entropy
            || c.vsock.is_some()
            || c.balloon.is_some()
    }

    /// `PUT /snapshot/create`: a snapshot of the paused VM.
    fn create_snapshot(
        &mut self,
        p: resources::snapshot::SnapshotCreateParams,
        event_loop: &mut EventLoop,
    ) -> ActionResult {
        let Some(vm) = &mut self.running else {
            return fail("snapshot/create: the VM is not running");
        };
        if !vm.is_paused() {
            return fail(
                "snapshot/create: the VM is not paused (PATCH /vm {\"state\": \"Paused\"} first)",
            );
        }
        // The devices take what the driver posted before the pause.
        event_loop
            .run_pending()
            .map_err(|e| ActionError(format!("snapshot/create: {e}")))?;
        let spec = self.config.spec()?;
        let kind = match p.snapshot_type {
            resources::snapshot::SnapshotType::Full => SnapshotKind::Full,
            resources::snapshot::SnapshotType::Diff => SnapshotKind::Diff,
        };
        let Some(vm) = &mut self.running else {
            return fail("snapshot/create: the VM stopped");
        };
        let stats = vm
            .snapshot(&spec, kind, &p.snapshot_path, &p.mem_file_path)
            .map_err(|e| ActionError(format!("snapshot/create: {e}")))?;
        log::info!(
            "snapshot {} written ({} guest pages) in {} us",
            p.snapshot_path.display(),
            stats.pages,
            stats.elapsed.as_micros()
        );
        Ok(VmmData::Empty)
    }

    /// `PUT /snapshot/load`: the VM of a snapshot, in this process that
    /// has none yet, paused or running. On an error nothing changed: the
    /// process can still be configured, or load another snapshot.
    fn load_snapshot(
        &mut self,
        p: resources::snapshot::SnapshotLoadParams,
        event_loop: &mut EventLoop,
    ) -> ActionResult {
        if self.running.is_some() {
            return fail("snapshot/load: this process runs a VM already; load into a new one");
        }
        if self.configured() {
            return fail(
                "snapshot/load: a snapshot brings its own configuration; load it before configuring anything",
            );
        }
        let err = |e: &dyn std::fmt::Display| ActionError(format!("snapshot/load: {e}"));
        let mut payload = read_snapshot(&p.snapshot_path).map_err(|e| err(&e))?;
        if let Some(uds) = &p.vsock_uds_path {
            match &mut payload.spec.vsock {
                Some(v) => v.uds_path = uds.clone(),
                None => {
                    return fail("snapshot/load: vsock_override: the snapshot has no vsock device")
                }
            }
        }
        let options = LoadOptions {
            network_overrides: p.network_overrides.clone(),
            track_dirty_pages: p.track_dirty_pages,
        };
        let ctx = BuildContext {
            start_time: self.start_time,
        };
        let mut spec = payload.spec.clone();
        let vmm = Vmm::restore(payload, &p.mem_file_path, &options, &ctx).map_err(|e| err(&e))?;
        let working_set = working_set_path(&p.snapshot_path);
        let mut record = false;
        if p.prefetch {
            match std::fs::read(&working_set) {
                // A working set recorded by an earlier load: its pages are
                // mapped before any vCPU runs.
                Ok(json) => {
                    let set: WorkingSet = serde_json::from_slice(&json).map_err(|e| {
                        ActionError(format!(
                            "snapshot/load: working set {}: {e}",
                            working_set.display()
                        ))
                    })?;
                    let started = Instant::now();
                    let pages = prefetch_working_set(vmm.memory(), &set).map_err(|e| err(&e))?;
                    log::info!(
                        "prefetched {pages} pages of {} in {} us",
                        working_set.display(),
                        started.elapsed().as_micros()
                    );
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => record = true,
                Err(e) => {
                    return fail(format!(
                        "snapshot/load: working set {}: {e}",
                        working_set.display()
                    ))
                }
            }
        }
        let running = RunningVm::start(
            vmm,
            self.serial_input.take(),
            event_loop,
            self.seccomp.as_ref(),
            !p.resume_vm,
        )
        .map_err(|e| err(&e))?;
        for (iface, tap) in &p.network_overrides {
            if let Some(n) = spec.net.iter_mut().find(|n| &n.iface_id == iface) {
                n.host_dev_name = tap.clone();
            }
        }
        spec.machine.track_dirty_pages = p.track_dirty_pages;
        // A restored VM's memory is the memory file mapped privately, in
        // base pages, whatever backed the VM the snapshot was taken of.
        spec.machine.huge_pages = resources::HugePageConfig::None;
        self.config = PendingConfig::from_spec(spec);
        self.running = Some(running);
        if record {
            let due = Arc::new(AtomicBool::new(false));
            match DueTimer::new(due.clone(), WORKING_SET_WINDOW, None) {
                Ok(t) => {
                    event_loop.add(Arc::new(Mutex::new(t)));
                    self.working_set = Some((working_set, due));
                }
                Err(e) => log::warn!("cannot record the working set: {e}"),
            }
        }
        Ok(VmmData::Empty)
    }

    /// Builds and starts the configured VM.
    pub fn instance_start(&mut self, event_loop: &mut EventLoop) -> ActionResult {
        if self.running.is_some() {
            return fail("InstanceStart: the VM is already running");
        }
        let spec = self.config.spec()?;
        let vmm = Vmm::build(
            &spec,
            &BuildContext {
                start_time: self.start_time,
            },
        )
        .map_err(|e| ActionError(format!("InstanceStart: {e}")))?;
        let running = RunningVm::start(
            vmm,
            self.serial_input.take(),
            event_loop,
            self.seccomp.as_ref(),
            false,
        )
        .map_err(|e| ActionError(format!("InstanceStart: {e}")))?;
        self.running = Some(running);
        Ok(VmmData::Empty)
    }

    /// Answers one action. `Shutdown` stops the VM (flushing its disks)
    /// before answering and records the VM's end in `event_loop`.
    pub fn handle(&mut self, action: VmmAction, event_loop: &mut EventLoop) -> ActionResult {
        *self.api_counts.entry(action.name()).or_default() += 1;
        match action {
            VmmAction::DescribeInstance => Ok(VmmData::InstanceInfo(InstanceInfo {
                id: self.id.clone(),
                state: self.state(),
                vmm_version: VMM_VERSION.into(),
                app_name: "podvm".into(),
            })),
            VmmAction::GetVersion => Ok(VmmData::Version(VMM_VERSION.into())),
            VmmAction::GetVmConfig => Ok(VmmData::VmConfig(self.config.to_json())),
            VmmAction::GetMachineConfig => Ok(VmmData::MachineConfig(self.config.machine.clone())),
            VmmAction::PutMachineConfig(m) => {
                self.before_boot("machine-config")?;
                check_machine(&m)?;
                self.config.machine = m;
                Ok(VmmData::Empty)
            }
            VmmAction::PatchMachineConfig(MachineConfigUpdate {
                vcpu_count,
                mem_size_mib,
                smt,
                track_dirty_pages,
                huge_pages,
            }) => {
                self.before_boot("machine-config")?;
                let mut m = self.config.machine.clone();
                m.vcpu_count = vcpu_count.unwrap_or(m.vcpu_count);
                m.mem_size_mib = mem_size_mib.unwrap_or(m.mem_size_mib);
                m.smt = smt.unwrap_or(m.smt);
                m.track_dirty_pages = track_dirty_pages.unwrap_or(m.track_dirty_pages);
                m.huge_pages = huge_pages.unwrap_or(m.huge_pages);
                check_machine(&m)?;
                self.config.machine = m;
                Ok(VmmData::Empty)
            }
            VmmAction::PutBootSource(b) => {
                self.before_boot("boot-source")?;
                check_file(
                    "boot-source",
                    "kernel_image_path",
                    &b.kernel_image_path,
                    false,
                )?;
                if let Some(initrd) = &b.initrd_path {
                    check_file("boot-source", "initrd_path", initrd, false)?;
                }
                self.config.boot_source = Some(b);
                Ok(VmmData::Empty)
            }
            VmmAction::PutDrive(d) => {
                self.before_boot("drives")?;
                check_file(
                    &format!("drive {:?}", d.drive_id),
                    "path_on_host",
                    &d.path_on_host,
                    !d.is_read_only,
                )?;
                match self
                    .config
                    .drives
                    .iter_mut()
                    .find(|x| x.drive_id == d.drive_id)
                {
                    Some(slot) => *slot = d,
                    None => self.config.drives.push(d),
                }
                Ok(VmmData::Empty)
            }
            VmmAction::PatchDrive(update) => self.patch_drive(update),
            VmmAction::PutNetworkInterface(n) => {
                self.before_boot("network-interfaces")?;
                match self
                    .config
                    .net
                    .iter_mut()
                    .find(|x| x.iface_id == n.iface_id)
                {
                    Some(slot) => *slot = n,
                    None => self.config.net.push(n),
                }
                Ok(VmmData::Empty)
            }
            VmmAction::PatchNetworkInterface(update) => self.patch_network_interface(update),
            VmmAction::PutEntropy(rate_limiter) => {
                self.before_boot("entropy")?;
                self.config.entropy = true;
                self.config.entropy_rate_limiter = rate_limiter;
                Ok(VmmData::Empty)
            }
            VmmAction::PutVsock(v) => {
                self.before_boot("vsock")?;
                check_vsock(&v)?;
                self.config.vsock = Some(v);
                Ok(VmmData::Empty)
            }
            VmmAction::Balloon(a) => self.balloon(a),
            VmmAction::PutLogger(cfg) => crate::logger::configure(&cfg)
                .map(|()| VmmData::Empty)
                .map_err(|e| ActionError(e.to_string())),
            VmmAction::InstanceStart => self.instance_start(event_loop),
            VmmAction::CreateSnapshot(p) => self.create_snapshot(p, event_loop),
            VmmAction::LoadSnapshot(p) => self.load_snapshot(p, event_loop),
            VmmAction::SendCtrlAltDel => match &self.running {
                None => fail("cannot send Ctrl+Alt+Del: the VM is not running"),
                Some(vm) => vm
                    .send_ctrl_alt_del()
                    .map(|()| VmmData::Empty)
                    .map_err(|e| ActionError(format!("cannot send Ctrl+Alt+Del: {e}"))),
            },
            VmmAction::PutMetrics(cfg) => self.set_metrics(&cfg).map(|()| VmmData::Empty),
            VmmAction::FlushMetrics => self
                .flush_metrics()
                .map(|()| VmmData::Empty)
                .map_err(|e| ActionError(format!("FlushMetrics: {e}"))),
            VmmAction::Pause => match &mut self.running {
                None => fail("cannot pause: the VM is not running"),
                Some(vm) if vm.is_paused() => fail("cannot pause: the VM is already paused"),
                Some(vm) => vm
                    .pause()
                    .map(|()| VmmData::Empty)
                    .map_err(|e| ActionError(format!("cannot pause: {e}"))),
            },
            VmmAction::Resume => match &mut self.running {
                Some(vm) if vm.is_paused() => vm
                    .resume()
                    .map(|()| VmmData::Empty)
                    .map_err(|e| ActionError(format!("cannot resume: {e}"))),
                _ => fail("cannot resume: the VM is not paused"),
            },
            VmmAction::Shutdown => {
                let result = self
                    .stop()
                    .map_err(|e| ActionError(format!("Shutdown: {e}")));
                event_loop.set_outcome(VmExit::ApiShutdown);
                result.map(|()| VmmData::Empty)
            }
        }
    }

    /// `PATCH /drives/{id}`: before boot, changes the configured path and
    /// rate limiter; after boot, also the running drive's (its backing
    /// file swapped, its limiter's buckets replaced, bucket by bucket).
    fn patch_drive(&mut self, update: resources::action::DriveUpdate) -> ActionResult {
        let resources::action::DriveUpdate {
            drive_id: id,
            path_on_host,
            rate_limiter,
        } = update;
        if path_on_host.is_none() && rate_limiter.is_none() {
            return Ok(VmmData::Empty);
        }
        let Some(drive) = self.config.drives.iter_mut().find(|d| d.drive_id == id) else {
            return fail(format!("drive {id:?}: no such drive"));
        };
        if let Some(update) = rate_limiter {
            if let Some(vm) = &self.running {
                vm.update_drive_rate_limiter(&id, &update)
                    .map_err(|e| ActionError(e.to_string()))?;
            }
            drive.rate_limiter = update.applied_to(drive.rate_limiter);
        }
        if let Some(path) = path_on_host {
            if let Some(vm) = &self.running {
                vm.swap_drive(&id, &path)
                    .map_err(|e| ActionError(e.to_string()))?;
            }
            drive.path_on_host = path;
        }
        Ok(VmmData::Empty)
    }

    /// `PATCH /network-interfaces/{id}`: changes the interface's rate
    /// limiters, bucket by bucket, in the configuration and, after boot,
    /// on the running device.
    fn patch_network_interface(
        &mut self,
        update: resources::action::NetworkInterfaceUpdate,
    ) -> ActionResult {
        let resources::action::NetworkInterfaceUpdate {
            iface_id: id,
            rx_rate_limiter: rx,
            tx_rate_limiter: tx,
        } = update;
        let Some(net) = self.config.net.iter_mut().find(|n| n.iface_id == id) else {
            return fail(format!("network interface {id:?}: no such interface"));
        };
        if let Some(vm) = &self.running {
            vm.update_net_rate_limiters(&id, rx.as_ref(), tx.as_ref())
                .map_err(|e| ActionError(e.to_string()))?;
        }
        if let Some(rx) = rx {
            net.rx_rate_limiter = rx.applied_to(net.rx_rate_limiter);
        }
        if let Some(tx) = tx {
            net.tx_rate_limiter = tx.applied_to(net.tx_rate_limiter);
        }
        Ok(VmmData::Empty)
    }

    /// Where metrics go (`PUT /metrics`, or a config file's `metrics`):
    /// opened now, appended to; set once.
    pub fn set_metrics(&mut self, cfg: &MetricsConfig) -> Result<(), ActionError> {
        if self.metrics.is_some() {
            return Err(ActionError("metrics: already configured".into()));
        }
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&cfg.metrics_path)
            .map_err(|e| {
                ActionError(format!(
                    "metrics: cannot open {}: {e}",
                    cfg.metrics_path.display()
                ))
            })?;
        self.metrics = Some(file);
        Ok(())
    }

    /// Writes one JSON object with every counter to the metrics file.
    pub fn flush_metrics(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        let Some(file) = &mut self.metrics else {
            return Err(std::io::Error::other(
                "metrics are not configured (PUT /metrics)",
            ));
        };
        let mut m = match &self.running {
            Some(vm) => vm.metrics(),
            None => serde_json::json!({}),
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        m["utc_timestamp_ms"] = now.into();
        m["api"] = serde_json::json!(self.api_counts);
        let mut line = m.to_string();
        line.push('\n');
        file.write_all(line.as_bytes())
    }

    /// Writes the last metrics line and stops the VM, if one runs.
    pub fn stop(&mut self) -> Result<(), RunError> {
        // The last counters of a VM that ran, as Firecracker writes them
        // when it exits.
        if self.running.is_some() && self.metrics.is_some() {
            if let Err(e) = self.flush_metrics() {
                log::warn!("cannot write metrics: {e}");
            }
        }
        match self.running.take() {
            Some(vm) => vm.stop(),
            None => Ok(()),
        }
    }
}

/// A spec with `machine` and nothing else, for checking one part of a
/// configuration at the call that sets it.
fn probe_spec(machine: MachineConfig) -> VmSpec {
    VmSpec {
        machine,
        boot_source: BootSourceConfig {
            kernel_image_path: "/".into(),
            boot_args: None,
            initrd_path: None,
        },
        serial: SerialConfig::Off,
        drives: Vec::new(),
        net: Vec::new(),
        entropy: false,
        entropy_rate_limiter: None,
        vsock: None,
        balloon: None,
    }
}

/// Refuses a machine configuration the spec would refuse, and huge pages
/// this host does not have free now (checked again when the memory is
/// mapped at `InstanceStart`), at the call.
fn check_machine(m: &MachineConfig) -> Result<(), ActionError> {
    probe_spec(m.clone())
        .validate(u32::MAX)
        .map_err(|e| ActionError(format!("machine-config: {e}")))?;
    crate::memory::check_huge_pages(m.mem_size_bytes(), m.huge_pages)
        .map_err(|e| ActionError(format!("machine-config: {e}")))
}

/// Checks, at the call that names it, that `path` (field `field` of
/// `what`) is a regular file (or, for a drive, a block device) this
/// process can read, and write when `write`: a mistake is answered there,
/// not at `InstanceStart` (as Firecracker does).
fn check_file(
    what: &str,
    field: &str,
    path: &std::path::Path,
    write: bool,
) -> Result<(), ActionError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let err = |why: &dyn std::fmt::Display| {
        ActionError(format!("{what}: {field} {}: {why}", path.display()))
    };
    let meta = std::fs::metadata(path).map_err(|e| err(&e))?;
    let kind = meta.file_type();
    let disk = field == "path_on_host";
    if !(kind.is_file() || (disk && kind.is_block_device())) {
        return Err(err(&if disk {
            "not a regular file or block device"
        } else {
            "not a regular file"
        }));
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map(drop)
        .map_err(|e| err(&e))
}

/// Where the working set of the snapshot at `state` is kept: beside it.
fn working_set_path(state: &std::path::Path) -> PathBuf {
    let mut name = state.as_os_str().to_owned();
    name.push(".ws");
    PathBuf::from(name)
}

/// Refuses a vsock configuration the spec would refuse, at the call.
fn check_vsock(v: &resources::VsockConfig) -> Result<(), ActionError> {
    let probe = VmSpec {
        vsock: Some(v.clone()),
        ..probe_spec(MachineConfig::default())
    };
    probe
        .validate(u32::MAX)
        .map_err(|e| ActionError(e.to_string()))
}

#[path = "controller_loop.rs"]
mod event_loop;

pub use event_loop::{serve_actions, ActionQueue};
use event_loop::{DueTimer, WORKING_SET_WINDOW};

#[path = "controller_balloon.rs"]
mod balloon;

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
