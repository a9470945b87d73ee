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
    /// Two clusters, when the samples fall apart into two (then the
    /// median may lie where no sample is).
    pub clusters: Option<Clusters>,
}

/// Samples that fall into two groups: the largest ratio between
/// consecutive sorted samples is over [`CLUSTER_GAP`], with at least
/// [`CLUSTER_SHARE`] of the samples (and two) on each side of it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Clusters {
    /// The median of the lower group.
    pub low_median: f64,
    /// How many samples the lower group has.
    pub low_n: usize,
    /// The median of the upper group.
    pub high_median: f64,
    /// How many samples the upper group has.
    pub high_n: usize,
}

/// The ratio between two consecutive sorted samples that splits them.
pub const CLUSTER_GAP: f64 = 2.0;
/// The smallest share of the samples each group must have.
pub const CLUSTER_SHARE: f64 = 0.2;

/// Two clusters in sorted `xs`, if there are: among the split points with
/// enough samples on each side, the one with the largest ratio between
/// its neighbours, if that ratio is over [`CLUSTER_GAP`]. Only positive
/// samples have ratios; a split next to a sample ≤ 0 is not considered.
pub fn clusters_sorted(xs: &[f64]) -> Option<Clusters> {
    let n = xs.len();
    let min_side = ((n as f64 * CLUSTER_SHARE).ceil() as usize).max(2);
    if n < 2 * min_side {
        return None;
    }
    let (split, ratio) = (min_side..=n - min_side)
        .filter(|&i| xs[i - 1] > 0.0)
        .map(|i| (i, xs[i] / xs[i - 1]))
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if ratio <= CLUSTER_GAP {
        return None;
    }
    Some(Clusters {
        low_median: percentile_sorted(&xs[..split], 50.0)?,
        low_n: split,
        high_median: percentile_sorted(&xs[split..], 50.0)?,
        high_n: n - split,
    })
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
        clusters: clusters_sorted(&xs),
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

    #[test]
    fn two_clusters_are_found() {
        // 10 samples at 5.3-6.0 ms, 10 at 21-29 ms: the median (13.5) is
        // where no sample is.
        let mut xs: Vec<f64> = (0..10).map(|i| 5.3 + 0.07 * f64::from(i)).collect();
        xs.extend((0..10).map(|i| 21.0 + 0.8 * f64::from(i)));
        let s = summarize(&xs).unwrap();
        assert!((s.median - 13.465).abs() < 0.01, "{}", s.median);
        let c = s.clusters.unwrap();
        assert_eq!((c.low_n, c.high_n), (10, 10));
        assert!((c.low_median - 5.615).abs() < 1e-9, "{}", c.low_median);
        assert!((c.high_median - 24.6).abs() < 1e-9, "{}", c.high_median);
    }

    #[test]
    fn clusters_need_a_wide_gap_and_enough_samples_each_side() {
        // One slow outlier is a tail, not a cluster.
        let mut xs = vec![5.0; 19];
        xs.push(50.0);
        assert_eq!(summarize(&xs).unwrap().clusters, None);
        // 4 of 20 (20%) up there is a cluster.
        let mut xs = vec![5.0; 16];
        xs.extend([50.0; 4]);
        let c = summarize(&xs).unwrap().clusters.unwrap();
        assert_eq!((c.low_n, c.high_n), (16, 4));
        // 3 of 20 is not.
        let mut xs = vec![5.0; 17];
        xs.extend([50.0; 3]);
        assert_eq!(summarize(&xs).unwrap().clusters, None);
        // A gap of 2x exactly is not enough.
        let mut xs = vec![5.0; 10];
        xs.extend([10.0; 10]);
        assert_eq!(summarize(&xs).unwrap().clusters, None);
        // A spread without a gap is one group.
        let xs: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(summarize(&xs).unwrap().clusters, None);
        // Too few samples to tell.
        assert_eq!(summarize(&[1.0, 1.0, 9.0]).unwrap().clusters, None);
        // The widest eligible gap wins over a wider one at the edge.
        let mut xs = vec![1.0; 8];
        xs.extend([3.0; 8]);
        xs.extend([4.0, 40.0]);
        let c = summarize(&xs).unwrap().clusters.unwrap();
        assert_eq!((c.low_n, c.high_n), (8, 10));
        // Signed figures: no ratio across zero.
        let mut xs = vec![-5.0; 10];
        xs.extend([-0.1; 10]);
        assert_eq!(summarize(&xs).unwrap().clusters, None);
    }
}
