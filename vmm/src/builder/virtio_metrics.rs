//! The virtio devices' counters, as the metrics file has them (by device
//! id, and per virtio-mmio window what its driver did wrong).

use super::VirtioDevices;
use devices::virtio::block::Block;
use std::sync::Mutex;

impl VirtioDevices {
    /// The devices' counters, by device id.
    pub fn metrics(&self) -> serde_json::Value {
        let lock = |m: &Mutex<Block>| {
            let b = m.lock().unwrap_or_else(|e| e.into_inner());
            let c = b.counters();
            let l = b.rate_limiter().counters();
            (
                b.id().to_string(),
                serde_json::json!({
                    "reads": c.reads, "writes": c.writes,
                    "read_bytes": c.read_bytes, "write_bytes": c.write_bytes,
                    "flushes": c.flushes, "errors": c.errors,
                    "throttled": l.throttled, "delayed_requests": l.delayed_requests,
                    "delayed_bytes": l.delayed_bytes,
                }),
            )
        };
        let block: serde_json::Map<_, _> = self.blocks.iter().map(|b| lock(b)).collect();
        let net: serde_json::Map<_, _> = self
            .nets
            .iter()
            .map(|n| {
                let n = n.lock().unwrap_or_else(|e| e.into_inner());
                let c = n.counters();
                let (rl, tl) = (
                    n.rx_rate_limiter().counters(),
                    n.tx_rate_limiter().counters(),
                );
                (
                    n.id().to_string(),
                    serde_json::json!({
                        "rx_frames": c.rx.frames, "rx_bytes": c.rx.bytes,
                        "rx_dropped": c.rx.dropped, "rx_malformed": c.rx.malformed,
                        "tx_frames": c.tx.frames, "tx_bytes": c.tx.bytes,
                        "tx_malformed": c.tx.malformed, "tx_errors": c.tx.errors,
                        "rx_throttled": rl.throttled, "rx_delayed_frames": rl.delayed_requests,
                        "rx_delayed_bytes": rl.delayed_bytes,
                        "tx_throttled": tl.throttled, "tx_delayed_frames": tl.delayed_requests,
                        "tx_delayed_bytes": tl.delayed_bytes,
                    }),
                )
            })
            .collect();
        // What drivers did wrong at each transport, by window address.
        let mmio: serde_json::Map<_, _> = self
            .slots
            .iter()
            .zip(&self.transports)
            .map(|(slot, t)| {
                let t = t.lock().unwrap_or_else(|e| e.into_inner());
                let c = t.counters();
                (
                    format!("{:#x}", slot.base),
                    serde_json::json!({
                        "device_type": t.device_type(),
                        "ignored_accesses": c.ignored_accesses,
                        "needs_reset": c.needs_reset,
                        "queue_errors": c.queue_errors,
                    }),
                )
            })
            .collect();
        let mut m = serde_json::json!({ "block": block, "net": net, "mmio": mmio });
        if let Some(r) = &self.rng {
            let r = r.lock().unwrap_or_else(|e| e.into_inner());
            let (malformed, failures) = r.errors();
            let l = r.rate_limiter().counters();
            m["entropy"] = serde_json::json!({
                "malformed": malformed, "failures": failures,
                "throttled": l.throttled, "delayed_requests": l.delayed_requests,
                "delayed_bytes": l.delayed_bytes,
            });
        }
        if let Some(b) = &self.balloon {
            m["balloon"] = b.metrics();
        }
        if let Some(v) = &self.vsock {
            let c = v.lock().unwrap_or_else(|e| e.into_inner()).counters();
            m["vsock"] = serde_json::json!({
                "host_connections": c.host_connections,
                "guest_connections": c.guest_connections,
                "active_connections": c.active_connections,
                "bytes_to_guest": c.bytes_to_guest,
                "bytes_from_guest": c.bytes_from_guest,
                "rsts_sent": c.rsts_sent,
                "malformed": c.malformed,
                "refused_by_limit": c.refused_by_limit,
                "connect_failures": c.connect_failures,
                "bad_connect_lines": c.bad_connect_lines,
            });
        }
        m
    }
}
