//! A hostile guest (tests/guests/hostile_blk.S) abuses a block device —
//! descriptors outside guest memory, chains that loop, lengths near
//! u32::MAX, queues the device cannot take, an available index far ahead
//! or moved back by the device's own writes, writes to a read-only disk,
//! register accesses of every width at every offset, notifications before
//! the driver is ready — and each time the VMM keeps running (the guest
//! resets: exit 0), the other block device and the entropy device still
//! serve it, the abuse is counted in metrics, and neither disk image
//! changes.
//!
//! Each VM is started with `podvm serve --config-file` and a `metrics`
//! section, so that the last metrics line, written at exit, is checked.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const SECTOR: usize = 512;
/// The victim's window: block device 0 takes the first MMIO slot.
const VICTIM_MMIO: &str = "0xd0000000";
/// The check disk's window: the second slot.
const CHECK_MMIO: &str = "0xd0001000";

/// An image of 64 sectors whose bytes follow `mul`.
fn image(dir: &Path, name: &str, mul: usize) -> (PathBuf, Vec<u8>) {
    let bytes: Vec<u8> = (0..64 * SECTOR).map(|i| (i * mul % 251) as u8).collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes).unwrap();
    (path, bytes)
}

/// What one hostile run left behind.
struct Hostile {
    out: RunOutput,
    metrics: Value,
    victim: Vec<u8>,
}

impl Hostile {
    /// The victim's block counters.
    fn victim_block(&self) -> &Value {
        &self.metrics["block"]["victim"]
    }

    /// The victim's transport counters.
    fn victim_mmio(&self) -> &Value {
        &self.metrics["mmio"][VICTIM_MMIO]
    }
}

/// Runs the hostile guest's `case` against a victim disk (read-only when
/// `victim_ro`), with a check disk and the entropy device beside it, and
/// checks what every case must leave: exit 0, both images unchanged, the
/// check disk read right and counted without error, entropy served.
/// `None` when KVM is not available (the test was skipped).
fn hostile(test: &str, case: &str, victim_ro: bool) -> Option<Hostile> {
    if !kvm_available(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let (victim, victim_bytes) = image(dir.path(), "victim.img", 7);
    let (check, check_bytes) = image(dir.path(), "check.img", 13);
    let config = serde_json::json!({
        "boot-source": {
            "kernel_image_path": guest("hostile_blk"),
            "boot_args": format!("console=ttyS0 hostile.case={case} hostile.check=1"),
        },
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
        "drives": [
            {"drive_id": "victim", "path_on_host": victim, "is_root_device": false,
             "is_read_only": victim_ro},
            {"drive_id": "check", "path_on_host": check, "is_root_device": false,
             "is_read_only": false},
        ],
        "entropy": {},
    });
    let (out, metrics) = serve_config_file(dir.path(), config);
    assert_eq!(out.code(), 0, "{case}: the VMM must survive: {out:?}");
    let lines = out.lines();
    for line in ["hostile-case-done", "hostile-ok"] {
        assert!(lines.contains(&line), "{case}: no {line}: {out:?}");
    }
    assert_eq!(out.value("hostile-check-status"), Some("0"), "{out:?}");
    assert_eq!(
        out.value("hostile-check-fnv"),
        Some(fnv1a(&check_bytes[..4 * SECTOR]).as_str()),
        "{case}: the other disk reads right"
    );
    assert_eq!(out.value("hostile-rng-len"), Some("32"), "{out:?}");
    let rng = out.value("hostile-rng").expect("entropy bytes");
    assert_eq!(rng.len(), 64);
    assert_ne!(rng, "0".repeat(64), "{case}: entropy is served");

    let check_blk = &metrics["block"]["check"];
    assert_eq!(check_blk["errors"], 0, "{metrics}");
    assert_eq!(check_blk["reads"], 1, "{metrics}");
    assert_eq!(metrics["mmio"][CHECK_MMIO]["needs_reset"], 0, "{metrics}");
    assert_eq!(metrics["mmio"][CHECK_MMIO]["queue_errors"], 0, "{metrics}");
    assert_eq!(metrics["entropy"]["malformed"], 0, "{metrics}");

    let victim_now = std::fs::read(&victim).unwrap();
    assert!(
        victim_now == victim_bytes,
        "{case}: the victim image changed"
    );
    assert!(
        std::fs::read(&check).unwrap() == check_bytes,
        "{case}: the check image changed"
    );
    Some(Hostile {
        out,
        metrics,
        victim: victim_bytes,
    })
}

fn u(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a counter: {v}"))
}

#[test]
fn descriptors_outside_guest_memory_get_ioerr() {
    let Some(h) = hostile(
        "descriptors_outside_guest_memory_get_ioerr",
        "outside",
        false,
    ) else {
        return;
    };
    for key in [
        "hostile-read-outside",
        "hostile-read-wrap",
        "hostile-write-outside",
    ] {
        assert_eq!(h.out.value(key), Some("1"), "{key}: IOERR: {:?}", h.out);
    }
    assert_eq!(h.victim_block()["errors"], 3, "{}", h.metrics);
    assert_eq!(h.victim_block()["writes"], 0, "{}", h.metrics);
}

#[test]
fn looping_chains_and_links_past_the_queue_are_dropped() {
    let Some(h) = hostile(
        "looping_chains_and_links_past_the_queue_are_dropped",
        "loop",
        false,
    ) else {
        return;
    };
    assert_eq!(h.out.value("hostile-loop-used"), Some("0"), "{:?}", h.out);
    assert_eq!(h.out.value("hostile-next-used"), Some("0"), "{:?}", h.out);
    assert_eq!(h.victim_block()["errors"], 2, "{}", h.metrics);
}

#[test]
fn lengths_near_u32_max_and_4_gib_chains_are_refused() {
    let Some(h) = hostile(
        "lengths_near_u32_max_and_4_gib_chains_are_refused",
        "huge",
        false,
    ) else {
        return;
    };
    assert_eq!(h.out.value("hostile-huge-status"), Some("1"), "{:?}", h.out);
    assert_eq!(h.out.value("hostile-4g-used"), Some("0"), "{:?}", h.out);
    assert_eq!(h.victim_block()["errors"], 2, "{}", h.metrics);
    assert_eq!(h.victim_block()["read_bytes"], 0, "{}", h.metrics);
}

#[test]
fn queues_of_invalid_sizes_and_addresses_need_a_reset() {
    let Some(h) = hostile(
        "queues_of_invalid_sizes_and_addresses_need_a_reset",
        "badqueue",
        false,
    ) else {
        return;
    };
    assert_eq!(h.out.value("hostile-needs-reset"), Some("6"), "{:?}", h.out);
    assert_eq!(h.out.value("hostile-recovered"), Some("0"), "{:?}", h.out);
    assert_eq!(h.victim_mmio()["needs_reset"], 6, "{}", h.metrics);
    // QueueNum 3, 0 and 512 and a misaligned table: values refused.
    assert!(
        u(&h.victim_mmio()["ignored_accesses"]) >= 4,
        "{}",
        h.metrics
    );
    assert_eq!(h.victim_block()["reads"], 1, "{}", h.metrics);
    assert_eq!(h.victim_block()["errors"], 0, "{}", h.metrics);
}

#[test]
fn an_avail_index_far_ahead_breaks_the_queue_until_it_is_put_right() {
    let Some(h) = hostile(
        "an_avail_index_far_ahead_breaks_the_queue_until_it_is_put_right",
        "ahead",
        false,
    ) else {
        return;
    };
    assert_eq!(h.out.value("hostile-ahead-used"), Some("0"), "{:?}", h.out);
    assert_eq!(
        h.out.value("hostile-ahead-status"),
        Some("0"),
        "{:?}",
        h.out
    );
    assert!(u(&h.victim_mmio()["queue_errors"]) >= 1, "{}", h.metrics);
    assert_eq!(h.victim_block()["reads"], 1, "{}", h.metrics);
}

/// The hang the `block_requestq` fuzz target found: a used ring whose
/// flags are the available index made the device's pass never end, and
/// with it the VMM's event loop (the check disk and the entropy device
/// then never answered).
#[test]
fn a_used_ring_laid_over_the_avail_index_does_not_hold_the_vmm() {
    let Some(h) = hostile(
        "a_used_ring_laid_over_the_avail_index_does_not_hold_the_vmm",
        "overlap",
        false,
    ) else {
        return;
    };
    assert_eq!(
        h.out.value("hostile-overlap-used"),
        Some("1"),
        "{:?}",
        h.out
    );
    assert!(u(&h.victim_mmio()["queue_errors"]) >= 1, "{}", h.metrics);
}

#[test]
fn writes_to_a_read_only_disk_are_refused() {
    let Some(h) = hostile("writes_to_a_read_only_disk_are_refused", "rowrite", true) else {
        return;
    };
    assert_eq!(
        h.out.value("hostile-rowrite-status"),
        Some("1"),
        "{:?}",
        h.out
    );
    assert_eq!(
        h.out.value("hostile-roread-status"),
        Some("0"),
        "{:?}",
        h.out
    );
    assert_eq!(h.victim_block()["errors"], 1, "{}", h.metrics);
    assert_eq!(h.victim_block()["writes"], 0, "{}", h.metrics);
    assert_eq!(h.victim_block()["reads"], 1, "{}", h.metrics);
}

#[test]
fn register_accesses_of_every_width_at_every_offset_are_survived() {
    let Some(h) = hostile(
        "register_accesses_of_every_width_at_every_offset_are_survived",
        "widths",
        false,
    ) else {
        return;
    };
    assert_eq!(
        h.out.value("hostile-widths-status"),
        Some("0"),
        "{:?}",
        h.out
    );
    assert_eq!(
        h.out.value("hostile-widths-fnv"),
        Some(fnv1a(&h.victim[..SECTOR]).as_str()),
        "the victim works again after a reset"
    );
    // In the 256 register bytes alone, every access but the aligned
    // 4-byte ones of known registers is ignored: far more than 500.
    assert!(
        u(&h.victim_mmio()["ignored_accesses"]) > 500,
        "{}",
        h.metrics
    );
    assert_eq!(h.victim_block()["reads"], 1, "{}", h.metrics);
}

#[test]
fn notifications_before_the_driver_is_ready_are_harmless() {
    let Some(h) = hostile(
        "notifications_before_the_driver_is_ready_are_harmless",
        "early",
        false,
    ) else {
        return;
    };
    assert_eq!(h.out.value("hostile-early-used"), Some("0"), "{:?}", h.out);
    assert_eq!(
        h.out.value("hostile-early-status"),
        Some("0"),
        "{:?}",
        h.out
    );
    // Queue 5 (the device has one queue), and 1- and 2-byte notifies; the
    // 4-byte notify of queue 0 goes to its ioeventfd, which only wakes
    // the device once it is active.
    assert!(
        u(&h.victim_mmio()["ignored_accesses"]) >= 3,
        "{}",
        h.metrics
    );
    assert_eq!(h.victim_block()["reads"], 1, "{}", h.metrics);
    assert_eq!(h.victim_block()["errors"], 0, "{}", h.metrics);
}
