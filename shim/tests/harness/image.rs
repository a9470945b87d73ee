//! A small OCI image built from Debian's static busybox, as an OCI layout
//! tar that `ctr images import` takes: no registry needed.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;

/// The image's name once imported.
pub const IMAGE: &str = "docker.io/podvm/busybox:test";

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("running sha256sum");
    assert!(out.status.success());
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// Puts `blob` in the layout's blob store; its digest and size.
fn add_blob(layout: &Path, file: &Path) -> (String, u64) {
    let digest = sha256(file);
    let size = fs::metadata(file).unwrap().len();
    fs::rename(file, layout.join("blobs/sha256").join(&digest)).unwrap();
    (format!("sha256:{digest}"), size)
}

fn tar(dir: &Path, out: &Path) {
    let st = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "-C",
        ])
        .arg(dir)
        .arg("-cf")
        .arg(out)
        .arg(".")
        .status()
        .expect("running tar");
    assert!(st.success(), "tar failed");
}

/// Writes the image tar into `work` and returns its path.
pub fn build(work: &Path) -> std::path::PathBuf {
    let rootfs = work.join("image-rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    for d in ["proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    fs::copy("/bin/busybox", rootfs.join("bin/busybox"))
        .expect("copying /bin/busybox (apt-get install busybox-static)");
    for applet in [
        "sh", "echo", "cat", "sleep", "ls", "true", "false", "ps", "kill", "wc",
    ] {
        symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
    let layout = work.join("image-layout");
    fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    let layer = work.join("layer.tar");
    tar(&rootfs, &layer);
    let diff_id = format!("sha256:{}", sha256(&layer));
    let (layer_digest, layer_size) = add_blob(&layout, &layer);
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let cfile = work.join("config.json");
    fs::write(&cfile, serde_json::to_vec(&config).unwrap()).unwrap();
    let (config_digest, config_size) = add_blob(&layout, &cfile);
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config_size},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    });
    let mfile = work.join("manifest.json");
    fs::write(&mfile, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let (manifest_digest, manifest_size) = add_blob(&layout, &mfile);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": manifest_digest,
            "size": manifest_size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": IMAGE, "org.opencontainers.image.ref.name": "test"},
        }],
    });
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).unwrap(),
    )
    .unwrap();
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let out = work.join("busybox-image.tar");
    tar(&layout, &out);
    out
}
