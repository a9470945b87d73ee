//! Tests of the guest image recipes in `resources/guest/` that need no
//! download and no kernel: the tiny init (built from source, run on the host
//! in its tool mode and checked against computations made here), the rootfs
//! and data-disk builders, the stock-kernel script's two steps on made-up
//! inputs, and the minimal kernel's config fragment.
//!
//! The tools they use (gcc, binutils, e2fsprogs, busybox-static, lz4,
//! xz-utils, zstd) are missing on some hosts: a test that lacks one says
//! `SKIPPED` on stderr through the one skip helper, unless
//! `PODVM_REQUIRE_GUEST_TOOLS=1` or `PODVM_REQUIRE_ALL=1` (set by CI) makes
//! that a failure.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// `resources/guest/` of this checkout.
fn guest_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("resources/guest")
}

/// Whether every tool (a command name, or an absolute path) is here. When
/// one is not, the caller skips its test, saying so on stderr.
fn have_tools(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| {
            if tool.starts_with('/') {
                !Path::new(tool).exists()
            } else {
                !Command::new("sh")
                    .args(["-c", &format!("command -v {tool}")])
                    .output()
                    .is_ok_and(|o| o.status.success())
            }
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    testkit::skip(
        testkit::Need::GuestTools,
        test,
        format_args!("needs {}", missing.join(", ")),
    );
    false
}

/// Runs a command, panicking with its output when it cannot start.
fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must succeed; returns its stdout.
fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("tool output is UTF-8")
}

/// The tiny init, built once per test run by `init/build.sh`.
fn init_binary() -> &'static Path {
    static INIT: OnceLock<PathBuf> = OnceLock::new();
    INIT.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("guest-init");
        // Warnings are errors here (not for users, whose gcc may differ).
        run_ok(
            Command::new("sh")
                .arg(guest_dir().join("init/build.sh"))
                .arg(&dir)
                .env("PODVM_INIT_WERROR", "1"),
        );
        dir.join("podvm-init")
    })
}

/// FNV-1a, 64-bit: computed independently of init.c.
fn fnv1a64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Deterministic bytes that are not all alike (xorshift64).
fn pattern(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect()
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[test]
fn fnv1a64_reference_vectors() {
    // From the FNV reference test suite.
    assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
    assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
}

#[test]
fn init_is_a_static_executable_without_interpreter() {
    if !have_tools("init_is_a_static_executable_without_interpreter", &["gcc"]) {
        return;
    }
    let elf = std::fs::read(init_binary()).expect("read podvm-init");
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not ELFCLASS64");
    assert_eq!(u16_at(&elf, 16), 2, "not ET_EXEC (a PIE or a library?)");
    assert_eq!(u16_at(&elf, 18), 0x3e, "not x86_64");
    let phoff = u64_at(&elf, 32) as usize;
    let phentsize = usize::from(u16_at(&elf, 54));
    let phnum = usize::from(u16_at(&elf, 56));
    for i in 0..phnum {
        let p_type = u32_at(&elf, phoff + i * phentsize);
        assert_ne!(p_type, 3, "has a PT_INTERP: not static");
        assert_ne!(p_type, 2, "has a PT_DYNAMIC: not static");
    }
    assert!(elf.len() < 64 * 1024, "podvm-init is {} bytes", elf.len());
}

#[test]
fn init_uses_no_vector_or_float_registers() {
    if !have_tools(
        "init_uses_no_vector_or_float_registers",
        &["gcc", "objdump"],
    ) {
        return;
    }
    // KVM's instruction emulator (HOST.md) stops on any SSE/AVX instruction.
    let dis = run_ok(Command::new("objdump").arg("-d").arg(init_binary()));
    let bad: Vec<&str> = dis
        .lines()
        .filter(|l| {
            ["%xmm", "%ymm", "%zmm", "%st", "%mm"]
                .iter()
                .any(|r| l.contains(r))
        })
        .collect();
    assert!(
        bad.is_empty(),
        "vector/x87 instructions:\n{}",
        bad.join("\n")
    );
    assert!(dis.contains("<_start>:"), "no _start in:\n{dis}");
}

#[test]
fn init_checksum_matches_an_independent_fnv1a64() {
    if !have_tools("init_checksum_matches_an_independent_fnv1a64", &["gcc"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // Empty, short, and longer than init's 64 KiB read buffer, not a
    // multiple of it.
    for (name, data) in [
        ("empty", Vec::new()),
        ("hello", b"hello".to_vec()),
        ("big", pattern(200 * 1024 + 17, 0x1234_5678)),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, &data).expect("write");
        let out = run_ok(Command::new(init_binary()).arg("--checksum").arg(&path));
        assert_eq!(
            out,
            format!(
                "podvm-init: disk {} bytes={} fnv1a64={:016x}\n",
                path.display(),
                data.len(),
                fnv1a64(&data)
            )
        );
    }
}

#[test]
fn init_checksum_of_a_missing_file_fails_with_errno() {
    if !have_tools("init_checksum_of_a_missing_file_fails_with_errno", &["gcc"]) {
        return;
    }
    let out = run(Command::new(init_binary()).args(["--checksum", "/nonexistent/disk"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "podvm-init: FAIL open /nonexistent/disk: errno 2\n"
    );
}

#[test]
fn init_without_arguments_prints_usage() {
    if !have_tools("init_without_arguments_prints_usage", &["gcc"]) {
        return;
    }
    let out = run(&mut Command::new(init_binary()));
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: podvm-init"));
}

/// The plan lines init prints for a valid `podvm.ip=` (computed here).
fn ip_plan(ip: &str, prefix: u32, iface: &str) -> String {
    let mask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
    format!("podvm-init: plan ip={ip} netmask={mask} iface={iface}\n")
}

#[test]
fn init_parses_the_kernel_command_line() {
    if !have_tools("init_parses_the_kernel_command_line", &["gcc"]) {
        return;
    }
    let bad_ip = "podvm-init: FAIL bad podvm.ip= (want A.B.C.D/LEN)\n";
    let cases: Vec<(&str, String, i32)> = vec![
        ("", "podvm-init: plan errors=0\n".into(), 0),
        (
            // As /proc/cmdline gives it: other parameters, a final newline.
            "console=ttyS0 reboot=k panic=1 podvm.check_disk=/dev/vda podvm.ip=10.0.0.2/24\n",
            format!(
                "podvm-init: plan check_disk=/dev/vda\n{}podvm-init: plan errors=0\n",
                ip_plan("10.0.0.2", 24, "eth0")
            ),
            0,
        ),
        (
            "podvm.ip=192.168.100.7/20\tpodvm.iface=eth1 podvm.exec=/bin/sh",
            format!(
                "{}podvm-init: plan exec=/bin/sh\npodvm-init: plan errors=0\n",
                ip_plan("192.168.100.7", 20, "eth1")
            ),
            0,
        ),
        (
            "podvm.ip=1.2.3.4/32",
            format!(
                "{}podvm-init: plan errors=0\n",
                ip_plan("1.2.3.4", 32, "eth0")
            ),
            0,
        ),
        (
            "podvm.ip=0.0.0.0/0",
            format!(
                "{}podvm-init: plan errors=0\n",
                ip_plan("0.0.0.0", 0, "eth0")
            ),
            0,
        ),
        (
            // Only whole parameters count.
            "xpodvm.ip=1.2.3.4/8 foo=podvm.check_disk=/dev/vda",
            "podvm-init: plan errors=0\n".into(),
            0,
        ),
        (
            "podvm.ip=10.0.0.256/24",
            format!("{bad_ip}podvm-init: plan errors=1\n"),
            1,
        ),
        (
            "podvm.ip=10.0.0.2",
            format!("{bad_ip}podvm-init: plan errors=1\n"),
            1,
        ),
        (
            "podvm.ip=10.0.0.2/33",
            format!("{bad_ip}podvm-init: plan errors=1\n"),
            1,
        ),
        (
            "podvm.ip=10.0.0/24",
            format!("{bad_ip}podvm-init: plan errors=1\n"),
            1,
        ),
        (
            "podvm.ip=10.0.0.2/24x",
            format!("{bad_ip}podvm-init: plan errors=1\n"),
            1,
        ),
        (
            "podvm.ip=",
            format!("{bad_ip}podvm-init: plan errors=1\n"),
            1,
        ),
        (
            "podvm.check_disk= podvm.iface=",
            "podvm-init: FAIL bad podvm.check_disk=\npodvm-init: FAIL bad podvm.iface=\n\
             podvm-init: plan errors=2\n"
                .into(),
            1,
        ),
        (
            // An interface name longer than IFNAMSIZ - 1.
            "podvm.iface=abcdefghijklmnop podvm.ip=10.1.2.3/8",
            format!(
                "podvm-init: FAIL bad podvm.iface=\n{}podvm-init: plan errors=1\n",
                ip_plan("10.1.2.3", 8, "eth0")
            ),
            1,
        ),
    ];
    for (cmdline, want, code) in cases {
        let out = run(Command::new(init_binary()).args(["--parse-cmdline", cmdline]));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            want,
            "for {cmdline:?}"
        );
        assert_eq!(out.status.code(), Some(code), "for {cmdline:?}");
    }
}

#[test]
fn init_runs_its_checks_as_pid_1_of_a_namespace() {
    if !have_tools(
        "init_runs_its_checks_as_pid_1_of_a_namespace",
        &["gcc", "unshare"],
    ) {
        return;
    }
    // PID 1 of new user, PID, mount and network namespaces, chrooted into a
    // directory holding the init, a "disk" and its command line. The user
    // namespace keeps ioperm (port 0x3f0) and devtmpfs out of reach: both
    // fail there, the second with a FAIL line.
    let root = tempfile::tempdir().expect("tempdir");
    std::fs::copy(init_binary(), root.path().join("init")).expect("copy init");
    let disk = pattern(100_000, 7);
    std::fs::write(root.path().join("disk"), &disk).expect("write disk");
    std::fs::write(
        root.path().join("cmdline"),
        "console=ttyS0 reboot=k podvm.check_disk=/disk podvm.iface=lo \
         podvm.ip=127.0.0.2/8 podvm.exec=/nonexistent\n",
    )
    .expect("write cmdline");
    let out = run(Command::new("unshare")
        .args([
            "--user",
            "--map-root-user",
            "--pid",
            "--fork",
            "--mount",
            "--net",
        ])
        .arg(format!("--root={}", root.path().display()))
        .args(["/init", "--cmdline-file", "/cmdline"]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !stdout.contains("podvm-init: ready") && stderr.starts_with("unshare:") {
        testkit::skip(
            testkit::Need::GuestTools,
            "init_runs_its_checks_as_pid_1_of_a_namespace",
            format_args!("cannot run init in namespaces: {}", stderr.trim_end()),
        );
        return;
    }
    let lines: Vec<&str> = stdout.lines().collect();
    let at = |want: &str| {
        lines
            .iter()
            .position(|l| *l == want)
            .unwrap_or_else(|| panic!("no {want:?} in:\n{stdout}"))
    };
    let ready = at("podvm-init: ready");
    let disk_line = at(&format!(
        "podvm-init: disk /disk bytes={} fnv1a64={:016x}",
        disk.len(),
        fnv1a64(&disk)
    ));
    let net = at("podvm-init: net lo 127.0.0.2/8 up");
    let failed = at("podvm-init: failed 1");
    let exec = at("podvm-init: exec /nonexistent");
    let exec_failed = at("podvm-init: FAIL exec /nonexistent: errno 2");
    assert!(
        ready < disk_line && disk_line < net && net < failed,
        "{stdout}"
    );
    assert!(failed < exec && exec < exec_failed, "{stdout}");
    assert!(
        stdout.contains("podvm-init: FAIL mount /dev: errno 1"),
        "{stdout}"
    );
    // reboot(RESTART) in a PID namespace ends its init with SIGHUP, which
    // unshare passes on.
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(1), "{out:?}");
}

/// `debugfs -R REQUEST IMAGE`'s output.
fn debugfs(image: &Path, request: &str) -> String {
    run_ok(Command::new("debugfs").args(["-R", request]).arg(image))
}

#[test]
fn rootfs_image_holds_busybox_and_the_tiny_init() {
    let tools = ["gcc", "mkfs.ext4", "e2fsck", "debugfs", "/bin/busybox"];
    if !have_tools("rootfs_image_holds_busybox_and_the_tiny_init", &tools) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("rootfs.ext4");
    run_ok(
        Command::new(guest_dir().join("rootfs.sh"))
            .arg(&image)
            .arg("16"),
    );
    assert_eq!(std::fs::metadata(&image).expect("image").len(), 16 << 20);
    // A clean file system (-n: read-only check).
    run_ok(Command::new("e2fsck").arg("-fn").arg(&image));

    let init = debugfs(&image, "stat /sbin/init");
    assert!(init.contains("Type: regular"), "{init}");
    assert!(init.contains("Mode:  0755"), "{init}");
    let copy = dir.path().join("init-copy");
    debugfs(&image, &format!("dump /sbin/init {}", copy.display()));
    assert_eq!(
        std::fs::read(&copy).expect("dumped init"),
        std::fs::read(init_binary()).expect("built init"),
        "/sbin/init is not the tiny init"
    );
    let sh = debugfs(&image, "stat /bin/sh");
    assert!(sh.contains("Type: symlink"), "{sh}");
    assert!(sh.contains("\"/bin/busybox\""), "{sh}");
    let ls = debugfs(&image, "ls -l /");
    for dir in ["proc", "sys", "dev", "tmp", "etc", "bin", "sbin"] {
        assert!(ls.contains(&format!(" {dir}")), "no /{dir} in:\n{ls}");
    }
}

#[test]
fn data_disk_checksum_is_what_init_prints() {
    let tools = ["gcc", "mkfs.ext4", "debugfs"];
    if !have_tools("data_disk_checksum_is_what_init_prints", &tools) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("data.ext4");
    run_ok(
        Command::new(guest_dir().join("data-disk.sh"))
            .arg(&image)
            .arg("4"),
    );
    assert_eq!(
        debugfs(&image, "cat /hello.txt"),
        "hello from the podvm data disk\n"
    );
    let data = std::fs::read(&image).expect("image");
    assert_eq!(data.len(), 4 << 20);
    let out = run_ok(Command::new(init_binary()).arg("--checksum").arg(&image));
    assert_eq!(
        out,
        format!(
            "podvm-init: disk {} bytes={} fnv1a64={:016x}\n",
            image.display(),
            data.len(),
            fnv1a64(&data)
        )
    );
}

/// A made-up bzImage: `setup_sects` 1, the payload compressed by `format`
/// ("lz4": legacy frames, as Debian's cloud kernel; "xz", as its generic
/// kernel) plus the uncompressed size, as the kernel's build appends it, at
/// 1 KiB + `payload_offset`, and trailing bytes after it. With
/// `header_right` false the header points elsewhere.
fn fake_bzimage(dir: &Path, payload: &[u8], format: &str, header_right: bool) -> PathBuf {
    let raw = dir.join("payload");
    std::fs::write(&raw, payload).expect("write payload");
    let out = match format {
        "lz4" => run(Command::new("lz4").args(["-l", "-c"]).arg(&raw)),
        "xz" => run(Command::new("xz").args(["--check=crc32", "-c"]).arg(&raw)),
        _ => unreachable!("no such format {format}"),
    };
    assert!(out.status.success(), "{format}: {out:?}");
    let mut compressed = out.stdout;
    let magic: &[u8] = if format == "lz4" {
        &[0x02, 0x21, 0x4c, 0x18]
    } else {
        &[0xfd, b'7', b'z', b'X', b'Z', 0]
    };
    assert!(compressed.starts_with(magic), "{format}: unexpected magic");
    compressed.extend_from_slice(&(payload.len() as u32).to_le_bytes());

    let payload_offset = 100u32;
    let mut image = vec![0u8; 1024 + payload_offset as usize];
    image[0x1f1] = 1;
    image[0x202..0x206].copy_from_slice(b"HdrS");
    let header_offset = if header_right { payload_offset } else { 7 };
    image[0x248..0x24c].copy_from_slice(&header_offset.to_le_bytes());
    image[0x24c..0x250].copy_from_slice(&(compressed.len() as u32).to_le_bytes());
    image.extend_from_slice(&compressed);
    if header_right {
        image.extend_from_slice(&[0xa5; 300]);
    }
    let path = dir.join("bzImage");
    std::fs::write(&path, image).expect("write bzImage");
    path
}

#[test]
fn stock_kernel_unpacks_the_payload_of_a_bzimage() {
    let tools = ["gcc", "lz4", "xz", "readelf", "od"];
    if !have_tools("stock_kernel_unpacks_the_payload_of_a_bzimage", &tools) {
        return;
    }
    // Any ELF file stands for the kernel: the tiny init, made larger than
    // one 8 MiB LZ4 legacy block so that several frames are read.
    let mut elf = std::fs::read(init_binary()).expect("init");
    // (A repeated 4 KiB block: quick to compress, yet not all alike.)
    elf.extend(pattern(4096, 42).repeat(9 * 256));
    let script = guest_dir().join("stock-kernel.sh");
    // Without a right header only LZ4 is searched for.
    for (format, header_right) in [("lz4", true), ("lz4", false), ("xz", true)] {
        let dir = tempfile::tempdir().expect("tempdir");
        let bz = fake_bzimage(dir.path(), &elf, format, header_right);
        let out = dir.path().join("vmlinux");
        let res = run(Command::new(&script)
            .arg("--extract-vmlinux")
            .arg(&bz)
            .arg(&out));
        let what = format!("{format}, header_right={header_right}");
        assert!(
            res.status.success(),
            "{what}: {}",
            String::from_utf8_lossy(&res.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&res.stdout),
            format!("{}\n", format.to_uppercase()),
            "{what}"
        );
        // The tiny init has no PVH note: the script says so.
        assert!(String::from_utf8_lossy(&res.stderr).contains("no PVH entry note"));
        assert!(std::fs::read(&out).expect("vmlinux") == elf, "{what}");
    }

    // A payload that is not an ELF file is refused.
    let dir = tempfile::tempdir().expect("tempdir");
    let bz = fake_bzimage(dir.path(), b"not an elf file at all", "lz4", true);
    let out = dir.path().join("vmlinux");
    let res = run(Command::new(&script)
        .arg("--extract-vmlinux")
        .arg(&bz)
        .arg(&out));
    assert_eq!(res.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&res.stderr).contains("is not an ELF file"));
    assert!(!out.exists());
}

/// A made-up kernel module: an ELF object whose `.modinfo` says `depends=`.
fn fake_module(dir: &Path, ko: &Path, depends: &str) -> Vec<u8> {
    let info = dir.join("modinfo");
    std::fs::write(&info, format!("license=GPL\0depends={depends}\0name=x\0")).expect("modinfo");
    let empty = dir.join("empty.o");
    if !empty.exists() {
        run_ok(
            Command::new("gcc")
                .args(["-c", "-x", "c", "/dev/null", "-o"])
                .arg(&empty),
        );
    }
    std::fs::create_dir_all(ko.parent().expect("parent")).expect("mkdir");
    run_ok(
        Command::new("objcopy")
            .arg(format!("--add-section=.modinfo={}", info.display()))
            .arg("--set-section-flags=.modinfo=alloc,load,readonly,data")
            .arg(&empty)
            .arg(ko),
    );
    std::fs::read(ko).expect("module")
}

#[test]
fn stock_kernel_stages_modules_after_their_dependencies() {
    let tools = ["gcc", "objcopy", "xz", "zstd"];
    if !have_tools(
        "stock_kernel_stages_modules_after_their_dependencies",
        &tools,
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let moddir = dir.path().join("lib/modules/6.99.0-test");
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).expect("mkdir");
    // top-mod (a dash in its file name) needs mid and leaf; mid needs leaf;
    // mid is xz-compressed and leaf zstd-compressed, as some packages ship.
    let top = fake_module(&work, &moddir.join("kernel/a/top-mod.ko"), "mid,leaf");
    let mid = fake_module(&work, &moddir.join("kernel/b/mid.ko"), "leaf");
    let leaf = fake_module(&work, &moddir.join("kernel/c/leaf.ko"), "");
    run_ok(Command::new("xz").arg(moddir.join("kernel/b/mid.ko")));
    run_ok(
        Command::new("zstd")
            .args(["-q", "--rm"])
            .arg(moddir.join("kernel/c/leaf.ko")),
    );
    std::fs::write(moddir.join("modules.builtin"), "kernel/fs/ext4/ext4.ko\n").expect("builtin");

    let dest = dir.path().join("dest");
    let script = guest_dir().join("stock-kernel.sh");
    let order = run_ok(
        Command::new(&script)
            .arg("--stage-modules")
            .arg(&moddir)
            .arg(&dest)
            .arg("ext4 top-mod leaf"),
    );
    // ext4 is built in: nothing to load.
    assert_eq!(order, "leaf mid top_mod\n");
    assert_eq!(std::fs::read(dest.join("leaf.ko")).expect("leaf"), leaf);
    assert_eq!(std::fs::read(dest.join("mid.ko")).expect("mid"), mid);
    assert_eq!(std::fs::read(dest.join("top_mod.ko")).expect("top"), top);

    let res = run(Command::new(&script)
        .arg("--stage-modules")
        .arg(&moddir)
        .arg(&dest)
        .arg("virtio_nothing"));
    assert_eq!(res.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&res.stderr).contains("module virtio_nothing is neither"),
        "{}",
        String::from_utf8_lossy(&res.stderr)
    );
}

#[test]
fn kernel_config_fragment_has_what_podvm_needs() {
    let text = std::fs::read_to_string(guest_dir().join("podvm-kernel.config"))
        .expect("read podvm-kernel.config");
    let mut set = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(opt) = line
            .strip_prefix("# ")
            .and_then(|l| l.strip_suffix(" is not set"))
        {
            assert!(
                set.insert(opt.to_string(), "n".to_string()).is_none(),
                "{opt} twice"
            );
        } else if !line.is_empty() && !line.starts_with('#') {
            let (opt, value) = line.split_once('=').expect("a CONFIG_X=value line");
            assert!(opt.starts_with("CONFIG_"), "bad line {line:?}");
            assert_ne!(value, "m", "{opt}=m: the kernel has no modules");
            assert!(
                set.insert(opt.to_string(), value.to_string()).is_none(),
                "{opt} twice"
            );
        }
    }
    let want_y = [
        "CONFIG_64BIT",
        "CONFIG_SMP",
        // virtio-mmio with devices from the command line, and the devices
        "CONFIG_VIRTIO_MMIO",
        "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES",
        "CONFIG_VIRTIO_BLK",
        "CONFIG_VIRTIO_NET",
        "CONFIG_VIRTIO_VSOCKETS",
        "CONFIG_HW_RANDOM_VIRTIO",
        // root and data disks, early user space
        "CONFIG_EXT4_FS",
        "CONFIG_DEVTMPFS",
        "CONFIG_PROC_FS",
        "CONFIG_SYSFS",
        "CONFIG_BINFMT_ELF",
        "CONFIG_BLK_DEV_INITRD",
        // console, reset through the i8042
        "CONFIG_SERIAL_8250",
        "CONFIG_SERIAL_8250_CONSOLE",
        "CONFIG_SERIO_I8042",
        // KVM guest, PVH entry, ACPI or MP table
        "CONFIG_HYPERVISOR_GUEST",
        "CONFIG_PARAVIRT",
        "CONFIG_KVM_GUEST",
        "CONFIG_PVH",
        "CONFIG_ACPI",
        "CONFIG_X86_MPPARSE",
        // ioperm() for the init's boot-timer write
        "CONFIG_X86_IOPL_IOPERM",
        // sockets for the network checks
        "CONFIG_NET",
        "CONFIG_UNIX",
        "CONFIG_INET",
    ];
    for opt in want_y {
        assert_eq!(set.get(opt).map(String::as_str), Some("y"), "{opt}");
    }
    for opt in ["CONFIG_MODULES", "CONFIG_PCI"] {
        assert_eq!(
            set.get(opt).map(String::as_str),
            Some("n"),
            "{opt} must be off"
        );
    }
    // Compressed initramfs formats are off: decompression is slow emulated.
    for opt in ["GZIP", "BZIP2", "LZMA", "XZ", "LZO", "LZ4", "ZSTD"] {
        assert_eq!(
            set.get(&format!("CONFIG_RD_{opt}")).map(String::as_str),
            Some("n")
        );
    }
}

#[test]
fn guest_scripts_are_valid_posix_sh() {
    for script in [
        "build-kernel.sh",
        "stock-kernel.sh",
        "rootfs.sh",
        "data-disk.sh",
        "prepare.sh",
        "lib.sh",
        "init/build.sh",
    ] {
        let path = guest_dir().join(script);
        run_ok(Command::new("sh").arg("-n").arg(&path));
        if script != "lib.sh" {
            let mode = std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&path).expect("script").permissions(),
            );
            assert!(mode & 0o111 != 0, "{script} is not executable");
        }
    }
}
