//! What a run collected: per scenario and per VMM, the samples of every
//! figure, or why the VMM could not run it.

use crate::scenarios::{Sample, Unit, Value};
use crate::stats::{self, Summary};

/// How a scenario went for one VMM.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// It ran (its figures may still mark single ones unsupported).
    Ran,
    /// The VMM cannot run it (the reason).
    Unsupported(String),
    /// This host cannot run it (the reason).
    Skipped(String),
    /// It failed (the error).
    Failed(String),
}

/// One figure's samples on one VMM.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    /// Its name.
    pub name: String,
    /// Its unit.
    pub unit: Unit,
    /// Every sample, warm-up excluded.
    pub samples: Vec<f64>,
    /// Why this VMM cannot give it, if it cannot.
    pub unsupported: Option<String>,
}

impl Figure {
    /// The summary of its samples.
    pub fn summary(&self) -> Option<Summary> {
        stats::summarize(&self.samples)
    }
}

/// One scenario on one VMM.
#[derive(Clone, Debug)]
pub struct Side {
    /// "podvm" or "target".
    pub label: &'static str,
    /// How it went.
    pub status: Status,
    /// Its figures in the order the scenario gave them.
    pub figures: Vec<Figure>,
}

impl Side {
    /// A side that has not run yet.
    pub fn new(label: &'static str) -> Side {
        Side {
            label,
            status: Status::Ran,
            figures: Vec::new(),
        }
    }

    /// Adds the samples of one repetition.
    pub fn record(&mut self, samples: Vec<Sample>) {
        for s in samples {
            let i = match self.figures.iter().position(|f| f.name == s.figure) {
                Some(i) => i,
                None => {
                    self.figures.push(Figure {
                        name: s.figure.clone(),
                        unit: s.unit,
                        samples: Vec::new(),
                        unsupported: None,
                    });
                    self.figures.len() - 1
                }
            };
            match s.value {
                Value::Num(x) => self.figures[i].samples.push(x),
                Value::Unsupported(why) => self.figures[i].unsupported = Some(why),
            }
        }
    }

    /// The figure called `name`.
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }
}

/// One scenario's results.
#[derive(Clone, Debug)]
pub struct ScenarioResult {
    /// Its name.
    pub name: &'static str,
    /// What it measures.
    pub about: &'static str,
    /// Repetitions (warm-up excluded).
    pub reps: usize,
    /// podvm first, then the target when there is one.
    pub sides: Vec<Side>,
    /// Per VMM label, the PIDs of other processes of that VMM's binary
    /// (not the harness's) running when the scenario started: they share
    /// its pages, which lowers its PSS, and take CPU time.
    pub others: Vec<(String, Vec<u32>)>,
}

impl ScenarioResult {
    /// Every figure name any side has, in first-seen order.
    pub fn figure_names(&self) -> Vec<(String, Unit)> {
        let mut out: Vec<(String, Unit)> = Vec::new();
        for side in &self.sides {
            for f in &side.figures {
                if !out.iter().any(|(n, _)| *n == f.name) {
                    out.push((f.name.clone(), f.unit));
                }
            }
        }
        out
    }

    /// "podvm: 3 (pids [..])" for every VMM with other processes running
    /// when the scenario started; `None` when there were none.
    pub fn others_text(&self) -> Option<String> {
        let parts: Vec<String> = self
            .others
            .iter()
            .filter(|(_, pids)| !pids.is_empty())
            .map(|(label, pids)| format!("{label} binary: {} (pids {pids:?})", pids.len()))
            .collect();
        (!parts.is_empty()).then(|| parts.join(", "))
    }

    /// podvm's median over the target's for figure `name`, when both sides
    /// ran the scenario and have samples of it (a failed, skipped or
    /// unsupported side has no ratio, whatever samples it gathered before),
    /// and the medians are not negative (a ratio of signed figures, such as
    /// a drop of `MemAvailable`, means nothing).
    pub fn ratio(&self, name: &str) -> Option<f64> {
        let [p, t] = self.sides.as_slice() else {
            return None;
        };
        if p.status != Status::Ran || t.status != Status::Ran {
            return None;
        }
        let median = |side: &Side| {
            let f = side.figure(name)?;
            if f.unsupported.is_some() {
                return None;
            }
            Some(f.summary()?.median)
        };
        let (p, t) = (median(p)?, median(t)?);
        (t > 0.0 && p >= 0.0).then(|| p / t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::{MS, PER_S};

    #[test]
    fn samples_accumulate_per_figure() {
        let mut side = Side::new("podvm");
        side.record(vec![
            Sample::new("a", MS, 1.0),
            Sample::new("b", PER_S, 10.0),
        ]);
        side.record(vec![
            Sample::new("a", MS, 3.0),
            Sample::unsupported("c", MS, "no"),
        ]);
        assert_eq!(side.figures.len(), 3);
        assert_eq!(side.figure("a").unwrap().samples, [1.0, 3.0]);
        assert_eq!(side.figure("a").unwrap().summary().unwrap().median, 2.0);
        assert_eq!(side.figure("c").unwrap().unsupported.as_deref(), Some("no"));
    }

    #[test]
    fn ratio_is_podvm_median_over_target_median() {
        let mut p = Side::new("podvm");
        p.record(vec![
            Sample::new("x", MS, 1.0),
            Sample::new("only", MS, 1.0),
        ]);
        let mut t = Side::new("target");
        t.record(vec![Sample::new("x", MS, 4.0)]);
        t.record(vec![Sample::new("x", MS, 4.0), Sample::new("y", MS, 2.0)]);
        let r = ScenarioResult {
            name: "s",
            about: "",
            reps: 2,
            sides: vec![p, t],
            others: vec![("podvm".into(), vec![]), ("target".into(), vec![7, 9])],
        };
        assert_eq!(
            r.others_text().as_deref(),
            Some("target binary: 2 (pids [7, 9])")
        );
        assert_eq!(r.ratio("x"), Some(0.25));
        assert_eq!(r.ratio("only"), None);
        let names: Vec<String> = r.figure_names().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["x", "only", "y"]);
    }

    #[test]
    fn no_ratio_unless_both_sides_ran() {
        let make = |status: Status| {
            let mut p = Side::new("podvm");
            p.record(vec![
                Sample::new("x", MS, 1.0),
                Sample::new("neg", MS, -1.0),
            ]);
            let mut t = Side::new("target");
            t.record(vec![Sample::new("x", MS, 2.0), Sample::new("neg", MS, 2.0)]);
            t.status = status;
            ScenarioResult {
                name: "s",
                about: "",
                reps: 1,
                sides: vec![p, t],
                others: vec![],
            }
        };
        assert_eq!(make(Status::Ran).ratio("x"), Some(0.5));
        assert_eq!(make(Status::Ran).ratio("neg"), None, "signed figure");
        for st in [
            Status::Failed("boom".into()),
            Status::Skipped("no tap".into()),
            Status::Unsupported("no".into()),
        ] {
            assert_eq!(make(st.clone()).ratio("x"), None, "{st:?}");
            let mut r = make(Status::Ran);
            r.sides[0].status = st.clone();
            assert_eq!(r.ratio("x"), None, "podvm {st:?}");
        }
        // A figure one side marks unsupported after some samples.
        let mut r = make(Status::Ran);
        r.sides[1].record(vec![Sample::unsupported("x", MS, "no")]);
        assert_eq!(r.ratio("x"), None);
    }
}
