//! The latency histogram: log-linear buckets, quantiles.

/// A log-linear histogram of microseconds in the manner of HDR histograms: exact below
/// 128 µs, then 64 linear sub-buckets per power of two, so a reported value is within
/// 1.6 % of the true one. Recording is an index computation and an increment.
#[derive(Clone, Debug)]
pub(crate) struct Histogram {
    pub(crate) counts: Vec<u64>,
    pub(crate) total: u64,
    pub(crate) sum: u128,
    pub(crate) max: u64,
}

pub(crate) const SUB_BUCKETS: u64 = 64;

impl Histogram {
    pub(crate) fn new() -> Self {
        Self {
            counts: vec![0; Self::index(u64::MAX) + 1],
            total: 0,
            sum: 0,
            max: 0,
        }
    }

    pub(crate) fn index(v: u64) -> usize {
        if v < 2 * SUB_BUCKETS {
            return v as usize;
        }
        let msb = 63 - u64::from(v.leading_zeros());
        // Keep the 7 top bits: `v >> shift` is in [64, 128).
        let shift = msb - 6;
        (shift * SUB_BUCKETS + (v >> shift)) as usize
    }

    /// Highest value that lands in bucket `i`.
    pub(crate) fn highest(i: usize) -> u64 {
        let i = i as u64;
        if i < 2 * SUB_BUCKETS {
            return i;
        }
        let shift = i / SUB_BUCKETS - 1;
        let sub = i % SUB_BUCKETS + SUB_BUCKETS;
        ((sub + 1) << shift).saturating_sub(1)
    }

    pub(crate) fn record(&mut self, micros: u64) {
        self.counts[Self::index(micros)] += 1;
        self.total += 1;
        self.sum += u128::from(micros);
        self.max = self.max.max(micros);
    }

    pub(crate) fn merge(&mut self, other: &Self) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    /// The value at quantile `q` (0..=1): the highest value of the bucket holding the
    /// rank, never above the largest value recorded.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Self::highest(i).min(self.max);
            }
        }
        self.max
    }

    pub(crate) fn mean(&self) -> f64 {
        if self.total == 0 {
            0.0
        } else {
            self.sum as f64 / self.total as f64
        }
    }
}
