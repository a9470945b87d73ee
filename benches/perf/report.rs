//! Output: the terminal table, the JSON file with every sample, and one
//! SVG box plot per scenario.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{json, Value as Json};

use crate::results::{ScenarioResult, Side, Status};
use crate::scenarios::{Sample, CPU_S_PER_GIB, MIB, MIB_S, MS, PER_S, US};
use crate::stats::Summary;

/// A number with about three significant digits.
pub fn num(x: f64) -> String {
    let a = x.abs();
    if a >= 1000.0 {
        format!("{x:.0}")
    } else if a >= 100.0 {
        format!("{x:.1}")
    } else if a >= 10.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// Ratios this close to 1 (±5%) are a tie on these noisy machines.
pub const TIE: f64 = 0.05;

/// "(better)", "(worse)" or "≈" for podvm/target ratio `x`.
pub fn verdict(x: f64, higher_is_better: bool) -> &'static str {
    if (x - 1.0).abs() <= TIE {
        "≈"
    } else if (x > 1.0) == higher_is_better {
        "(better)"
    } else {
        "(worse)"
    }
}

/// "two clusters: 5.7 ms in 10/20, 24.1 ms in 10/20" when the samples
/// fall into two groups (the median may then lie between them).
pub fn clusters_text(s: &Summary, unit: &str) -> Option<String> {
    let c = s.clusters?;
    Some(format!(
        "two clusters: {} {unit} in {}/{}, {} {unit} in {}/{}",
        num(c.low_median),
        c.low_n,
        s.n,
        num(c.high_median),
        c.high_n,
        s.n
    ))
}

fn status_text(s: &Status) -> Option<String> {
    match s {
        Status::Ran => None,
        Status::Unsupported(r) => Some(format!("not available: {r}")),
        Status::Skipped(r) => Some(format!("skipped: {r}")),
        Status::Failed(r) => Some(format!("FAILED: {r}")),
    }
}

fn cells(side: Option<&Side>, name: &str) -> String {
    let Some(side) = side else {
        return String::new();
    };
    if side.status != Status::Ran {
        return format!("{:>39}", "(see above)");
    }
    match side.figure(name) {
        Some(f) if f.unsupported.is_some() => format!("{:>39}", "unsupported"),
        Some(f) => match f.summary() {
            Some(s) => format!(
                "{:>9} {:>9} {:>9} {:>9}",
                num(s.min),
                num(s.median),
                num(s.p90),
                num(s.max)
            ),
            None => format!("{:>39}", "no samples"),
        },
        None => format!("{:>39}", "-"),
    }
}

/// The table a person reads: per scenario, per figure, min / median / p90
/// / max of each VMM and the ratio of the medians.
pub fn table(results: &[ScenarioResult]) -> String {
    let mut out = String::new();
    let two = results.iter().any(|r| r.sides.len() == 2);
    for r in results {
        let _ = writeln!(out, "\n== {} ({} reps): {}", r.name, r.reps, r.about);
        if let Some(o) = r.others_text() {
            let _ = writeln!(
                out,
                "   other VMM processes running at the start (lower PSS, noisier times): {o}"
            );
        }
        for side in &r.sides {
            if let Some(t) = status_text(&side.status) {
                let _ = writeln!(out, "   {}: {t}", side.label);
            }
        }
        let names = r.figure_names();
        if names.is_empty() {
            continue;
        }
        let _ = write!(
            out,
            "   {:<34} {:<9} {:>39}",
            "figure", "unit", "podvm: min / median / p90 / max"
        );
        if two {
            let _ = write!(
                out,
                " | {:>39} | podvm/target",
                "target: min / median / p90 / max"
            );
        }
        out.push('\n');
        for (name, unit) in names {
            let _ = write!(
                out,
                "   {:<34} {:<9} {}",
                name,
                unit.name,
                cells(r.sides.first(), &name)
            );
            if two {
                let ratio = match r.ratio(&name) {
                    Some(x) => format!("{} {}", num(x), verdict(x, unit.higher_is_better)),
                    None => "n/a".into(),
                };
                let _ = write!(out, " | {} | {ratio}", cells(r.sides.get(1), &name));
            }
            out.push('\n');
            for side in &r.sides {
                let sum = side.figure(&name).and_then(|f| f.summary());
                if let Some(c) = sum.and_then(|s| clusters_text(&s, unit.name)) {
                    let _ = writeln!(out, "     {} {name}: {c}", side.label);
                }
            }
        }
        for side in &r.sides {
            for f in &side.figures {
                if let Some(why) = &f.unsupported {
                    let _ = writeln!(out, "   ({}: {} unsupported: {why})", side.label, f.name);
                }
            }
        }
    }
    out
}

/// The same as a Markdown table (for `benches/RESULTS.md`): per figure the
/// podvm and target median with their p90, and the ratio of the medians.
pub fn markdown(results: &[ScenarioResult]) -> String {
    let two = results.iter().any(|r| r.sides.len() == 2);
    let mut out = String::new();
    out.push_str("| scenario | figure | unit | podvm median (p90) |");
    if two {
        out.push_str(" target median (p90) | podvm/target |");
    }
    out.push_str(if two {
        "\n|---|---|---|---:|---:|---:|\n"
    } else {
        "\n|---|---|---|---:|\n"
    });
    let cell = |side: Option<&Side>, name: &str| -> String {
        let Some(side) = side else {
            return String::new();
        };
        match &side.status {
            Status::Ran => {}
            Status::Unsupported(_) => return "not available".into(),
            Status::Skipped(_) => return "skipped".into(),
            Status::Failed(_) => return "FAILED".into(),
        }
        match side.figure(name) {
            Some(f) if f.unsupported.is_some() => "unsupported".into(),
            Some(f) => f.summary().map_or("-".into(), |s| {
                let mut c = format!("{} ({})", num(s.median), num(s.p90));
                if let Some(t) = clusters_text(&s, f.unit.name) {
                    let _ = write!(c, "; {t}");
                }
                c
            }),
            None => "-".into(),
        }
    };
    for r in results {
        for (name, unit) in r.figure_names() {
            let _ = write!(
                out,
                "| {} | {name} | {} | {} |",
                r.name,
                unit.name,
                cell(r.sides.first(), &name)
            );
            if two {
                let ratio = r.ratio(&name).map_or("n/a".into(), num);
                let _ = write!(out, " {} | {ratio} |", cell(r.sides.get(1), &name));
            }
            out.push('\n');
        }
    }
    out
}

/// Reads back what [`json`] wrote (to print, tabulate or plot an earlier
/// run again). Scenario names and units must be ones this harness knows.
pub fn from_json(doc: &Json) -> Result<Vec<ScenarioResult>, String> {
    let all = crate::scenarios::all();
    let units = [MS, US, MIB, MIB_S, PER_S, CPU_S_PER_GIB];
    let mut out = Vec::new();
    for s in doc["scenarios"]
        .as_array()
        .ok_or("no \"scenarios\" array")?
    {
        let name = s["name"].as_str().ok_or("a scenario without a name")?;
        let sc = all
            .iter()
            .find(|x| x.name() == name)
            .ok_or(format!("unknown scenario {name:?}"))?;
        let mut sides = Vec::new();
        for label in ["podvm", "target"] {
            let v = &s["vmms"][label];
            if v.is_null() {
                continue;
            }
            let reason = v["reason"].as_str().unwrap_or_default().to_string();
            let mut side = Side::new(label);
            side.status = match v["status"].as_str() {
                Some("ran") => Status::Ran,
                Some("unsupported") => Status::Unsupported(reason),
                Some("skipped") => Status::Skipped(reason),
                _ => Status::Failed(reason),
            };
            for f in s["figures"].as_array().into_iter().flatten() {
                let fname = f["name"].as_str().unwrap_or_default();
                let uname = f["unit"].as_str().unwrap_or_default();
                let unit = *units
                    .iter()
                    .find(|u| u.name == uname)
                    .ok_or(format!("unknown unit {uname:?}"))?;
                let samples: Vec<Sample> = match &f[label] {
                    Json::Null => Vec::new(),
                    d if d["unsupported"].is_string() => vec![Sample::unsupported(
                        fname,
                        unit,
                        d["unsupported"].as_str().unwrap_or_default(),
                    )],
                    d => d["samples"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(Json::as_f64)
                        .map(|x| Sample::new(fname, unit, x))
                        .collect(),
                };
                side.record(samples);
            }
            sides.push(side);
        }
        let others = s["other_vmm_processes"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(label, pids)| {
                let pids = pids.as_array().into_iter().flatten();
                let pids = pids.filter_map(|p| p.as_u64().map(|p| p as u32));
                (label.clone(), pids.collect())
            })
            .collect();
        out.push(ScenarioResult {
            name: sc.name(),
            about: sc.about(),
            reps: s["reps"].as_u64().unwrap_or(0) as usize,
            sides,
            others,
        });
    }
    Ok(out)
}

fn summary_json(s: &Summary) -> Json {
    let clusters = s.clusters.map(|c| {
        json!({"low": {"median": c.low_median, "n": c.low_n},
               "high": {"median": c.high_median, "n": c.high_n}})
    });
    json!({"n": s.n, "min": s.min, "p25": s.p25, "median": s.median, "p75": s.p75,
           "p90": s.p90, "p99": s.p99, "max": s.max, "clusters": clusters})
}

fn status_json(s: &Status) -> Json {
    match s {
        Status::Ran => json!({"status": "ran"}),
        Status::Unsupported(r) => json!({"status": "unsupported", "reason": r}),
        Status::Skipped(r) => json!({"status": "skipped", "reason": r}),
        Status::Failed(r) => json!({"status": "failed", "reason": r}),
    }
}

/// Every sample and summary, with `meta` (command, host, VMMs) on top.
pub fn json(results: &[ScenarioResult], meta: Json) -> Json {
    let scenarios: Vec<Json> = results
        .iter()
        .map(|r| {
            let figures: Vec<Json> = r
                .figure_names()
                .into_iter()
                .map(|(name, unit)| {
                    let mut fig = json!({"name": name, "unit": unit.name,
                                         "higher_is_better": unit.higher_is_better});
                    for side in &r.sides {
                        let v = match side.figure(&name) {
                            Some(f) => match &f.unsupported {
                                Some(why) => json!({"unsupported": why}),
                                None => json!({"samples": f.samples,
                                               "summary": f.summary().as_ref().map(summary_json)}),
                            },
                            None => Json::Null,
                        };
                        fig[side.label] = v;
                    }
                    if let Some(x) = r.ratio(&name) {
                        fig["ratio_podvm_over_target"] = json!(x);
                    }
                    fig
                })
                .collect();
            let sides: serde_json::Map<String, Json> = r
                .sides
                .iter()
                .map(|s| (s.label.to_string(), status_json(&s.status)))
                .collect();
            let others: serde_json::Map<String, Json> = r
                .others
                .iter()
                .map(|(label, pids)| (label.clone(), json!(pids)))
                .collect();
            json!({"name": r.name, "about": r.about, "reps": r.reps,
                   "vmms": sides, "other_vmm_processes": others, "figures": figures})
        })
        .collect();
    let mut doc = meta;
    doc["scenarios"] = Json::Array(scenarios);
    doc
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Colours of the VMMs' boxes.
const COLOURS: [&str; 2] = ["#1f77b4", "#ff7f0e"];

/// One SVG of horizontal box plots: a panel per figure with its own scale,
/// a box (p25–p75) with the median, whiskers to min and max, and a tick at
/// p90, one row per VMM.
pub fn svg(r: &ScenarioResult) -> String {
    const W: f64 = 900.0;
    const LEFT: f64 = 300.0;
    const RIGHT: f64 = 130.0;
    const ROW: f64 = 22.0;
    let names = r.figure_names();
    let panel = ROW * r.sides.len() as f64 + 30.0;
    let h = 75.0 + panel * names.len().max(1) as f64;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="10" y="20" font-size="15" font-weight="bold">{} ({} reps)</text>"#,
        esc(r.name),
        r.reps
    );
    let legend: Vec<String> = r
        .sides
        .iter()
        .enumerate()
        .map(|(i, side)| {
            let note = status_text(&side.status).unwrap_or_default();
            format!(
                r#"<tspan fill="{}">■ {}</tspan> {}"#,
                COLOURS[i % 2],
                side.label,
                esc(&note)
            )
        })
        .collect();
    let _ = writeln!(s, r#"<text x="10" y="40">{}</text>"#, legend.join("  "));
    let mut y = 60.0;
    let plot_w = W - LEFT - RIGHT;
    for (name, unit) in &names {
        let sums: Vec<Option<Summary>> = r
            .sides
            .iter()
            .map(|side| side.figure(name).and_then(|f| f.summary()))
            .collect();
        let lo = sums
            .iter()
            .flatten()
            .map(|s| s.min)
            .fold(f64::INFINITY, f64::min);
        let hi = sums
            .iter()
            .flatten()
            .map(|s| s.max)
            .fold(f64::NEG_INFINITY, f64::max);
        // Long tails (scheduling hiccups) would squash the boxes on a
        // linear axis: past a 20x spread the axis is logarithmic.
        let log = lo > 0.0 && lo.is_finite() && hi / lo > 20.0;
        // The axis starts at 0 at the lowest when every value is ≥ 0;
        // signed figures keep their negative side.
        let floor = if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
        let (lo, hi) = if log {
            (lo / 1.1, hi * 1.1)
        } else if lo.is_finite() && hi > lo {
            let pad = (hi - lo) * 0.05;
            ((lo - pad).max(floor), hi + pad)
        } else if lo.is_finite() {
            let pad = lo.abs() * 0.1 + 1e-9;
            ((lo - pad).max(floor), lo + pad)
        } else {
            (0.0, 1.0)
        };
        let x = |v: f64| {
            let f = if log {
                (v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln())
            } else {
                (v - lo) / (hi - lo)
            };
            LEFT + f * plot_w
        };
        let _ = writeln!(
            s,
            r#"<text x="10" y="{}" font-weight="bold">{} ({}{})</text>"#,
            y + 12.0,
            esc(name),
            esc(unit.name),
            if log { ", log scale" } else { "" }
        );
        let _ = writeln!(
            s,
            r##"<text x="{LEFT}" y="{}" fill="#666" font-size="10">{}</text><text x="{}" y="{}" fill="#666" font-size="10" text-anchor="end">{}</text>"##,
            y + 12.0,
            num(lo),
            LEFT + plot_w,
            y + 12.0,
            num(hi)
        );
        for (i, sum) in sums.iter().enumerate() {
            let cy = y + 18.0 + ROW * i as f64 + ROW / 2.0;
            let c = COLOURS[i % 2];
            let _ = writeln!(
                s,
                r#"<text x="30" y="{}" fill="{c}">{}</text>"#,
                cy + 4.0,
                r.sides[i].label
            );
            let Some(m) = sum else {
                // The reason is in the legend (scenario) or the table
                // (figure); a word here.
                let why = match &r.sides[i].status {
                    Status::Ran
                        if r.sides[i]
                            .figure(name)
                            .is_some_and(|f| f.unsupported.is_some()) =>
                    {
                        "unsupported"
                    }
                    Status::Ran => "no samples",
                    Status::Unsupported(_) => "not available",
                    Status::Skipped(_) => "skipped",
                    Status::Failed(_) => "failed",
                };
                let _ = writeln!(
                    s,
                    r##"<text x="{LEFT}" y="{}" fill="#999">{}</text>"##,
                    cy + 4.0,
                    why
                );
                continue;
            };
            let (bh, t) = (ROW * 0.6, cy - ROW * 0.3);
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" x2="{:.1}" y1="{cy}" y2="{cy}" stroke="{c}"/>"#,
                x(m.min),
                x(m.max)
            );
            let _ = writeln!(
                s,
                r#"<rect x="{:.1}" y="{t:.1}" width="{:.1}" height="{bh:.1}" fill="{c}" fill-opacity="0.35" stroke="{c}"/>"#,
                x(m.p25),
                (x(m.p75) - x(m.p25)).max(1.0)
            );
            let _ = writeln!(
                s,
                r#"<line x1="{0:.1}" x2="{0:.1}" y1="{t:.1}" y2="{1:.1}" stroke="{c}" stroke-width="2.5"/>"#,
                x(m.median),
                t + bh
            );
            let _ = writeln!(
                s,
                r#"<line x1="{0:.1}" x2="{0:.1}" y1="{1:.1}" y2="{2:.1}" stroke="{c}" stroke-dasharray="2,2"/>"#,
                x(m.p90),
                t - 2.0,
                t + bh + 2.0
            );
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" fill="{c}">median {}</text>"#,
                LEFT + plot_w + 8.0,
                cy + 4.0,
                num(m.median)
            );
        }
        y += panel;
    }
    let _ = writeln!(
        s,
        r##"<text x="10" y="{}" fill="#666" font-size="10">box: p25-p75, thick line: median, dashed: p90, whiskers: min-max</text>"##,
        h - 6.0
    );
    s.push_str("</svg>\n");
    s
}

/// Writes `DIR/<scenario>.svg` for every scenario.
pub fn write_plots(dir: &Path, results: &[ScenarioResult]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for r in results {
        std::fs::write(dir.join(format!("{}.svg", r.name)), svg(r))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result() -> ScenarioResult {
        let mut p = Side::new("podvm");
        let mut t = Side::new("target");
        for i in 0..4 {
            p.record(vec![
                Sample::new("lat", MS, 1.0 + f64::from(i)),
                Sample::new("rate", PER_S, 100.0),
                Sample::unsupported("nope", MS, "x"),
            ]);
            t.record(vec![
                Sample::new("lat", MS, 5.0),
                Sample::new("rate", PER_S, 50.0),
            ]);
        }
        ScenarioResult {
            name: "demo",
            about: "a <demo>",
            reps: 4,
            sides: vec![p, t],
            others: vec![("podvm".into(), vec![42]), ("target".into(), vec![])],
        }
    }

    #[test]
    fn numbers_keep_three_digits() {
        assert_eq!(num(1.23456), "1.235");
        assert_eq!(num(12.3456), "12.35");
        assert_eq!(num(123.456), "123.5");
        assert_eq!(num(12345.6), "12346");
    }

    #[test]
    fn table_has_ratios_and_marks() {
        let t = table(&[result()]);
        assert!(t.contains("== demo (4 reps)"), "{t}");
        let lat = t
            .lines()
            .find(|l| l.trim_start().starts_with("lat "))
            .unwrap();
        assert!(lat.contains("0.500 (better)"), "{lat}");
        let rate = t
            .lines()
            .find(|l| l.trim_start().starts_with("rate "))
            .unwrap();
        assert!(rate.contains("2.000 (better)"), "{rate}");
        assert!(t.contains("podvm: nope unsupported: x"), "{t}");
        assert!(
            t.contains("other VMM processes running at the start (lower PSS, noisier times): podvm binary: 1 (pids [42])"),
            "{t}"
        );
    }

    #[test]
    fn ties_are_not_called_better_or_worse() {
        assert_eq!(verdict(0.5, false), "(better)");
        assert_eq!(verdict(0.5, true), "(worse)");
        assert_eq!(verdict(2.0, true), "(better)");
        assert_eq!(verdict(2.0, false), "(worse)");
        assert_eq!(verdict(0.96, false), "≈");
        assert_eq!(verdict(1.049, true), "≈");
        assert_eq!(verdict(1.0, false), "≈");
        assert_eq!(verdict(0.94, false), "(better)");
        assert_eq!(verdict(1.06, false), "(worse)");
        // A near tie in the table: podvm's lat samples 1..4 and 5.1 x5
        // (median 5.1) over the target's 5.0 → 1.02.
        let mut r = result();
        for _ in 0..5 {
            r.sides[0].record(vec![Sample::new("lat", MS, 5.1)]);
        }
        let t = table(&[r]);
        let lat = t
            .lines()
            .find(|l| l.trim_start().starts_with("lat "))
            .unwrap();
        assert!(lat.ends_with("| 1.020 ≈"), "{lat}");
    }

    #[test]
    fn markdown_rows() {
        let m = markdown(&[result()]);
        assert!(m.starts_with("| scenario | figure |"), "{m}");
        assert!(
            m.contains("| demo | lat | ms | 2.500 (3.700) | 5.000 (5.000) | 0.500 |"),
            "{m}"
        );
        assert!(
            m.contains("| demo | nope | ms | unsupported | - | n/a |"),
            "{m}"
        );
    }

    #[test]
    fn json_has_every_sample() {
        let j = json(&[result()], json!({"tool": "podvm-perf"}));
        assert_eq!(j["tool"], "podvm-perf");
        let f = &j["scenarios"][0]["figures"][0];
        assert_eq!(f["name"], "lat");
        assert_eq!(f["podvm"]["samples"].as_array().unwrap().len(), 4);
        assert_eq!(f["podvm"]["summary"]["median"], 2.5);
        assert_eq!(f["ratio_podvm_over_target"], 0.5);
        assert_eq!(j["scenarios"][0]["figures"][2]["podvm"]["unsupported"], "x");
        assert_eq!(
            j["scenarios"][0]["other_vmm_processes"]["podvm"],
            json!([42])
        );
        assert_eq!(
            j["scenarios"][0]["other_vmm_processes"]["target"],
            json!([])
        );
    }

    #[test]
    fn json_reads_back() {
        let r = result();
        let back = from_json(&json(std::slice::from_ref(&r), json!({}))).unwrap_err();
        assert!(back.contains("unknown scenario"), "{back}");
        let mut r = r;
        r.name = "boot";
        let back = from_json(&json(&[r.clone()], json!({}))).unwrap();
        assert_eq!(back.len(), 1);
        assert!(back[0].about.contains("InstanceStart"));
        for (a, b) in back[0].sides.iter().zip(&r.sides) {
            assert_eq!(a.status, b.status);
            assert_eq!(a.figures, b.figures);
        }
        assert_eq!(back[0].others, r.others);
        assert!(table(&back).contains("== boot (4 reps)"));
    }

    #[test]
    fn svg_escapes_names() {
        let mut r = result();
        r.sides[0].record(vec![Sample::new("a<b>&c", MS, 1.0)]);
        r.sides[0].status = Status::Failed("x <y> & z".into());
        let s = svg(&r);
        assert!(s.contains("a&lt;b&gt;&amp;c"), "{s}");
        assert!(s.contains("x &lt;y&gt; &amp; z"), "{s}");
        assert!(!s.contains("<b>") && !s.contains("<y>"), "{s}");
    }

    /// The axis labels of the panel of figure `name`: (lo, hi).
    fn axis(s: &str, name: &str) -> (f64, f64) {
        let at = s.find(&format!(">{name} (")).unwrap();
        let rest = &s[at..];
        let labels: Vec<f64> = rest
            .split("font-size=\"10\"")
            .skip(1)
            .take(2)
            .map(|t| {
                t[t.find('>').unwrap() + 1..t.find('<').unwrap()]
                    .parse()
                    .unwrap()
            })
            .collect();
        (labels[0], labels[1])
    }

    #[test]
    fn axes_clamp_at_zero_only_for_values_that_are_all_positive() {
        let mut p = Side::new("podvm");
        for x in [-3.0, -1.0, 2.0] {
            p.record(vec![
                Sample::new("signed", MIB, x),
                Sample::new("all_neg", MIB, x - 10.0),
                Sample::new("pos", MIB, x + 3.0),
                Sample::new("one", MIB, -2.0),
            ]);
        }
        let r = ScenarioResult {
            name: "demo",
            about: "",
            reps: 3,
            sides: vec![p],
            others: vec![],
        };
        let s = svg(&r);
        let (lo, hi) = axis(&s, "signed");
        assert!(lo < -3.0 && hi > 2.0, "{lo} {hi}");
        let (lo, hi) = axis(&s, "all_neg");
        assert!(lo < -13.0 && hi > -8.0 && hi < 0.0, "{lo} {hi}");
        // 0 .. 5: the pad would go below 0, the axis stops at 0.
        let (lo, hi) = axis(&s, "pos");
        assert!(lo == 0.0 && hi > 5.0, "{lo} {hi}");
        let (lo, hi) = axis(&s, "one");
        assert!(lo < -2.0 && hi > -2.0, "{lo} {hi}");
    }

    #[test]
    fn svg_is_well_formed_enough() {
        let s = svg(&result());
        assert!(s.starts_with("<svg"));
        assert!(s.trim_end().ends_with("</svg>"));
        // Names and labels are escaped: no stray tag.
        assert!(!s.contains("<demo>"), "{s}");
        assert_eq!(
            s.matches("<rect x=").count(),
            4,
            "2 figures x 2 VMMs have boxes"
        );
    }

    #[test]
    fn two_clusters_are_reported_everywhere() {
        let mut p = Side::new("podvm");
        for i in 0..10 {
            p.record(vec![Sample::new("lat", MS, 5.3 + 0.07 * f64::from(i))]);
            p.record(vec![Sample::new("lat", MS, 21.0 + 0.8 * f64::from(i))]);
        }
        let r = ScenarioResult {
            name: "demo",
            about: "",
            reps: 20,
            sides: vec![p],
            others: vec![],
        };
        let want = "two clusters: 5.615 ms in 10/20, 24.60 ms in 10/20";
        let t = table(std::slice::from_ref(&r));
        assert!(t.contains(&format!("     podvm lat: {want}")), "{t}");
        // The plain median stays.
        assert!(t.contains("13.46"), "{t}");
        let m = markdown(std::slice::from_ref(&r));
        assert!(
            m.contains(&format!("| demo | lat | ms | 13.46 (26.68); {want} |")),
            "{m}"
        );
        let j = json(&[r], json!({}));
        let c = &j["scenarios"][0]["figures"][0]["podvm"]["summary"]["clusters"];
        assert_eq!(c["low"]["n"], 10);
        assert_eq!(c["high"]["n"], 10);
        assert_eq!(c["high"]["median"], 24.6);
        // One group: no line, and null in the JSON.
        let j = json(&[result()], json!({}));
        assert!(j["scenarios"][0]["figures"][0]["podvm"]["summary"]["clusters"].is_null());
        assert!(!table(&[result()]).contains("two clusters"));
    }
}
