//! Statistics for comparing models across folds: the Wilcoxon signed-rank test with SciPy
//! 1.17's exact, permutation and normal-approximation p-values, the smallest p-value n folds can
//! reach (and a plain-words warning when it cannot reach α), and fold-table summaries.
//!
//! SciPy's rules, which `wilcoxon` follows (zero_method='wilcox' only):
//! - zero differences are dropped; `count` = the non-zero ones, ranked by |d| with average ranks;
//! - `Exact`: the null distribution of r⁺ for `count` untied ranks, with a non-integral r⁺
//!   (ties) rounded up for the lower tail and down for the upper tail (conservative);
//! - `Asymptotic`: z = (r⁺ − count(count+1)/4) / σ with the tie-corrected σ, optional
//!   continuity correction of 0.5 towards the mean;
//! - `Auto` (SciPy's default): more than 50 differences → asymptotic; no ties and no zeros →
//!   exact; otherwise, with at most 13 differences, an exhaustive sign-flip permutation test
//!   (the exact null distribution given the tied ranks), and the normal approximation beyond.

use serde::{Deserialize, Serialize};

use super::special::{normal_cdf, normal_sf};
use super::EvalError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alternative {
    /// The differences are not symmetric about zero.
    TwoSided,
    /// x tends to be greater than y.
    Greater,
    /// x tends to be less than y.
    Less,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WilcoxonMethod {
    Auto,
    Exact,
    Asymptotic,
}

/// How the p-value was finally computed (`Auto` resolves to one of these).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodUsed {
    Exact,
    Permutation,
    Asymptotic,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WilcoxonOptions {
    pub alternative: Alternative,
    pub method: WilcoxonMethod,
    /// Continuity correction for the normal approximation (SciPy's default: off).
    pub correction: bool,
}

impl Default for WilcoxonOptions {
    fn default() -> Self {
        Self {
            alternative: Alternative::TwoSided,
            method: WilcoxonMethod::Auto,
            correction: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WilcoxonResult {
    /// SciPy's statistic: min(r⁺, r⁻) for two-sided, r⁺ otherwise.
    pub statistic: f64,
    pub pvalue: f64,
    pub r_plus: f64,
    pub r_minus: f64,
    /// The standardised statistic, when the normal approximation was used.
    pub zstatistic: Option<f64>,
    pub method: MethodUsed,
    pub alternative: Alternative,
    /// Number of pairs, zero differences included.
    pub n: usize,
    pub zeros: usize,
    pub has_ties: bool,
}

/// Largest number of non-zero differences the exact method accepts: building the null
/// distribution costs about n³/6 operations and n²/2 numbers (SciPy has no limit).
pub const MAX_EXACT_PAIRS: usize = 1000;

/// Wilcoxon signed-rank test on paired samples, d = x − y, as `scipy.stats.wilcoxon(x, y)`.
pub fn wilcoxon(
    x: &[f64],
    y: &[f64],
    options: WilcoxonOptions,
) -> Result<WilcoxonResult, EvalError> {
    if x.len() != y.len() {
        return Err(EvalError::Unpaired {
            left: x.len(),
            right: y.len(),
        });
    }
    let d: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b).collect();
    wilcoxon_differences(&d, options)
}

/// Wilcoxon signed-rank test on differences, as `scipy.stats.wilcoxon(d)`.
pub fn wilcoxon_differences(
    d: &[f64],
    options: WilcoxonOptions,
) -> Result<WilcoxonResult, EvalError> {
    if d.is_empty() {
        return Err(EvalError::Empty {
            what: "the paired sample",
        });
    }
    if let Some(&value) = d.iter().find(|v| !v.is_finite()) {
        return Err(EvalError::NonFiniteSample { value });
    }
    let n = d.len();
    let zeros = d.iter().filter(|&&v| v == 0.0).count();
    let nonzero: Vec<f64> = d.iter().copied().filter(|&v| v != 0.0).collect();
    if nonzero.is_empty() {
        return Err(EvalError::AllDifferencesZero);
    }
    let (ranks, tie_sizes) = average_ranks(&nonzero.iter().map(|v| v.abs()).collect::<Vec<_>>());
    // Rank sums start from +0.0: Rust's float `sum` of nothing is -0.0, SciPy's is 0.0.
    let rank_sum = |keep: fn(f64) -> bool| -> f64 {
        nonzero
            .iter()
            .zip(&ranks)
            .filter(|(v, _)| keep(**v))
            .fold(0.0, |acc, (_, r)| acc + r)
    };
    let r_plus = rank_sum(|v| v > 0.0);
    let r_minus = rank_sum(|v| v < 0.0);
    let has_ties = tie_sizes.iter().any(|&t| t > 1);

    let method = match options.method {
        WilcoxonMethod::Exact => MethodUsed::Exact,
        WilcoxonMethod::Asymptotic => MethodUsed::Asymptotic,
        WilcoxonMethod::Auto if n > 50 => MethodUsed::Asymptotic,
        WilcoxonMethod::Auto if !has_ties && zeros == 0 => MethodUsed::Exact,
        WilcoxonMethod::Auto if n <= 13 => MethodUsed::Permutation,
        WilcoxonMethod::Auto => MethodUsed::Asymptotic,
    };

    if method == MethodUsed::Exact && nonzero.len() > MAX_EXACT_PAIRS {
        return Err(EvalError::ExactTooLarge {
            n: nonzero.len(),
            max: MAX_EXACT_PAIRS,
        });
    }
    let count = nonzero.len() as f64;
    let alternative = options.alternative;
    let (pvalue, zstatistic) = match method {
        MethodUsed::Exact => (exact_pvalue(nonzero.len(), r_plus, alternative), None),
        MethodUsed::Permutation => (permutation_pvalue(&ranks, r_plus, alternative), None),
        MethodUsed::Asymptotic => {
            let mean = count * (count + 1.0) * 0.25;
            let tie_correction: f64 = tie_sizes.iter().map(|&t| (t * t * t - t) as f64).sum();
            let se = ((count * (count + 1.0) * (2.0 * count + 1.0) - tie_correction / 2.0) / 24.0)
                .sqrt();
            let mut z = (r_plus - mean) / se;
            if options.correction {
                let sign = match alternative {
                    Alternative::Greater => 1.0,
                    Alternative::Less => -1.0,
                    Alternative::TwoSided => sign_or_zero(z),
                };
                z -= sign * 0.5 / se;
            }
            let p = match alternative {
                Alternative::Less => normal_cdf(z),
                Alternative::Greater => normal_sf(z),
                Alternative::TwoSided => 2.0 * normal_sf(z.abs()),
            };
            let reported_z = if alternative == Alternative::TwoSided {
                -z.abs()
            } else {
                z
            };
            (p, Some(reported_z))
        }
    };
    let statistic = if alternative == Alternative::TwoSided {
        r_plus.min(r_minus)
    } else {
        r_plus
    };
    Ok(WilcoxonResult {
        statistic,
        pvalue,
        r_plus,
        r_minus,
        zstatistic,
        method,
        alternative,
        n,
        zeros,
        has_ties,
    })
}

fn sign_or_zero(z: f64) -> f64 {
    if z > 0.0 {
        1.0
    } else if z < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// Average ranks (1-based) of the values, and the size of every group of equal values.
fn average_ranks(values: &[f64]) -> (Vec<f64>, Vec<usize>) {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    let mut ranks = vec![0.0; values.len()];
    let mut groups = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        // Ranks start+1 ..= end share their mean.
        let rank = (start + 1 + end) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        groups.push(end - start);
        start = end;
    }
    (ranks, groups)
}

/// P(r⁺ = k) for k = 0 ..= n(n+1)/2 with n untied ranks, built as SciPy does (halving each step).
fn signed_rank_pmf(n: usize) -> Vec<f64> {
    let mut pmf = vec![1.0];
    for k in 1..=n {
        let mut next = vec![0.0; k * (k + 1) / 2 + 1];
        let shift = next.len() - pmf.len();
        for (i, p) in pmf.iter().enumerate() {
            next[i] += p * 0.5;
            next[shift + i] += p * 0.5;
        }
        pmf = next;
    }
    pmf
}

fn exact_pvalue(count: usize, r_plus: f64, alternative: Alternative) -> f64 {
    let pmf = signed_rank_pmf(count);
    let mean = count as f64 * (count as f64 + 1.0) / 4.0;
    let sum = |range: std::ops::Range<usize>| -> f64 {
        let end = range.end.min(pmf.len());
        if range.start >= end {
            0.0
        } else {
            pmf[range.start..end].iter().sum()
        }
    };
    // SciPy's WilcoxonDistribution: sum the short tail directly, the long one by complement.
    let cdf = |k: usize| {
        if k as f64 <= mean {
            sum(0..k + 1)
        } else {
            1.0 - sum(k + 1..pmf.len())
        }
    };
    let sf = |k: usize| {
        if k as f64 <= mean {
            sum(k..pmf.len())
        } else {
            1.0 - sum(0..k)
        }
    };
    // With ties r⁺ may be a half-integer: round towards the conservative side.
    let (up, down) = (r_plus.ceil() as usize, r_plus.floor() as usize);
    match alternative {
        Alternative::Less => cdf(up),
        Alternative::Greater => sf(down),
        Alternative::TwoSided => (2.0 * sf(down).min(cdf(up))).clamp(0.0, 1.0),
    }
}

/// Exhaustive sign-flip test: r⁺ over all 2^count sign assignments of the (tied) ranks.
/// Zero differences would only double every count, so they are left out.
fn permutation_pvalue(ranks: &[f64], r_plus: f64, alternative: Alternative) -> f64 {
    // Average ranks are multiples of 1/2: count subset sums of the doubled ranks exactly.
    let doubled: Vec<usize> = ranks.iter().map(|r| (r * 2.0).round() as usize).collect();
    let total: usize = doubled.iter().sum();
    let mut ways = vec![0u64; total + 1];
    ways[0] = 1;
    for &r in &doubled {
        for s in (r..=total).rev() {
            ways[s] += ways[s - r];
        }
    }
    let observed = (r_plus * 2.0).round() as usize;
    let permutations = 2f64.powi(ranks.len() as i32);
    let less = ways[..=observed].iter().sum::<u64>() as f64 / permutations;
    let greater = ways[observed..].iter().sum::<u64>() as f64 / permutations;
    match alternative {
        Alternative::Less => less,
        Alternative::Greater => greater,
        Alternative::TwoSided => (2.0 * less.min(greater)).clamp(0.0, 1.0),
    }
}

/// The smallest p-value the exact test can give with `n` untied, non-zero paired differences:
/// every difference on the same side, 1/2ⁿ one-sided and 2/2ⁿ two-sided.
pub fn min_exact_pvalue(n: usize, alternative: Alternative) -> f64 {
    let one_sided = 0.5f64.powi(n as i32);
    match alternative {
        Alternative::TwoSided => (2.0 * one_sided).min(1.0),
        Alternative::Greater | Alternative::Less => one_sided,
    }
}

/// Whether n paired folds can reach significance level α at all, in plain words.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reachability {
    pub n: usize,
    pub alpha: f64,
    pub min_pvalue: f64,
    /// min_pvalue <= alpha.
    pub reachable: bool,
    /// The fewest pairs with which the test can reach α.
    pub pairs_needed: usize,
    pub message: String,
}

pub fn reachability(n: usize, alpha: f64, alternative: Alternative) -> Reachability {
    let min_pvalue = min_exact_pvalue(n, alternative);
    let reachable = min_pvalue <= alpha;
    let pairs_needed = (1..=64)
        .find(|&m| min_exact_pvalue(m, alternative) <= alpha)
        .unwrap_or(64);
    let sided = match alternative {
        Alternative::TwoSided => "two-sided",
        Alternative::Greater | Alternative::Less => "one-sided",
    };
    let message = if reachable {
        format!(
            "With {n} paired folds the exact {sided} Wilcoxon signed-rank test can reach p = {} \
             (when one model wins on every fold), so significance at α = {alpha} is attainable.",
            fmt_p(min_pvalue)
        )
    } else {
        format!(
            "With {n} paired folds the exact {sided} Wilcoxon signed-rank test cannot give a p-value \
             below {} — even if one model wins on every fold — so it can never be significant at \
             α = {alpha}. Read the result as descriptive; {pairs_needed} or more folds are needed \
             to reach α = {alpha}.",
            fmt_p(min_pvalue)
        )
    };
    Reachability {
        n,
        alpha,
        min_pvalue,
        reachable,
        pairs_needed,
        message,
    }
}

/// Student's paired t-test on differences, as `scipy.stats.ttest_rel(x, y)` (or
/// `ttest_1samp(d, 0)`): t = mean / (sd / √n) with the sample sd, n − 1 degrees of freedom.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedTResult {
    pub statistic: f64,
    pub pvalue: f64,
    pub df: usize,
    pub alternative: Alternative,
}

pub fn paired_t_differences(
    d: &[f64],
    alternative: Alternative,
) -> Result<PairedTResult, EvalError> {
    let summary = summarize(d).ok_or(EvalError::Empty {
        what: "the paired sample",
    })?;
    let Some(sd) = summary.std else {
        return Err(EvalError::Empty {
            what: "a second pair (the t-test needs two or more)",
        });
    };
    if sd == 0.0 && summary.mean == 0.0 {
        return Err(EvalError::AllDifferencesZero);
    }
    let n = d.len() as f64;
    let t = summary.mean / (sd / n.sqrt());
    let df = n - 1.0;
    let pvalue = match alternative {
        Alternative::TwoSided => (2.0 * super::special::student_t_sf(t.abs(), df)).min(1.0),
        Alternative::Greater => super::special::student_t_sf(t, df),
        Alternative::Less => super::special::student_t_sf(-t, df),
    };
    Ok(PairedTResult {
        statistic: t,
        pvalue,
        df: d.len() - 1,
        alternative,
    })
}

/// p-values in plain text: 4 significant digits, no exponent for the usual range.
pub fn fmt_p(p: f64) -> String {
    if p >= 1e-4 {
        let s = format!("{p:.6}");
        let trimmed = s.trim_end_matches('0').trim_end_matches('.');
        trimmed.to_string()
    } else {
        format!("{p:.3e}")
    }
}

/// Mean and sample standard deviation of a column of a fold table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub n: usize,
    pub mean: f64,
    /// Sample standard deviation (ddof = 1, numpy's `std(ddof=1)`); `None` below two values.
    pub std: Option<f64>,
}

pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    let mean = values.iter().sum::<f64>() / n as f64;
    let std = (n >= 2).then(|| {
        (values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / (n - 1) as f64).sqrt()
    });
    Some(Summary { n, mean, std })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_folds_cannot_reach_five_percent() {
        let r = reachability(5, 0.05, Alternative::TwoSided);
        assert_eq!(r.min_pvalue, 0.0625);
        assert!(!r.reachable);
        assert_eq!(r.pairs_needed, 6);
        assert!(
            r.message.contains("cannot give a p-value below 0.0625"),
            "{}",
            r.message
        );
        assert!(reachability(6, 0.05, Alternative::TwoSided).reachable);
        assert!(reachability(5, 0.05, Alternative::Greater).reachable);
    }

    #[test]
    fn pmf_sums_to_one_and_is_symmetric() {
        let pmf = signed_rank_pmf(7);
        assert_eq!(pmf.len(), 29);
        assert!((pmf.iter().sum::<f64>() - 1.0).abs() < 1e-15);
        for k in 0..pmf.len() {
            assert_eq!(pmf[k], pmf[pmf.len() - 1 - k]);
        }
    }

    #[test]
    fn average_ranks_share_ties() {
        let (ranks, groups) = average_ranks(&[3.0, 1.0, 3.0, 2.0]);
        assert_eq!(ranks, vec![3.5, 1.0, 3.5, 2.0]);
        assert_eq!(groups, vec![1, 1, 2]);
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!(
            wilcoxon(&[1.0], &[1.0, 2.0], WilcoxonOptions::default()),
            Err(EvalError::Unpaired { left: 1, right: 2 })
        );
        assert_eq!(
            wilcoxon(&[1.0, 2.0], &[1.0, 2.0], WilcoxonOptions::default()),
            Err(EvalError::AllDifferencesZero)
        );
        assert!(wilcoxon_differences(&[f64::NAN], WilcoxonOptions::default()).is_err());
        let many: Vec<f64> = (1..=1001).map(f64::from).collect();
        let exact = WilcoxonOptions {
            method: WilcoxonMethod::Exact,
            ..WilcoxonOptions::default()
        };
        assert!(matches!(
            wilcoxon_differences(&many, exact),
            Err(EvalError::ExactTooLarge { .. })
        ));
        assert_eq!(
            wilcoxon_differences(&many, WilcoxonOptions::default())
                .unwrap()
                .method,
            MethodUsed::Asymptotic
        );
    }
}
