use super::*;
use std::path::PathBuf;

fn controller() -> (Controller, EventLoop) {
    (
        Controller::new(
            "pod-1".into(),
            PendingConfig::default(),
            Instant::now(),
            None,
            None,
        ),
        EventLoop::new().unwrap(),
    )
}

#[test]
fn configuration_builds_up_before_boot() {
    let (mut c, mut ev) = controller();
    let info = c.handle(VmmAction::DescribeInstance, &mut ev).unwrap();
    let VmmData::InstanceInfo(info) = info else {
        panic!("{info:?}")
    };
    assert_eq!(
        (info.id.as_str(), info.state),
        ("pod-1", InstanceState::NotStarted)
    );
    let m = MachineConfig {
        vcpu_count: 2,
        mem_size_mib: 256,
        ..MachineConfig::default()
    };
    assert_eq!(
        c.handle(VmmAction::PutMachineConfig(m), &mut ev),
        Ok(VmmData::Empty)
    );
    let patch = MachineConfigUpdate {
        mem_size_mib: Some(512),
        ..Default::default()
    };
    c.handle(VmmAction::PatchMachineConfig(patch), &mut ev)
        .unwrap();
    let got = c.handle(VmmAction::GetMachineConfig, &mut ev).unwrap();
    assert_eq!(
        got,
        VmmData::MachineConfig(MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 512,
            ..MachineConfig::default()
        })
    );
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::write(&a, [0u8; 512]).unwrap();
    std::fs::write(&b, [0u8; 512]).unwrap();
    let drive = |path: &std::path::Path| DriveConfig {
        drive_id: "rootfs".into(),
        path_on_host: PathBuf::from(path),
        is_root_device: true,
        is_read_only: false,
        ..Default::default()
    };
    c.handle(VmmAction::PutDrive(drive(&a)), &mut ev).unwrap();
    c.handle(VmmAction::PutDrive(drive(&b)), &mut ev).unwrap();
    assert_eq!(c.config.drives.len(), 1, "a PUT with the same id replaces");
    c.handle(VmmAction::PutEntropy(None), &mut ev).unwrap();
    let VmmData::VmConfig(json) = c.handle(VmmAction::GetVmConfig, &mut ev).unwrap() else {
        panic!()
    };
    assert_eq!(json["machine-config"]["mem_size_mib"], 512);
    assert_eq!(json["drives"][0]["path_on_host"], b.to_str().unwrap());
    assert_eq!(json["entropy"], serde_json::json!({}));
    assert!(json.get("boot-source").is_none());
}

#[test]
fn huge_pages_the_host_lacks_are_refused_at_the_call() {
    let Some(_pool) =
        testkit::HugePages::reserve("huge_pages_the_host_lacks_are_refused_at_the_call", 1)
    else {
        return;
    };
    let (mut c, mut ev) = controller();
    let free = crate::memory::free_huge_pages_2m().unwrap();
    let fits = MachineConfig {
        mem_size_mib: 2,
        huge_pages: resources::HugePageConfig::Hugetlbfs2M,
        ..MachineConfig::default()
    };
    // Too small a VM, but the pages are there: the spec is what fails.
    let err = c
        .handle(VmmAction::PutMachineConfig(fits), &mut ev)
        .unwrap_err();
    assert!(err.0.contains("too small"), "{err}");
    // At least the smallest memory the spec takes (16 MiB).
    let needed = (free + 1).max(8);
    let patch = MachineConfigUpdate {
        mem_size_mib: Some(2 * needed as usize),
        huge_pages: Some(resources::HugePageConfig::Hugetlbfs2M),
        ..Default::default()
    };
    let err = c
        .handle(VmmAction::PatchMachineConfig(patch), &mut ev)
        .unwrap_err();
    assert!(
        err.0.starts_with(&format!(
            "machine-config: huge_pages \"2M\": guest memory needs {needed} free 2 MiB huge pages, the host has {free} ("
        )),
        "{err}"
    );
    assert_eq!(
        c.config.machine,
        MachineConfig::default(),
        "a refused call changes nothing"
    );
}

#[test]
fn invalid_requests_name_the_problem() {
    let (mut c, mut ev) = controller();
    let zero = MachineConfig {
        vcpu_count: 0,
        ..MachineConfig::default()
    };
    assert_eq!(
        c.handle(VmmAction::PutMachineConfig(zero), &mut ev),
        Err(ActionError(
            "machine-config: vcpu_count must be at least 1".into()
        ))
    );
    let err = c.handle(VmmAction::InstanceStart, &mut ev).unwrap_err();
    assert!(err.0.contains("no boot source"), "{err}");
    assert_eq!(
        c.handle(VmmAction::Pause, &mut ev),
        Err(ActionError("cannot pause: the VM is not running".into()))
    );
    assert!(c.handle(VmmAction::Resume, &mut ev).is_err());
    assert_eq!(
        c.handle(VmmAction::SendCtrlAltDel, &mut ev),
        Err(ActionError(
            "cannot send Ctrl+Alt+Del: the VM is not running".into()
        ))
    );
    // Paths are checked at the call that names them.
    let boot = |kernel: &str, initrd: Option<&str>| {
        VmmAction::PutBootSource(BootSourceConfig {
            kernel_image_path: kernel.into(),
            boot_args: None,
            initrd_path: initrd.map(Into::into),
        })
    };
    assert_eq!(
        c.handle(boot("/nonexistent/vmlinux", None), &mut ev),
        Err(ActionError(
            "boot-source: kernel_image_path /nonexistent/vmlinux: No such file or directory (os error 2)"
                .into()
        ))
    );
    assert_eq!(
        c.handle(boot("/", None), &mut ev),
        Err(ActionError(
            "boot-source: kernel_image_path /: not a regular file".into()
        ))
    );
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    std::fs::write(&kernel, b"not a kernel").unwrap();
    let k = kernel.to_str().unwrap();
    assert!(c
        .handle(boot(k, Some("/nonexistent/initrd")), &mut ev)
        .unwrap_err()
        .0
        .starts_with("boot-source: initrd_path /nonexistent/initrd: "));
    let disk = |path: &str, ro: bool| {
        VmmAction::PutDrive(DriveConfig {
            drive_id: "d".into(),
            path_on_host: path.into(),
            is_read_only: ro,
            ..Default::default()
        })
    };
    assert_eq!(
        c.handle(disk("/nonexistent.img", false), &mut ev),
        Err(ActionError(
            "drive \"d\": path_on_host /nonexistent.img: No such file or directory (os error 2)"
                .into()
        ))
    );
    assert_eq!(
        c.handle(disk("/", true), &mut ev),
        Err(ActionError(
            "drive \"d\": path_on_host /: not a regular file or block device".into()
        ))
    );
    assert!(c.config.drives.is_empty(), "refused drives are not kept");
    // A kernel that exists but is none fails at InstanceStart.
    c.handle(boot(k, None), &mut ev).unwrap();
    let err = c.handle(VmmAction::InstanceStart, &mut ev).unwrap_err();
    assert!(err.0.starts_with("InstanceStart: "), "{err}");
    // A PATCH of an interface that does not exist names it; one that
    // does is answered.
    let patch = || {
        VmmAction::PatchNetworkInterface(resources::action::NetworkInterfaceUpdate {
            iface_id: "eth9".into(),
            rx_rate_limiter: None,
            tx_rate_limiter: None,
        })
    };
    assert_eq!(
        c.handle(patch(), &mut ev),
        Err(ActionError(
            "network interface \"eth9\": no such interface".into()
        ))
    );
    c.handle(
        VmmAction::PutNetworkInterface(resources::NetConfig {
            iface_id: "eth9".into(),
            host_dev_name: "tap9".into(),
            guest_mac: None,
            ..Default::default()
        }),
        &mut ev,
    )
    .unwrap();
    assert_eq!(c.handle(patch(), &mut ev), Ok(VmmData::Empty));
    // Shutdown before boot ends the instance cleanly.
    assert_eq!(c.handle(VmmAction::Shutdown, &mut ev), Ok(VmmData::Empty));
    assert_eq!(ev.outcome(), Some(VmExit::ApiShutdown));
}

#[test]
fn rate_limiters_are_kept_and_patched_bucket_by_bucket_before_boot() {
    use resources::action::{DriveUpdate, NetworkInterfaceUpdate};
    use resources::{RateLimiterConfig, TokenBucketConfig};
    let bucket = |size, refill_time| {
        Some(TokenBucketConfig {
            size,
            one_time_burst: None,
            refill_time,
        })
    };
    let both = RateLimiterConfig {
        bandwidth: bucket(4096, 100),
        ops: bucket(10, 100),
    };
    let (mut c, mut ev) = controller();
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("d.img");
    std::fs::write(&disk, [0u8; 512]).unwrap();
    c.handle(
        VmmAction::PutDrive(DriveConfig {
            drive_id: "d".into(),
            path_on_host: disk.clone(),
            rate_limiter: Some(both),
            ..Default::default()
        }),
        &mut ev,
    )
    .unwrap();
    c.handle(
        VmmAction::PutNetworkInterface(resources::NetConfig {
            iface_id: "e".into(),
            host_dev_name: "t".into(),
            rx_rate_limiter: Some(both),
            ..Default::default()
        }),
        &mut ev,
    )
    .unwrap();
    c.handle(VmmAction::PutEntropy(Some(both)), &mut ev)
        .unwrap();
    // Only the operations bucket of the drive goes (size 0).
    c.handle(
        VmmAction::PatchDrive(DriveUpdate {
            drive_id: "d".into(),
            path_on_host: None,
            rate_limiter: Some(RateLimiterConfig {
                bandwidth: None,
                ops: bucket(0, 0),
            }),
        }),
        &mut ev,
    )
    .unwrap();
    // The interface gains a transmit limit; its receive one stays.
    c.handle(
        VmmAction::PatchNetworkInterface(NetworkInterfaceUpdate {
            iface_id: "e".into(),
            rx_rate_limiter: None,
            tx_rate_limiter: Some(RateLimiterConfig {
                bandwidth: None,
                ops: bucket(1, 1),
            }),
        }),
        &mut ev,
    )
    .unwrap();
    let VmmData::VmConfig(json) = c.handle(VmmAction::GetVmConfig, &mut ev).unwrap() else {
        panic!()
    };
    assert_eq!(
        json["drives"][0]["rate_limiter"],
        serde_json::json!({"bandwidth": {"size": 4096, "refill_time": 100}})
    );
    let net = &json["network-interfaces"][0];
    assert_eq!(net["rx_rate_limiter"]["ops"]["size"], 10);
    assert_eq!(
        net["tx_rate_limiter"],
        serde_json::json!({"ops": {"size": 1, "refill_time": 1}})
    );
    assert_eq!(json["entropy"]["rate_limiter"]["bandwidth"]["size"], 4096);
    // The spec built at InstanceStart carries them.
    let mut with_boot = c.config.clone();
    with_boot.boot_source = Some(BootSourceConfig {
        kernel_image_path: "/k".into(),
        boot_args: None,
        initrd_path: None,
    });
    let spec = with_boot.spec().unwrap();
    assert_eq!(spec.entropy_rate_limiter, Some(both));
    assert_eq!(spec.drives[0].rate_limiter.unwrap().ops, None);
    // A PATCH of a drive that does not exist names it.
    assert_eq!(
        c.handle(
            VmmAction::PatchDrive(DriveUpdate {
                drive_id: "nope".into(),
                path_on_host: None,
                rate_limiter: Some(both),
            }),
            &mut ev,
        ),
        Err(ActionError("drive \"nope\": no such drive".into()))
    );
}

#[test]
fn balloon_calls_before_boot_configure_or_are_refused_by_name() {
    use resources::{BalloonAction as B, BalloonConfig, HintingStart};
    let (mut c, mut ev) = controller();
    let mut call = |a: B| c.handle(VmmAction::Balloon(a), &mut ev);
    let no = "balloon: no balloon device was configured (PUT /balloon)";
    for a in [
        B::Describe,
        B::SetTarget(1),
        B::Stats,
        B::SetStatsInterval(1),
        B::StartHinting(HintingStart::default()),
        B::StopHinting,
        B::HintingStatus,
    ] {
        assert_eq!(call(a), Err(ActionError(no.into())), "{a:?}");
    }
    let cfg = BalloonConfig {
        amount_mib: 129,
        deflate_on_oom: true,
        ..Default::default()
    };
    assert_eq!(
        call(B::Put(cfg)),
        Err(ActionError(
            "balloon amount_mib 129 is more than mem_size_mib 128".into()
        ))
    );
    call(B::Put(BalloonConfig {
        amount_mib: 16,
        ..cfg
    }))
    .unwrap();
    assert_eq!(
        call(B::SetTarget(200)),
        Err(ActionError(
            "balloon amount_mib 200 is more than mem_size_mib 128".into()
        ))
    );
    call(B::SetTarget(32)).unwrap();
    call(B::SetStatsInterval(0)).unwrap();
    assert_eq!(
        call(B::Stats),
        Err(ActionError(
            "balloon statistics: not enabled (stats_polling_interval_s is 0)".into()
        ))
    );
    call(B::SetStatsInterval(5)).unwrap();
    assert_eq!(
        call(B::Stats),
        Err(ActionError(
            "balloon statistics: the VM is not running".into()
        ))
    );
    assert_eq!(
        call(B::StartHinting(HintingStart::default())),
        Err(ActionError(
            "balloon hinting/start: free page hinting is not enabled (free_page_hinting was false)"
                .into()
        ))
    );
    call(B::Put(BalloonConfig {
        free_page_hinting: true,
        stats_polling_interval_s: 5,
        amount_mib: 32,
        ..cfg
    }))
    .unwrap();
    assert_eq!(
        call(B::HintingStatus),
        Err(ActionError(
            "balloon hinting/status: the VM is not running".into()
        ))
    );
    let Ok(VmmData::Json(got)) = call(B::Describe) else {
        panic!()
    };
    assert_eq!(
        got,
        serde_json::json!({"amount_mib": 32, "deflate_on_oom": true,
            "stats_polling_interval_s": 5, "free_page_hinting": true,
            "free_page_reporting": false})
    );
    let VmmData::VmConfig(json) = c.handle(VmmAction::GetVmConfig, &mut ev).unwrap() else {
        panic!()
    };
    assert_eq!(json["balloon"]["amount_mib"], 32);
    // A snapshot brings its own configuration.
    assert!(c.configured());
}
