//! The snapshot state file: a fixed, checksummed header, then the
//! serialized state (JSON) of whatever the caller saves.
//!
//! ```text
//! offset  size  field
//!      0     8  magic "PODVMSNP"
//!      8     4  format version (u32, little-endian)
//!     12    12  host CPU vendor (CPUID leaf 0: EBX, EDX, ECX), e.g. "GenuineIntel"
//!     24    32  podvm version (UTF-8, NUL-padded)
//!     56     8  digest of the host's CPUID (CRC-64 of KVM_GET_SUPPORTED_CPUID)
//!     64     8  payload length in bytes (u64, little-endian)
//!     72     8  CRC-64/XZ of bytes 0..72 followed by the payload
//!     80        payload: the state, serialized as JSON
//! ```
//!
//! JSON because the state is a few tens of KiB (dominated by each vCPU's
//! XSAVE area and LAPIC page, which are hex strings), so its size and
//! parse time do not matter next to guest memory, while a JSON state can
//! be read and diffed with ordinary tools when a restore goes wrong.
//!
//! The container is generic over the payload: the VMM's full snapshot
//! (configuration, [`MachineState`](super::MachineState), devices) goes
//! through [`encode_state_file`] / [`decode_state_file`] as one value.
//! Decoding is a pure function of the bytes: a file that fails any check
//! yields an error and nothing else.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::crc64::Crc64;

/// The first bytes of every podvm state file.
pub const STATE_FILE_MAGIC: [u8; 8] = *b"PODVMSNP";

/// The layout version this podvm writes and reads. Bump it whenever the
/// header or the meaning of the payload changes incompatibly.
pub const STATE_FILE_VERSION: u32 = 1;

/// Bytes of the fixed header before the payload.
pub const STATE_FILE_HEADER_LEN: usize = 80;

/// The podvm version recorded in the files this build writes.
pub const PODVM_VERSION: &str = env!("CARGO_PKG_VERSION");

// Field offsets of the header (see the module docs).
const VERSION_AT: usize = 8;
const VENDOR_AT: usize = 12;
const PODVM_VERSION_AT: usize = 24;
const PODVM_VERSION_LEN: usize = 32;
const CPUID_DIGEST_AT: usize = 56;
const PAYLOAD_LEN_AT: usize = 64;
const CHECKSUM_AT: usize = 72;

/// A state file could not be written or read back.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The state could not be serialized.
    #[error("cannot serialize the snapshot state: {0}")]
    Encode(#[source] serde_json::Error),
    /// The file could not be written.
    #[error("cannot write the snapshot state file {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file could not be read.
    #[error("cannot read the snapshot state file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is shorter than its header says.
    #[error("snapshot state file is truncated: {len} bytes, its header needs {needed}")]
    Truncated {
        /// Bytes in the file.
        len: u64,
        /// Bytes the header (or the header and the payload it announces) needs.
        needed: u64,
    },
    /// The file does not start with [`STATE_FILE_MAGIC`].
    #[error("not a podvm snapshot state file: it starts with {found:02x?}, not \"PODVMSNP\"")]
    BadMagic {
        /// The first bytes of the file.
        found: Vec<u8>,
    },
    /// The file was written in a layout this podvm does not read.
    #[error(
        "snapshot state file has format version {found}; this podvm reads version {supported}"
    )]
    UnsupportedVersion {
        /// The file's version.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The file goes on after the payload its header announces.
    #[error("snapshot state file has {extra} bytes after the payload its header announces")]
    TrailingData {
        /// Bytes past the payload.
        extra: u64,
    },
    /// The checksum does not match the contents.
    #[error("snapshot state file is corrupted: its checksum is {stored:#018x}, its contents give {computed:#018x}")]
    Corrupted {
        /// The checksum in the header.
        stored: u64,
        /// The checksum of the contents.
        computed: u64,
    },
    /// The snapshot comes from a CPU of another vendor.
    #[error("snapshot was taken on a CPU of vendor {snapshot}; this host's CPU vendor is {host}")]
    WrongCpuVendor {
        /// The vendor recorded in the file.
        snapshot: String,
        /// This host's vendor.
        host: String,
    },
    /// The payload is not the state the caller expects.
    #[error("snapshot state cannot be parsed: {0}")]
    Decode(#[source] serde_json::Error),
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("cannot read the host CPUID from KVM: {0}")]
    HostCpuid(#[source] kvm_ioctls::Error),
}

/// The host CPU a snapshot is tied to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostCpu {
    /// The 12-byte vendor string of CPUID leaf 0 (`GenuineIntel`,
    /// `AuthenticAMD`, …).
    pub vendor: [u8; 12],
    /// A digest of every CPUID entry KVM supports on this host: equal
    /// digests mean the same CPU model, microcode features and KVM.
    pub cpuid_digest: u64,
}

impl HostCpu {
    /// This host's CPU as KVM reports it.
    pub fn detect(kvm: &Kvm) -> Result<HostCpu, StateFileError> {
        let cpuid = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(StateFileError::HostCpuid)?;
        Ok(HostCpu::from_cpuid(&cpuid))
    }

    /// The CPU that `cpuid` (KVM's supported CPUID) describes.
    pub fn from_cpuid(cpuid: &CpuId) -> HostCpu {
        let mut vendor = [0u8; 12];
        let mut digest = Crc64::new();
        for e in cpuid.as_slice() {
            if e.function == 0 && e.index == 0 {
                // The vendor string is EBX, EDX, ECX in that order.
                vendor[0..4].copy_from_slice(&e.ebx.to_le_bytes());
                vendor[4..8].copy_from_slice(&e.edx.to_le_bytes());
                vendor[8..12].copy_from_slice(&e.ecx.to_le_bytes());
            }
            for word in [e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx] {
                digest.update(&word.to_le_bytes());
            }
        }
        HostCpu {
            vendor,
            cpuid_digest: digest.finish(),
        }
    }

    /// The vendor string, printable.
    pub fn vendor_name(&self) -> String {
        printable(&self.vendor)
    }
}

/// What a state file's header says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateFileHeader {
    /// The layout version.
    pub format_version: u32,
    /// The podvm that wrote it.
    pub podvm_version: String,
    /// The CPU it was taken on.
    pub cpu: HostCpu,
    /// Bytes of payload after the header.
    pub payload_len: u64,
    /// CRC-64/XZ of the header before this field and the payload.
    pub checksum: u64,
}

fn printable(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[at..at + 4]);
    u32::from_le_bytes(word)
}

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(word)
}

fn checksum(header: &[u8], payload: &[u8]) -> u64 {
    let mut crc = Crc64::new();
    crc.update(&header[..CHECKSUM_AT]);
    crc.update(payload);
    crc.finish()
}

/// The state file holding `payload`, taken on `cpu`.
pub fn encode_state_file<T: Serialize>(
    payload: &T,
    cpu: &HostCpu,
) -> Result<Vec<u8>, StateFileError> {
    let mut bytes = vec![0u8; STATE_FILE_HEADER_LEN];
    serde_json::to_writer(&mut bytes, payload).map_err(StateFileError::Encode)?;
    let payload_len = (bytes.len() - STATE_FILE_HEADER_LEN) as u64;
    let header = &mut bytes[..STATE_FILE_HEADER_LEN];
    header[..VERSION_AT].copy_from_slice(&STATE_FILE_MAGIC);
    header[VERSION_AT..VENDOR_AT].copy_from_slice(&STATE_FILE_VERSION.to_le_bytes());
    header[VENDOR_AT..PODVM_VERSION_AT].copy_from_slice(&cpu.vendor);
    let version = PODVM_VERSION.as_bytes();
    let version = &version[..version.len().min(PODVM_VERSION_LEN)];
    header[PODVM_VERSION_AT..PODVM_VERSION_AT + version.len()].copy_from_slice(version);
    header[CPUID_DIGEST_AT..PAYLOAD_LEN_AT].copy_from_slice(&cpu.cpuid_digest.to_le_bytes());
    header[PAYLOAD_LEN_AT..CHECKSUM_AT].copy_from_slice(&payload_len.to_le_bytes());
    let (header, payload) = bytes.split_at(STATE_FILE_HEADER_LEN);
    let sum = checksum(header, payload);
    bytes[CHECKSUM_AT..STATE_FILE_HEADER_LEN].copy_from_slice(&sum.to_le_bytes());
    Ok(bytes)
}

/// Checks the header of `bytes` (a whole state file): magic, version,
/// length, checksum, and that it was taken on a CPU of `host`'s vendor.
/// Returns the header and the payload it covers.
pub fn check_state_file<'a>(
    bytes: &'a [u8],
    host: &HostCpu,
) -> Result<(StateFileHeader, &'a [u8]), StateFileError> {
    let len = bytes.len() as u64;
    let magic_len = bytes.len().min(STATE_FILE_MAGIC.len());
    if bytes[..magic_len] != STATE_FILE_MAGIC[..magic_len] {
        return Err(StateFileError::BadMagic {
            found: bytes[..magic_len].to_vec(),
        });
    }
    if bytes.len() < STATE_FILE_HEADER_LEN {
        return Err(StateFileError::Truncated {
            len,
            needed: STATE_FILE_HEADER_LEN as u64,
        });
    }
    let (header, rest) = bytes.split_at(STATE_FILE_HEADER_LEN);
    let format_version = u32_at(header, VERSION_AT);
    if format_version != STATE_FILE_VERSION {
        return Err(StateFileError::UnsupportedVersion {
            found: format_version,
            supported: STATE_FILE_VERSION,
        });
    }
    let payload_len = u64_at(header, PAYLOAD_LEN_AT);
    let have = rest.len() as u64;
    if have < payload_len {
        return Err(StateFileError::Truncated {
            len,
            needed: payload_len.saturating_add(STATE_FILE_HEADER_LEN as u64),
        });
    }
    if have > payload_len {
        return Err(StateFileError::TrailingData {
            extra: have - payload_len,
        });
    }
    let stored = u64_at(header, CHECKSUM_AT);
    let computed = checksum(header, rest);
    if stored != computed {
        return Err(StateFileError::Corrupted { stored, computed });
    }
    let mut vendor = [0u8; 12];
    vendor.copy_from_slice(&header[VENDOR_AT..PODVM_VERSION_AT]);
    let cpu = HostCpu {
        vendor,
        cpuid_digest: u64_at(header, CPUID_DIGEST_AT),
    };
    if cpu.vendor != host.vendor {
        return Err(StateFileError::WrongCpuVendor {
            snapshot: cpu.vendor_name(),
            host: host.vendor_name(),
        });
    }
    let header = StateFileHeader {
        format_version,
        podvm_version: printable(&header[PODVM_VERSION_AT..PODVM_VERSION_AT + PODVM_VERSION_LEN]),
        cpu,
        payload_len,
        checksum: stored,
    };
    Ok((header, rest))
}

/// Checks `bytes` (see [`check_state_file`]) and parses the payload.
pub fn decode_state_file<T: DeserializeOwned>(
    bytes: &[u8],
    host: &HostCpu,
) -> Result<(StateFileHeader, T), StateFileError> {
    let (header, payload) = check_state_file(bytes, host)?;
    let state = serde_json::from_slice(payload).map_err(StateFileError::Decode)?;
    Ok((header, state))
}

/// Writes `payload`, taken on `cpu`, to a new state file at `path`
/// (replacing any file there).
pub fn write_state_file<T: Serialize>(
    path: &Path,
    payload: &T,
    cpu: &HostCpu,
) -> Result<(), StateFileError> {
    let bytes = encode_state_file(payload, cpu)?;
    let write_err = |source| StateFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = File::create(path).map_err(write_err)?;
    file.write_all(&bytes).map_err(write_err)
}

/// Reads the state file at `path`, checks it against `host` and parses
/// its payload. A CPUID digest that differs from the host's (another CPU
/// model of the same vendor, or another KVM) is allowed but logged.
pub fn read_state_file<T: DeserializeOwned>(
    path: &Path,
    host: &HostCpu,
) -> Result<(StateFileHeader, T), StateFileError> {
    let read_err = |source| StateFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|mut f| f.read_to_end(&mut bytes))
        .map_err(read_err)?;
    let (header, state) = decode_state_file(&bytes, host)?;
    if header.cpu.cpuid_digest != host.cpuid_digest {
        log::warn!(
            "snapshot {} was taken on a host with another CPUID (digest {:#x}, this host {:#x}); \
             the guest may see CPU features change",
            path.display(),
            header.cpu.cpuid_digest,
            host.cpuid_digest
        );
    }
    Ok((header, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    struct Payload {
        name: String,
        values: Vec<u64>,
    }

    fn payload() -> Payload {
        Payload {
            name: "pod-1".into(),
            values: vec![1, u64::MAX, 42],
        }
    }

    fn intel() -> HostCpu {
        HostCpu {
            vendor: *b"GenuineIntel",
            cpuid_digest: 0x1234,
        }
    }

    fn decode(bytes: &[u8]) -> Result<Payload, StateFileError> {
        decode_state_file::<Payload>(bytes, &intel()).map(|(_, p)| p)
    }

    #[test]
    fn a_state_round_trips_with_its_header() {
        let bytes = encode_state_file(&payload(), &intel()).unwrap();
        assert_eq!(&bytes[..8], b"PODVMSNP");
        let (header, back) = decode_state_file::<Payload>(&bytes, &intel()).unwrap();
        assert_eq!(back, payload());
        assert_eq!(
            header,
            StateFileHeader {
                format_version: STATE_FILE_VERSION,
                podvm_version: PODVM_VERSION.into(),
                cpu: intel(),
                payload_len: (bytes.len() - STATE_FILE_HEADER_LEN) as u64,
                checksum: u64_at(&bytes, CHECKSUM_AT),
            }
        );
        // Another CPU model of the same vendor may load it.
        let other_model = HostCpu {
            cpuid_digest: 0x5678,
            ..intel()
        };
        assert!(decode_state_file::<Payload>(&bytes, &other_model).is_ok());
    }

    #[test]
    fn a_truncated_file_is_refused_as_truncated() {
        let bytes = encode_state_file(&payload(), &intel()).unwrap();
        let cut = decode(&bytes[..bytes.len() - 1]).unwrap_err();
        assert!(matches!(cut, StateFileError::Truncated { .. }), "{cut:?}");
        assert_eq!(
            cut.to_string(),
            format!(
                "snapshot state file is truncated: {} bytes, its header needs {}",
                bytes.len() - 1,
                bytes.len()
            )
        );
        let header_only = decode(&bytes[..20]).unwrap_err();
        assert_eq!(
            header_only.to_string(),
            "snapshot state file is truncated: 20 bytes, its header needs 80"
        );
        let empty = decode(&[]).unwrap_err();
        assert!(
            matches!(empty, StateFileError::Truncated { len: 0, .. }),
            "{empty:?}"
        );
    }

    #[test]
    fn a_flipped_byte_is_refused_as_corrupted() {
        let bytes = encode_state_file(&payload(), &intel()).unwrap();
        // Anywhere in the payload, and in the header fields the checksum covers.
        for at in [
            STATE_FILE_HEADER_LEN + 3,
            bytes.len() - 1,
            PODVM_VERSION_AT,
            CPUID_DIGEST_AT,
        ] {
            let mut bad = bytes.clone();
            bad[at] ^= 0x04;
            let err = decode(&bad).unwrap_err();
            assert!(
                matches!(err, StateFileError::Corrupted { .. }),
                "byte {at}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with("snapshot state file is corrupted: its checksum is 0x"),
                "{err}"
            );
        }
        // The stored checksum itself.
        let mut bad = bytes.clone();
        bad[CHECKSUM_AT] ^= 0x80;
        assert!(matches!(
            decode(&bad),
            Err(StateFileError::Corrupted { .. })
        ));
    }

    #[test]
    fn another_magic_is_refused_as_not_a_state_file() {
        let mut bytes = encode_state_file(&payload(), &intel()).unwrap();
        bytes[..8].copy_from_slice(b"\x7fELF\x02\x01\x01\x00");
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, StateFileError::BadMagic { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "not a podvm snapshot state file: it starts with [7f, 45, 4c, 46, 02, 01, 01, 00], not \"PODVMSNP\""
        );
        // Even a short file is recognised as foreign before as truncated.
        assert!(matches!(
            decode(b"{\"a\""),
            Err(StateFileError::BadMagic { .. })
        ));
    }

    #[test]
    fn another_format_version_is_refused_as_unsupported() {
        let mut bytes = encode_state_file(&payload(), &intel()).unwrap();
        bytes[VERSION_AT..VERSION_AT + 4].copy_from_slice(&2u32.to_le_bytes());
        let err = decode(&bytes).unwrap_err();
        assert!(
            matches!(err, StateFileError::UnsupportedVersion { found: 2, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "snapshot state file has format version 2; this podvm reads version 1"
        );
    }

    #[test]
    fn another_cpu_vendor_is_refused() {
        let amd = HostCpu {
            vendor: *b"AuthenticAMD",
            cpuid_digest: 0x1234,
        };
        let bytes = encode_state_file(&payload(), &amd).unwrap();
        let err = decode(&bytes).unwrap_err();
        assert!(
            matches!(err, StateFileError::WrongCpuVendor { .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            "snapshot was taken on a CPU of vendor AuthenticAMD; this host's CPU vendor is GenuineIntel"
        );
    }

    #[test]
    fn bytes_after_the_payload_are_refused() {
        let mut bytes = encode_state_file(&payload(), &intel()).unwrap();
        bytes.extend_from_slice(b"xx");
        let err = decode(&bytes).unwrap_err();
        assert_eq!(
            err.to_string(),
            "snapshot state file has 2 bytes after the payload its header announces"
        );
    }

    #[test]
    fn a_payload_of_another_shape_is_refused_as_unparsable() {
        let bytes = encode_state_file(&vec![1u8, 2, 3], &intel()).unwrap();
        let err = decode(&bytes).unwrap_err();
        assert!(matches!(err, StateFileError::Decode(_)), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("snapshot state cannot be parsed: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn files_round_trip_and_a_missing_file_names_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vm.state");
        write_state_file(&path, &payload(), &intel()).unwrap();
        let (_, back) = read_state_file::<Payload>(&path, &intel()).unwrap();
        assert_eq!(back, payload());
        let missing = dir.path().join("nope.state");
        let err = read_state_file::<Payload>(&missing, &intel()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read the snapshot state file {}: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn the_host_vendor_comes_from_cpuid_leaf_0() {
        let leaf0 = kvm_bindings::kvm_cpuid_entry2 {
            function: 0,
            eax: 0xd,
            // "Genu", "ineI", "ntel" as EBX, EDX, ECX.
            ebx: u32::from_le_bytes(*b"Genu"),
            edx: u32::from_le_bytes(*b"ineI"),
            ecx: u32::from_le_bytes(*b"ntel"),
            ..Default::default()
        };
        let leaf1 = kvm_bindings::kvm_cpuid_entry2 {
            function: 1,
            eax: 0x806f8,
            ..Default::default()
        };
        let cpu = HostCpu::from_cpuid(&CpuId::from_entries(&[leaf0, leaf1]).unwrap());
        assert_eq!(cpu.vendor_name(), "GenuineIntel");
        let other = kvm_bindings::kvm_cpuid_entry2 {
            eax: 0x806f7,
            ..leaf1
        };
        let other = HostCpu::from_cpuid(&CpuId::from_entries(&[leaf0, other]).unwrap());
        assert_eq!(other.vendor, cpu.vendor);
        assert_ne!(other.cpuid_digest, cpu.cpuid_digest);
    }
}
