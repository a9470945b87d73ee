//! Order statistics of a figure's samples: min / median / p90 / max (and
//! the quartiles the box plots draw).

/// What the table, the JSON and the plots report for one figure on one VMM.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    /// How many samples.
    pub n: usize,
    /// The smallest sample.
    pub min: f64,
    /// The 25th percentile.
    pub p25: f64,
    /// The median.
    pub median: f64,
    /// The 75th percentile.
    pub p75: f64,
    /// The 90th percentile.
    pub p90: f64,
    /// The 99th percentile.
    pub p99: f64,
    /// The largest sample.
    pub max: f64,
}

/// The `p`-th percentile (0..=100) of sorted `xs`, interpolated linearly
/// between the two closest ranks (the method of numpy's default and of
/// most spreadsheets), so that the median of an even count is the mean of
/// the middle two. `None` for no samples.
pub fn percentile_sorted(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let p = p.clamp(0.0, 100.0);
    let rank = p / 100.0 * (xs.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    let frac = rank - lo as f64;
    Some(xs[lo] + (xs[hi] - xs[lo]) * frac)
}

/// Sorts a copy of `samples` (NaNs dropped) and summarises it; `None` when
/// nothing is left.
pub fn summarize(samples: &[f64]) -> Option<Summary> {
    let mut xs: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    xs.sort_by(f64::total_cmp);
    let p = |q| percentile_sorted(&xs, q);
    Some(Summary {
        n: xs.len(),
        min: *xs.first()?,
        p25: p(25.0)?,
        median: p(50.0)?,
        p75: p(75.0)?,
        p90: p(90.0)?,
        p99: p(99.0)?,
        max: *xs.last()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_has_no_summary() {
        assert_eq!(summarize(&[]), None);
        assert_eq!(summarize(&[f64::NAN]), None);
        assert_eq!(percentile_sorted(&[], 50.0), None);
    }

    #[test]
    fn one_sample_is_every_statistic() {
        let s = summarize(&[3.5]).unwrap();
        assert_eq!(
            (s.n, s.min, s.median, s.p90, s.max),
            (1, 3.5, 3.5, 3.5, 3.5)
        );
    }

    #[test]
    fn median_of_even_count_is_mean_of_middle_two() {
        let s = summarize(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(s.min, 1.0);
        assert_eq!(s.median, 2.5);
        assert_eq!(s.max, 4.0);
    }

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let xs: Vec<f64> = (1..=11).map(f64::from).collect(); // 1..=11
        let s = summarize(&xs).unwrap();
        assert_eq!(s.median, 6.0);
        assert_eq!(s.p90, 10.0);
        assert_eq!(s.p25, 3.5);
        assert!((s.p99 - 10.9).abs() < 1e-9);
        let xs: Vec<f64> = (1..=10).map(f64::from).collect();
        assert!((percentile_sorted(&xs, 90.0).unwrap() - 9.1).abs() < 1e-9);
    }

    #[test]
    fn order_of_input_does_not_matter_and_nans_are_dropped() {
        let a = summarize(&[5.0, f64::NAN, 1.0, 9.0]).unwrap();
        let b = summarize(&[9.0, 1.0, 5.0]).unwrap();
        assert_eq!(a, b);
    }
}
