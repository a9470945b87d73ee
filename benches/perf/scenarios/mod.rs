//! The scenarios: each one runs once against one VMM and returns its
//! samples; `main` repeats them, alternating the VMMs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::vmm::Vmm;
use crate::PerfError;

pub mod api;
pub mod balloon;
pub mod boot;
pub mod density;
pub mod destroy;
pub mod io;
pub mod memory;
pub mod pause;
pub mod snapshot;
pub mod startup;

/// A figure's unit, and which way is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unit {
    /// As printed: "ms", "MiB/s", …
    pub name: &'static str,
    /// Throughputs are better higher; times and sizes lower.
    pub higher_is_better: bool,
}

/// Milliseconds.
pub const MS: Unit = Unit {
    name: "ms",
    higher_is_better: false,
};
/// Microseconds.
pub const US: Unit = Unit {
    name: "us",
    higher_is_better: false,
};
/// Mebibytes.
pub const MIB: Unit = Unit {
    name: "MiB",
    higher_is_better: false,
};
/// Mebibytes per second.
pub const MIB_S: Unit = Unit {
    name: "MiB/s",
    higher_is_better: true,
};
/// Operations (requests, frames) per second.
pub const PER_S: Unit = Unit {
    name: "1/s",
    higher_is_better: true,
};
/// Host CPU seconds per GiB moved.
pub const CPU_S_PER_GIB: Unit = Unit {
    name: "cpu-s/GiB",
    higher_is_better: false,
};

/// One measured value (or why a VMM cannot give it).
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// A measurement.
    Num(f64),
    /// This VMM cannot do what the figure measures; the reason.
    Unsupported(String),
}

/// One sample of one figure.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The figure's name, unique within its scenario.
    pub figure: String,
    /// Its unit.
    pub unit: Unit,
    /// The value.
    pub value: Value,
}

impl Sample {
    /// A measured sample.
    pub fn new(figure: impl Into<String>, unit: Unit, value: f64) -> Sample {
        Sample {
            figure: figure.into(),
            unit,
            value: Value::Num(value),
        }
    }

    /// A duration in `unit` (MS or US).
    pub fn time(figure: impl Into<String>, unit: Unit, d: Duration) -> Sample {
        let scale = if unit == US { 1e6 } else { 1e3 };
        Sample::new(figure, unit, d.as_secs_f64() * scale)
    }

    /// The time from `a` to `b` in milliseconds.
    pub fn ms(figure: impl Into<String>, a: Instant, b: Instant) -> Sample {
        Sample::time(figure, MS, b.saturating_duration_since(a))
    }

    /// A figure this VMM cannot give.
    pub fn unsupported(figure: impl Into<String>, unit: Unit, why: impl Into<String>) -> Sample {
        Sample {
            figure: figure.into(),
            unit,
            value: Value::Unsupported(why.into()),
        }
    }
}

/// What every scenario may use: the guests, a scratch directory, sizes.
pub struct Ctx {
    /// The directory of built test guests.
    pub guests: PathBuf,
    /// A scratch directory (sockets, config files, disk images), removed
    /// at the end.
    pub work: PathBuf,
    /// Small sizes for the smoke test: numbers are not comparable.
    pub quick: bool,
    /// Pod-VM counts of the density scenario.
    pub density: Vec<usize>,
}

impl Ctx {
    /// A test guest.
    pub fn guest(&self, name: &str) -> Result<PathBuf, PerfError> {
        let p = self.guests.join(name);
        if p.exists() {
            Ok(p)
        } else {
            Err(PerfError::Failed(format!(
                "test guest {} is missing (build with binutils installed, or pass --guests)",
                p.display()
            )))
        }
    }

    /// A fresh path in the scratch directory.
    pub fn path(&self, vmm: &Vmm, ext: &str) -> PathBuf {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        self.work.join(format!("{}-{n}.{ext}", vmm.label))
    }
}

/// One scenario.
pub trait Scenario {
    /// Its name (`--scenario NAME`).
    fn name(&self) -> &'static str;
    /// What it measures, one line.
    fn about(&self) -> &'static str;
    /// Whether it uses `--slow-reps` instead of `--reps` (each repetition
    /// takes seconds).
    fn slow(&self) -> bool {
        false
    }
    /// Runs once against `vmm`. `PerfError::Unsupported` marks the whole
    /// scenario as one this VMM cannot run; `PerfError::Skipped` one this
    /// host cannot run.
    fn run(&self, ctx: &Ctx, vmm: &Vmm) -> Result<Vec<Sample>, PerfError>;
}

/// Every scenario, in the order they run.
pub fn all() -> Vec<Box<dyn Scenario>> {
    vec![
        Box::new(startup::Startup),
        Box::new(boot::Boot),
        Box::new(pause::Pause),
        Box::new(destroy::Destroy),
        Box::new(memory::Memory),
        Box::new(density::Density),
        Box::new(api::Api),
        Box::new(io::Block),
        Box::new(io::Net),
        Box::new(snapshot::Snapshot),
        Box::new(balloon::BalloonReport),
    ]
}
