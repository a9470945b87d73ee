//! podvm's logger: one line per record, on standard error until a client
//! redirects it (`PUT /logger`) to a file or named pipe, with Firecracker's
//! options (level, whether to show the level and the origin, a module
//! filter).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use log::{Level, LevelFilter, Log, Metadata, Record};
use resources::action::LoggerConfig;

/// Where and how records are written.
struct Settings {
    /// `None`: standard error.
    file: Option<File>,
    show_level: bool,
    show_origin: bool,
    module: Option<String>,
}

struct PodvmLogger {
    settings: Mutex<Settings>,
}

fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warning",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

impl Log for PodvmLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mut s = self.settings.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = &s.module {
            if !record
                .module_path()
                .is_some_and(|p| p.starts_with(m.as_str()))
            {
                return;
            }
        }
        let mut line = String::from("podvm: ");
        if s.show_level {
            line.push_str(level_name(record.level()));
            line.push_str(": ");
        }
        if s.show_origin {
            line.push_str(&format!(
                "{}:{}: ",
                record.file().unwrap_or("?"),
                record.line().unwrap_or(0)
            ));
        }
        line.push_str(&record.args().to_string());
        line.push('\n');
        // Raw mode keeps output processing on, so "\n" still starts a new
        // line at the left margin. A log that cannot be written is dropped.
        let _ = match &mut s.file {
            Some(f) => f.write_all(line.as_bytes()),
            None => io::stderr().lock().write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

static LOGGER: PodvmLogger = PodvmLogger {
    settings: Mutex::new(Settings {
        file: None,
        show_level: true,
        show_origin: false,
        module: None,
    }),
};

/// Installs the logger at `level`, writing to standard error.
pub fn init(level: LevelFilter) {
    // Only fails if a logger is already set, which podvm never does twice.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}

/// A logger configuration that cannot be applied.
#[derive(Debug, thiserror::Error)]
pub enum LoggerError {
    /// Not one of Firecracker's level names.
    #[error("logger: invalid level {0:?} (expected Error, Warning, Info, Debug, Trace or Off)")]
    Level(String),
    /// The log file cannot be opened.
    #[error("logger: cannot open {path}: {source}")]
    Open {
        /// The path.
        path: String,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
}

/// Parses a Firecracker level name (case-insensitive).
pub fn parse_level(name: &str) -> Result<LevelFilter, LoggerError> {
    Ok(match name.to_ascii_lowercase().as_str() {
        "error" => LevelFilter::Error,
        "warning" | "warn" => LevelFilter::Warn,
        "info" => LevelFilter::Info,
        "debug" => LevelFilter::Debug,
        "trace" => LevelFilter::Trace,
        "off" => LevelFilter::Off,
        _ => return Err(LoggerError::Level(name.to_string())),
    })
}

/// Applies a `PUT /logger` configuration: the log file (appended to;
/// a named pipe is opened without blocking on a missing reader), the level
/// (Firecracker's default: Info) and the line format.
pub fn configure(config: &LoggerConfig) -> Result<(), LoggerError> {
    let level = parse_level(config.level.as_deref().unwrap_or("Info"))?;
    let file = match &config.log_path {
        None => None,
        Some(path) => Some(
            OpenOptions::new()
                .append(true)
                .create(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
                .open(path)
                .map_err(|source| LoggerError::Open {
                    path: path.display().to_string(),
                    source,
                })?,
        ),
    };
    let mut s = LOGGER.settings.lock().unwrap_or_else(|e| e.into_inner());
    if file.is_some() {
        s.file = file;
    }
    s.show_level = config.show_level.unwrap_or(false);
    s.show_origin = config.show_log_origin.unwrap_or(false);
    s.module = config.module.clone();
    log::set_max_level(level);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_are_firecracker_s() {
        assert_eq!(parse_level("Warning").unwrap(), LevelFilter::Warn);
        assert_eq!(parse_level("TRACE").unwrap(), LevelFilter::Trace);
        assert_eq!(parse_level("off").unwrap(), LevelFilter::Off);
        let err = parse_level("Loud").unwrap_err();
        assert!(err.to_string().contains("invalid level \"Loud\""), "{err}");
    }

    #[test]
    fn a_missing_directory_is_reported() {
        let cfg = LoggerConfig {
            log_path: Some("/nonexistent/dir/podvm.log".into()),
            ..Default::default()
        };
        let err = configure(&cfg).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("logger: cannot open /nonexistent/dir/podvm.log: No such file"),
            "{err}"
        );
    }
}
