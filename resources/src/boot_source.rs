//! The boot source: kernel image, initrd and kernel command line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The command line a guest gets when the user gives none.
pub const DEFAULT_KERNEL_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";

/// The longest kernel command line podvm passes, in bytes, without the
/// terminating NUL. Linux on x86 copies at most `COMMAND_LINE_SIZE` (2048)
/// bytes including the NUL.
pub const MAX_KERNEL_CMDLINE_LEN: usize = 2047;

/// User input naming what the guest boots (Firecracker's `boot-source`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSourceConfig {
    /// Path of the kernel image on the host: an ELF `vmlinux` or a `bzImage`.
    pub kernel_image_path: PathBuf,
    /// Kernel command line; [`DEFAULT_KERNEL_CMDLINE`] when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_args: Option<String>,
    /// Path of an initial ramdisk on the host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_path: Option<PathBuf>,
}

impl BootSourceConfig {
    /// The command line the user asked for, or the default one.
    pub fn cmdline(&self) -> &str {
        self.boot_args.as_deref().unwrap_or(DEFAULT_KERNEL_CMDLINE)
    }
}

/// Adds kernel parameters to `cmdline`, before the first ` -- ` (what
/// follows it belongs to init, not to the kernel).
pub fn insert_kernel_args(cmdline: &str, args: &str) -> String {
    let (kernel, init) = split_init_args(cmdline);
    let mut out = kernel.trim_end().to_string();
    if !args.is_empty() {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(args);
    }
    if let Some(init) = init {
        out.push_str(" --");
        if !init.is_empty() {
            out.push(' ');
            out.push_str(init);
        }
    }
    out
}

/// Splits a command line into its kernel part and, after the first `--`
/// word, the part passed to init.
pub fn split_init_args(cmdline: &str) -> (&str, Option<&str>) {
    let mut offset = 0;
    for word in cmdline.split(' ') {
        if word == "--" {
            let init = cmdline[offset + 2..].trim_start();
            return (&cmdline[..offset], Some(init));
        }
        offset += word.len() + 1;
    }
    (cmdline, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args_go_before_the_init_args() {
        assert_eq!(
            insert_kernel_args("console=ttyS0", "root=/dev/vda"),
            "console=ttyS0 root=/dev/vda"
        );
        assert_eq!(
            insert_kernel_args("console=ttyS0 -- single x", "root=/dev/vda"),
            "console=ttyS0 root=/dev/vda -- single x"
        );
        assert_eq!(insert_kernel_args("-- single", "a=1"), "a=1 -- single");
        assert_eq!(insert_kernel_args("", "a=1"), "a=1");
        assert_eq!(insert_kernel_args("quiet --", "a=1"), "quiet a=1 --");
        assert_eq!(insert_kernel_args("x=--y", "a=1"), "x=--y a=1");
        assert_eq!(split_init_args("a -- b -- c"), ("a ", Some("b -- c")));
    }

    #[test]
    fn default_cmdline_applies_only_when_none_given() {
        let mut b = BootSourceConfig {
            kernel_image_path: "/k".into(),
            boot_args: None,
            initrd_path: None,
        };
        assert_eq!(b.cmdline(), DEFAULT_KERNEL_CMDLINE);
        b.boot_args = Some("quiet".into());
        assert_eq!(b.cmdline(), "quiet");
    }

    #[test]
    fn json_round_trip() {
        let b: BootSourceConfig = serde_json::from_str(
            r#"{"kernel_image_path": "/vmlinux", "boot_args": "console=ttyS0"}"#,
        )
        .unwrap();
        assert_eq!(b.kernel_image_path, PathBuf::from("/vmlinux"));
        let back: BootSourceConfig =
            serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
    }
}
