//! The shim's settings: `/etc/podvm/shim.toml`, or the file that
//! `PODVM_SHIM_CONFIG` names, with per-pod overrides from annotations.
//!
//! ```toml
//! state_dir = "/run/podvm/shim"   # pods' sockets, pid files and logs
//!
//! [agent]
//! mode = "vm"                      # "host": the agent runs on the host, no VM
//! binary = "/usr/local/bin/podvm-agent"   # host mode; default: beside the shim
//! runc = "runc"                    # host mode: the runc the agent runs
//!
//! [vm]
//! podvm = "podvm"                  # the VMM binary
//! kernel = "/var/lib/podvm/vmlinux"
//! image = "/var/lib/podvm/agent.ext4"   # guest image with podvm-agent
//! vcpus = 1
//! memory_mib = 256
//! max_vcpus = 4                    # what io.podvm.vcpus may ask for
//! max_memory_mib = 4096            # what io.podvm.memory_mib may ask for
//! ```

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The environment variable naming the configuration file.
pub const CONFIG_ENV: &str = "PODVM_SHIM_CONFIG";
/// The configuration file read when [`CONFIG_ENV`] is not set.
pub const DEFAULT_CONFIG: &str = "/etc/podvm/shim.toml";
/// The annotation that asks for a pod's vCPU count.
pub const VCPUS_ANNOTATION: &str = "io.podvm.vcpus";
/// The annotation that asks for a pod's memory, in MiB.
pub const MEMORY_ANNOTATION: &str = "io.podvm.memory_mib";

/// Where a pod's agent runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentMode {
    /// Inside the pod's VM (isolation).
    #[default]
    Vm,
    /// As a host process: no VM isolation (hosts that cannot boot guests, tests).
    Host,
}

/// The `[agent]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the agent runs.
    pub mode: AgentMode,
    /// Host mode: the agent binary; `podvm-agent` beside the shim when unset.
    pub binary: Option<PathBuf>,
    /// Host mode: the runc binary the agent runs containers with.
    pub runc: Option<PathBuf>,
}

/// The `[vm]` table.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VmConfig {
    /// The podvm binary.
    pub podvm: PathBuf,
    /// The guest kernel.
    pub kernel: Option<PathBuf>,
    /// The guest image that holds the agent.
    pub image: Option<PathBuf>,
    /// vCPUs of a pod that asks for none.
    pub vcpus: u32,
    /// Memory of a pod that asks for none, in MiB.
    pub memory_mib: u32,
    /// The most vCPUs a pod may ask for.
    pub max_vcpus: u32,
    /// The most memory a pod may ask for, in MiB.
    pub max_memory_mib: u32,
}

impl Default for VmConfig {
    fn default() -> VmConfig {
        VmConfig {
            podvm: PathBuf::from("podvm"),
            kernel: None,
            image: None,
            vcpus: 1,
            memory_mib: 256,
            max_vcpus: 4,
            max_memory_mib: 4096,
        }
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShimConfig {
    /// Where pods keep their sockets, pid files and logs.
    pub state_dir: PathBuf,
    /// The `[agent]` table.
    pub agent: AgentConfig,
    /// The `[vm]` table.
    pub vm: VmConfig,
}

impl Default for ShimConfig {
    fn default() -> ShimConfig {
        ShimConfig {
            state_dir: PathBuf::from("/run/podvm/shim"),
            agent: AgentConfig::default(),
            vm: VmConfig::default(),
        }
    }
}

/// Why the configuration or a pod's annotations were refused.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read(PathBuf, std::io::Error),
    /// The file is not valid TOML for this schema.
    Parse(PathBuf, String),
    /// An annotation is not a number in range.
    Annotation {
        /// The annotation's key.
        key: &'static str,
        /// Its value.
        value: String,
        /// The largest value allowed.
        max: u32,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read(path, e) => write!(f, "shim config {}: {e}", path.display()),
            ConfigError::Parse(path, e) => {
                write!(f, "shim config {}: {}", path.display(), e.trim_end())
            }
            ConfigError::Annotation { key, value, max } => {
                write!(
                    f,
                    "annotation {key}={value:?}: not a whole number from 1 to {max}"
                )
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// A pod's size: vCPUs and memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodSize {
    /// vCPUs.
    pub vcpus: u32,
    /// Memory in MiB.
    pub memory_mib: u32,
}

impl ShimConfig {
    /// Parses a configuration file's text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<ShimConfig, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e.to_string()))
    }

    /// Reads the file that [`CONFIG_ENV`] names, else [`DEFAULT_CONFIG`];
    /// a missing default file means every default.
    pub fn load() -> Result<ShimConfig, ConfigError> {
        match std::env::var_os(CONFIG_ENV) {
            Some(path) => Self::load_file(Path::new(&path), true),
            None => Self::load_file(Path::new(DEFAULT_CONFIG), false),
        }
    }

    fn load_file(path: &Path, must_exist: bool) -> Result<ShimConfig, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if !must_exist && e.kind() == std::io::ErrorKind::NotFound => {
                Ok(ShimConfig::default())
            }
            Err(e) => Err(ConfigError::Read(path.to_path_buf(), e)),
        }
    }

    /// The pod's size: the file's defaults, overridden by the
    /// [`VCPUS_ANNOTATION`] and [`MEMORY_ANNOTATION`] annotations within
    /// the file's limits.
    pub fn pod_size(&self, annotations: &HashMap<String, String>) -> Result<PodSize, ConfigError> {
        let get = |key: &'static str, default: u32, max: u32| -> Result<u32, ConfigError> {
            let Some(value) = annotations.get(key) else {
                return Ok(default);
            };
            match value.trim().parse::<u32>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ConfigError::Annotation {
                    key,
                    value: value.clone(),
                    max,
                }),
            }
        };
        Ok(PodSize {
            vcpus: get(VCPUS_ANNOTATION, self.vm.vcpus, self.vm.max_vcpus)?,
            memory_mib: get(
                MEMORY_ANNOTATION,
                self.vm.memory_mib,
                self.vm.max_memory_mib,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_every_default() {
        let c = ShimConfig::parse("", Path::new("x")).unwrap();
        assert_eq!(c, ShimConfig::default());
        assert_eq!(c.agent.mode, AgentMode::Vm);
    }

    #[test]
    fn file_sets_what_it_names() {
        let c = ShimConfig::parse(
            "state_dir = \"/tmp/s\"\n[agent]\nmode = \"host\"\nrunc = \"/usr/sbin/runc\"\n[vm]\nvcpus = 2\nmax_vcpus = 8\n",
            Path::new("x"),
        )
        .unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(c.agent.mode, AgentMode::Host);
        assert_eq!(c.agent.runc.as_deref(), Some(Path::new("/usr/sbin/runc")));
        assert_eq!((c.vm.vcpus, c.vm.max_vcpus, c.vm.memory_mib), (2, 8, 256));
    }

    #[test]
    fn bad_files_name_the_file_and_the_key() {
        for (text, what) in [
            ("[agent]\nmode = \"vmm\"\n", "mode"),
            ("[vm]\nvcpu = 2\n", "vcpu"),
            ("state_dir = 3\n", "state_dir"),
        ] {
            let e = ShimConfig::parse(text, Path::new("/etc/podvm/shim.toml"))
                .unwrap_err()
                .to_string();
            assert!(e.starts_with("shim config /etc/podvm/shim.toml: "), "{e}");
            assert!(e.contains(what) || e.contains("vm"), "{text:?}: {e}");
        }
    }

    #[test]
    fn annotations_size_the_pod_within_limits() {
        let c = ShimConfig::default();
        let a = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<HashMap<_, _>>()
        };
        assert_eq!(
            c.pod_size(&a(&[])).unwrap(),
            PodSize {
                vcpus: 1,
                memory_mib: 256
            }
        );
        assert_eq!(
            c.pod_size(&a(&[(VCPUS_ANNOTATION, "4"), (MEMORY_ANNOTATION, "1024")]))
                .unwrap(),
            PodSize {
                vcpus: 4,
                memory_mib: 1024
            }
        );
        for (k, v) in [
            (VCPUS_ANNOTATION, "5"),
            (VCPUS_ANNOTATION, "0"),
            (MEMORY_ANNOTATION, "lots"),
            (MEMORY_ANNOTATION, "4097"),
        ] {
            let e = c.pod_size(&a(&[(k, v)])).unwrap_err().to_string();
            assert!(e.starts_with(&format!("annotation {k}=")), "{e}");
        }
    }

    #[test]
    fn a_missing_named_file_is_an_error_a_missing_default_is_not() {
        assert!(ShimConfig::load_file(Path::new("/nonexistent/shim.toml"), true).is_err());
        assert_eq!(
            ShimConfig::load_file(Path::new("/nonexistent/shim.toml"), false).unwrap(),
            ShimConfig::default()
        );
    }
}
