//! A small logger: one line per record on standard error, prefixed with
//! `podvm` and the level.

use std::io::Write;

use log::{Level, LevelFilter, Log, Metadata, Record};

struct StderrLogger;

impl Log for StderrLogger {
    fn enabled(&self, metadata: &Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = match record.level() {
            Level::Error => "error",
            Level::Warn => "warning",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        };
        // Raw mode keeps output processing on, so "\n" still starts a
        // new line at the left margin.
        let _ = writeln!(
            std::io::stderr().lock(),
            "podvm: {level}: {}",
            record.args()
        );
    }

    fn flush(&self) {}
}

static LOGGER: StderrLogger = StderrLogger;

/// Installs the logger at `level`.
pub fn init(level: LevelFilter) {
    // Only fails if a logger is already set, which main never does twice.
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
