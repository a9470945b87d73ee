//! Where the guest's serial console goes.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Destination of the 8250 serial console's output.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SerialConfig {
    /// The VMM's standard output (and standard input feeds the guest).
    #[default]
    Stdout,
    /// A file, created or truncated.
    File(PathBuf),
    /// No output; the device still exists so the guest can probe it.
    Off,
}

/// A `--serial` value that is none of `stdout`, `file=PATH` or `off`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid serial destination {0:?}: expected stdout, file=PATH or off")]
pub struct SerialConfigParseError(pub String);

impl FromStr for SerialConfig {
    type Err = SerialConfigParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "stdout" => Ok(SerialConfig::Stdout),
            "off" => Ok(SerialConfig::Off),
            _ => match s.strip_prefix("file=") {
                Some(path) if !path.is_empty() => Ok(SerialConfig::File(path.into())),
                _ => Err(SerialConfigParseError(s.to_string())),
            },
        }
    }
}

impl fmt::Display for SerialConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SerialConfig::Stdout => f.write_str("stdout"),
            SerialConfig::File(p) => write!(f, "file={}", p.display()),
            SerialConfig::Off => f.write_str("off"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        assert_eq!("stdout".parse(), Ok(SerialConfig::Stdout));
        assert_eq!("off".parse(), Ok(SerialConfig::Off));
        assert_eq!(
            "file=/tmp/x".parse(),
            Ok(SerialConfig::File("/tmp/x".into()))
        );
        for bad in ["", "file=", "stderr", "File=/x"] {
            assert!(bad.parse::<SerialConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn display_round_trips() {
        for s in ["stdout", "off", "file=/a/b"] {
            assert_eq!(s.parse::<SerialConfig>().unwrap().to_string(), s);
        }
    }
}
