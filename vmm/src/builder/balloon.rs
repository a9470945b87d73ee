//! The balloon of a running VM: its creation from the spec, and what the
//! API's balloon calls do to it (the device model is
//! `devices::virtio::balloon`).

use std::sync::{Arc, Mutex, MutexGuard};

use devices::virtio::balloon::{
    Balloon, BalloonError, BalloonOptions, BalloonState, PAGES_PER_MIB,
};
use devices::virtio::MmioTransport;
use resources::BalloonConfig;
use vm_memory::GuestMemoryMmap;

use crate::device_manager::{attach_virtio_device, DeviceError, MmioSlot};
use crate::vstate::vm::Vm;

/// The balloon device and its transport (which tells the driver of a
/// configuration change).
pub struct BalloonHandle {
    device: Arc<Mutex<Balloon>>,
    transport: Arc<Mutex<MmioTransport>>,
}

fn options(cfg: &BalloonConfig) -> BalloonOptions {
    BalloonOptions {
        amount_mib: cfg.amount_mib,
        deflate_on_oom: cfg.deflate_on_oom,
        stats_polling_interval_s: cfg.stats_polling_interval_s,
        free_page_hinting: cfg.free_page_hinting,
        free_page_reporting: cfg.free_page_reporting,
    }
}

/// Creates the balloon `cfg` describes, for a guest of `mem_mib` MiB, at
/// `slot`.
pub fn attach_balloon(
    vm: &Vm,
    mmio: &mut devices::Bus,
    mem: &GuestMemoryMmap,
    slot: MmioSlot,
    cfg: &BalloonConfig,
    mem_mib: u32,
) -> Result<BalloonHandle, DeviceError> {
    let device = Balloon::new(options(cfg), mem_mib)
        .map_err(|e| DeviceError::Create(format!("balloon: {e}")))?;
    let device = Arc::new(Mutex::new(device));
    let transport = attach_virtio_device(vm, mmio, mem, slot, "the balloon", device.clone())?;
    Ok(BalloonHandle { device, transport })
}

impl BalloonHandle {
    fn lock(&self) -> MutexGuard<'_, Balloon> {
        self.device.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device, for the event loop.
    pub fn subscriber(&self) -> crate::device_manager::Subscriber {
        self.device.clone()
    }

    /// The transport, for snapshots.
    pub fn transport(&self) -> Arc<Mutex<MmioTransport>> {
        self.transport.clone()
    }

    fn config_changed(&self) {
        self.transport
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .config_changed();
    }

    /// `PATCH /balloon`: a new target, and the driver told.
    pub fn set_target(&self, amount_mib: u32) -> Result<(), BalloonError> {
        self.lock().set_target(amount_mib)?;
        self.config_changed();
        Ok(())
    }

    /// `PATCH /balloon/statistics`.
    pub fn set_stats_interval(&self, seconds: u16) -> Result<(), BalloonError> {
        self.lock().set_stats_interval(seconds)
    }

    /// `GET /balloon/statistics`: Firecracker's `BalloonStats`.
    pub fn stats(&self) -> Result<serde_json::Value, BalloonError> {
        let (target, actual, guest) = self.lock().stats()?;
        let mut v = serde_json::json!({
            "target_pages": target,
            "actual_pages": actual,
            "target_mib": target / PAGES_PER_MIB,
            "actual_mib": actual / PAGES_PER_MIB,
        });
        if let (Some(out), serde_json::Value::Object(guest)) =
            (v.as_object_mut(), serde_json::json!(guest))
        {
            out.extend(guest);
        }
        Ok(v)
    }

    /// `PATCH /balloon/hinting/start`.
    pub fn start_hinting(&self, acknowledge_on_stop: bool) -> Result<(), BalloonError> {
        self.lock().start_hinting(acknowledge_on_stop)?;
        self.config_changed();
        Ok(())
    }

    /// `PATCH /balloon/hinting/stop`.
    pub fn stop_hinting(&self) -> Result<(), BalloonError> {
        self.lock().stop_hinting()?;
        self.config_changed();
        Ok(())
    }

    /// `GET /balloon/hinting/status`: Firecracker's `BalloonHintingStatus`.
    pub fn hinting_status(&self) -> Result<serde_json::Value, BalloonError> {
        let h = self.lock().hinting_status()?;
        let mut v = serde_json::json!({ "host_cmd": h.host_cmd });
        if let Some(g) = h.guest_cmd {
            v["guest_cmd"] = g.into();
        }
        Ok(v)
    }

    /// The counters, for metrics.
    pub fn metrics(&self) -> serde_json::Value {
        let b = self.lock();
        let c = b.counters();
        serde_json::json!({
            "target_pages": b.target_pages(), "actual_pages": b.actual_pages(),
            "inflated_pages": c.inflated_pages, "deflated_pages": c.deflated_pages,
            "inflated_bytes_freed": c.inflated_bytes_freed,
            "reported_ranges": c.reported_ranges, "reported_bytes_freed": c.reported_bytes_freed,
            "hinted_ranges": c.hinted_ranges, "hinted_bytes_freed": c.hinted_bytes_freed,
            "pages_outside": c.pages_outside, "malformed": c.malformed,
            "discard_failures": c.discard_failures, "stats_updates": c.stats_updates,
        })
    }

    /// What a snapshot keeps of the device.
    pub fn save_state(&self) -> BalloonState {
        self.lock().save_state()
    }

    /// Puts back what [`BalloonHandle::save_state`] kept.
    pub fn restore_state(&self, state: &BalloonState) -> Result<(), String> {
        self.lock().restore_state(state)
    }
}
