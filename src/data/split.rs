//! Stratified splits: hold-out (train/val/test) and k-fold, plus dropping and merging classes
//! with renumbering.
//!
//! Hold-out sizes are exact: the test and validation totals are `round(N × fraction)`, shared
//! among classes by largest remainder (like scikit-learn's `_approximate_mode`), so every
//! class's share is within one sample of its proportion. K-fold allocates each class's samples
//! to folds exactly like scikit-learn's `StratifiedKFold` (sorted labels dealt round-robin),
//! then shuffles which sample goes to which fold with the seed.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use super::{DataError, ImageSet};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldoutSpec {
    pub train: f64,
    pub val: f64,
    pub test: f64,
    /// Keep each class's proportion in every part; otherwise parts are drawn from all
    /// images at once (sizes still exact).
    pub stratify: bool,
    pub seed: u64,
}

/// Indices into the dataset, each list ascending.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
    pub test: Vec<usize>,
}

/// Stratified k-fold settings, as a stage config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KFoldSpec {
    pub k: usize,
    pub seed: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fold {
    pub train: Vec<usize>,
    pub test: Vec<usize>,
}

fn by_class(labels: &[u32]) -> Vec<Vec<usize>> {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut groups = vec![Vec::new(); classes];
    for (i, &l) in labels.iter().enumerate() {
        groups[l as usize].push(i);
    }
    groups
}

/// Shares `total` among classes in proportion to `available`, largest remainder first, never
/// more than a class has.
fn apportion(available: &[usize], total: usize) -> Vec<usize> {
    let n: usize = available.iter().sum();
    if n == 0 {
        return vec![0; available.len()];
    }
    let exact: Vec<f64> = available
        .iter()
        .map(|&a| a as f64 * total as f64 / n as f64)
        .collect();
    let mut take: Vec<usize> = exact
        .iter()
        .zip(available)
        .map(|(e, &a)| (e.floor() as usize).min(a))
        .collect();
    let mut left = total.saturating_sub(take.iter().sum());
    let mut order: Vec<usize> = (0..available.len()).collect();
    order.sort_by(|&a, &b| {
        (exact[b] - exact[b].floor())
            .total_cmp(&(exact[a] - exact[a].floor()))
            .then(a.cmp(&b))
    });
    while left > 0 {
        let mut progressed = false;
        for &c in &order {
            if left == 0 {
                break;
            }
            if take[c] < available[c] {
                take[c] += 1;
                left -= 1;
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    take
}

/// Train/val/test split of `labels`, stratified when the spec says so.
pub fn holdout(labels: &[u32], spec: &HoldoutSpec) -> Result<Split, DataError> {
    let fractions = [spec.train, spec.val, spec.test];
    if fractions.iter().any(|f| !f.is_finite() || *f < 0.0)
        || (fractions.iter().sum::<f64>() - 1.0).abs() > 1e-6
    {
        return Err(DataError::invalid(
            "holdout split",
            format!("fractions {fractions:?} must be non-negative and sum to 1"),
        ));
    }
    let n = labels.len();
    // Unstratified: one group holding every image, so the same exact sizing applies.
    let groups = if spec.stratify {
        by_class(labels)
    } else {
        vec![(0..n).collect()]
    };
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let shuffled: Vec<Vec<usize>> = groups
        .into_iter()
        .map(|mut g| {
            g.shuffle(&mut rng);
            g
        })
        .collect();
    let sizes: Vec<usize> = shuffled.iter().map(Vec::len).collect();
    let n_test = (n as f64 * spec.test).round() as usize;
    let n_val = ((n as f64 * spec.val).round() as usize).min(n - n_test);
    let test_per_class = apportion(&sizes, n_test);
    let remaining: Vec<usize> = sizes
        .iter()
        .zip(&test_per_class)
        .map(|(s, t)| s - t)
        .collect();
    let val_per_class = apportion(&remaining, n_val);
    let mut split = Split {
        train: Vec::new(),
        val: Vec::new(),
        test: Vec::new(),
    };
    for (c, group) in shuffled.iter().enumerate() {
        let (t, v) = (test_per_class[c], val_per_class[c]);
        split.test.extend_from_slice(&group[..t]);
        split.val.extend_from_slice(&group[t..t + v]);
        split.train.extend_from_slice(&group[t + v..]);
    }
    split.train.sort_unstable();
    split.val.sort_unstable();
    split.test.sort_unstable();
    Ok(split)
}

/// How many samples of each class go to each fold, `[fold][class]`: scikit-learn's allocation,
/// which numbers classes by first appearance, sorts the encoded labels and deals them to the
/// folds in turn.
pub fn kfold_allocation(labels: &[u32], k: usize) -> Vec<Vec<usize>> {
    let classes = labels.iter().map(|&l| l as usize + 1).max().unwrap_or(0);
    let mut rank = vec![usize::MAX; classes];
    let mut by_rank = Vec::new();
    for &l in labels {
        if rank[l as usize] == usize::MAX {
            rank[l as usize] = by_rank.len();
            by_rank.push(l as usize);
        }
    }
    let mut encoded: Vec<usize> = labels.iter().map(|&l| rank[l as usize]).collect();
    encoded.sort_unstable();
    let mut allocation = vec![vec![0usize; classes]; k];
    for (position, &r) in encoded.iter().enumerate() {
        allocation[position % k][by_rank[r]] += 1;
    }
    allocation
}

/// K-fold with shuffling and no stratification (like `KFold(k, shuffle=True)`): the first
/// `n % k` folds hold `n / k + 1` samples, the rest `n / k`; which sample goes where is a
/// permutation drawn from the seed.
pub fn kfold_unstratified(n: usize, k: usize, seed: u64) -> Result<Vec<Fold>, DataError> {
    if k < 2 || k > n {
        return Err(DataError::invalid(
            "k-fold",
            format!("k = {k} needs 2 <= k <= number of samples ({n})"),
        ));
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    let mut fold_of = vec![0usize; n];
    let mut start = 0;
    for f in 0..k {
        let size = n / k + usize::from(f < n % k);
        for &i in &order[start..start + size] {
            fold_of[i] = f;
        }
        start += size;
    }
    Ok((0..k)
        .map(|f| Fold {
            train: (0..n).filter(|&i| fold_of[i] != f).collect(),
            test: (0..n).filter(|&i| fold_of[i] == f).collect(),
        })
        .collect())
}

/// Stratified k-fold with shuffling (like `StratifiedKFold(k, shuffle=True)`): every sample is
/// in exactly one test fold; fold sizes per class match scikit-learn's exactly.
pub fn kfold(labels: &[u32], k: usize, seed: u64) -> Result<Vec<Fold>, DataError> {
    if k < 2 || k > labels.len() {
        return Err(DataError::invalid(
            "k-fold",
            format!(
                "k = {k} needs 2 <= k <= number of samples ({})",
                labels.len()
            ),
        ));
    }
    let allocation = kfold_allocation(labels, k);
    let groups = by_class(labels);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fold_of = vec![0usize; labels.len()];
    for (c, group) in groups.iter().enumerate() {
        let mut folds: Vec<usize> = (0..k)
            .flat_map(|f| std::iter::repeat_n(f, allocation[f][c]))
            .collect();
        folds.shuffle(&mut rng);
        for (&i, &f) in group.iter().zip(&folds) {
            fold_of[i] = f;
        }
    }
    Ok((0..k)
        .map(|f| Fold {
            train: (0..labels.len()).filter(|&i| fold_of[i] != f).collect(),
            test: (0..labels.len()).filter(|&i| fold_of[i] == f).collect(),
        })
        .collect())
}

/// Classes to drop and groups of classes to merge.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClassSpec {
    pub drop: Vec<u32>,
    pub merge: Vec<MergeSpec>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MergeSpec {
    pub classes: Vec<u32>,
    /// Name of the merged class; default: the name of `into`, else the members' names
    /// joined by " + ".
    #[serde(default)]
    pub name: Option<String>,
    /// The member whose name the merged class takes (`merge [1, 2] into 1`).
    #[serde(default)]
    pub into: Option<u32>,
}

/// The outcome of dropping and merging: the old→new class map (reported to the user), new
/// names, and which samples survive.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassMapping {
    /// `old_to_new[old]` is the new id, or `None` for a dropped class.
    pub old_to_new: Vec<Option<u32>>,
    pub class_names: Vec<String>,
}

impl ClassMapping {
    /// Human-readable lines: `3 Smooth, Cigar shaped -> 2`, `5 ... -> dropped`.
    pub fn report(&self, old_names: &[String]) -> Vec<String> {
        self.old_to_new
            .iter()
            .enumerate()
            .map(|(old, new)| {
                let name = old_names.get(old).map(String::as_str).unwrap_or("?");
                match new {
                    Some(n) => format!("{old} {name} -> {n} {}", self.class_names[*n as usize]),
                    None => format!("{old} {name} -> dropped"),
                }
            })
            .collect()
    }
}

/// Builds the class mapping: survivors keep their relative order, a merged group taking the
/// place of its smallest member.
pub fn class_mapping(class_names: &[String], spec: &ClassSpec) -> Result<ClassMapping, DataError> {
    let classes = class_names.len();
    let check = |c: u32| {
        if (c as usize) < classes {
            Ok(())
        } else {
            Err(DataError::UnknownClass { class: c, classes })
        }
    };
    let mut group_of: Vec<usize> = (0..classes).collect();
    let mut merged_name: Vec<Option<String>> = vec![None; classes];
    for (g, m) in spec.merge.iter().enumerate() {
        if m.classes.is_empty() {
            return Err(DataError::invalid(
                "class merge",
                format!("merge group {g} is empty"),
            ));
        }
        for &c in &m.classes {
            check(c)?;
            if spec.drop.contains(&c) {
                return Err(DataError::invalid(
                    "class merge",
                    format!("class {c} is both dropped and merged"),
                ));
            }
        }
        let head = *m.classes.iter().min().unwrap_or(&0) as usize;
        for &c in &m.classes {
            if group_of[c as usize] != c as usize && group_of[c as usize] != head {
                return Err(DataError::invalid(
                    "class merge",
                    format!("class {c} is in two merge groups"),
                ));
            }
            group_of[c as usize] = head;
        }
        if let Some(into) = m.into {
            check(into)?;
        }
        let into_name = m.into.map(|c| class_names[c as usize].clone());
        let name = m.name.clone().or(into_name).unwrap_or_else(|| {
            let mut members = m.classes.clone();
            members.sort_unstable();
            members.dedup();
            members
                .iter()
                .map(|&c| class_names[c as usize].as_str())
                .collect::<Vec<_>>()
                .join(" + ")
        });
        merged_name[head] = Some(name);
    }
    for &c in &spec.drop {
        check(c)?;
    }
    let mut new_id_of_head = vec![None; classes];
    let mut names = Vec::new();
    for c in 0..classes {
        if group_of[c] == c && !spec.drop.contains(&(c as u32)) {
            new_id_of_head[c] = Some(names.len() as u32);
            names.push(
                merged_name[c]
                    .clone()
                    .unwrap_or_else(|| class_names[c].clone()),
            );
        }
    }
    let old_to_new = (0..classes)
        .map(|c| {
            if spec.drop.contains(&(c as u32)) {
                None
            } else {
                new_id_of_head[group_of[c]]
            }
        })
        .collect();
    Ok(ClassMapping {
        old_to_new,
        class_names: names,
    })
}

/// Drops and merges classes of a set: returns the new set (dropped samples removed, labels
/// renumbered), the mapping, and the kept samples' indices in the old set.
pub fn apply_classes(
    set: &ImageSet,
    spec: &ClassSpec,
) -> Result<(ImageSet, ClassMapping, Vec<usize>), DataError> {
    let mapping = class_mapping(&set.class_names, spec)?;
    let kept: Vec<usize> = (0..set.len())
        .filter(|&i| mapping.old_to_new[set.labels[i] as usize].is_some())
        .collect();
    let mut out = set.subset(&kept);
    for l in out.labels.iter_mut() {
        // Kept samples have a mapped class by construction of `kept`.
        *l = mapping.old_to_new[*l as usize].unwrap_or(0);
    }
    out.class_names = mapping.class_names.clone();
    Ok((out, mapping, kept))
}

/// Per-class counts of `labels` restricted to `indices`.
pub fn class_counts(labels: &[u32], indices: &[usize], classes: usize) -> Vec<usize> {
    let mut counts = vec![0; classes];
    for &i in indices {
        counts[labels[i] as usize] += 1;
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<u32> {
        let counts = [50, 120, 7, 3, 20];
        counts
            .iter()
            .enumerate()
            .flat_map(|(c, &n)| std::iter::repeat_n(c as u32, n))
            .collect()
    }

    #[test]
    fn holdout_is_disjoint_covering_and_stratified() {
        let y = labels();
        let split = holdout(
            &y,
            &HoldoutSpec {
                train: 0.7,
                val: 0.15,
                test: 0.15,
                stratify: true,
                seed: 1,
            },
        )
        .unwrap();
        let mut all: Vec<usize> = split
            .train
            .iter()
            .chain(&split.val)
            .chain(&split.test)
            .copied()
            .collect();
        all.sort_unstable();
        assert_eq!(all, (0..y.len()).collect::<Vec<_>>());
        assert_eq!(split.test.len(), (200.0f64 * 0.15).round() as usize);
        assert_eq!(split.val.len(), 30);
        let totals = class_counts(&y, &(0..y.len()).collect::<Vec<_>>(), 5);
        for part in [&split.train, &split.val, &split.test] {
            let frac = part.len() as f64 / y.len() as f64;
            for (c, &n) in class_counts(&y, part, 5).iter().enumerate() {
                assert!(
                    (n as f64 - totals[c] as f64 * frac).abs() <= 1.0 + 1e-9,
                    "class {c}: {n} vs {}",
                    totals[c] as f64 * frac
                );
            }
        }
        let again = holdout(
            &y,
            &HoldoutSpec {
                train: 0.7,
                val: 0.15,
                test: 0.15,
                stratify: true,
                seed: 1,
            },
        )
        .unwrap();
        assert_eq!(split, again);
        let other = holdout(
            &y,
            &HoldoutSpec {
                train: 0.7,
                val: 0.15,
                test: 0.15,
                stratify: true,
                seed: 2,
            },
        )
        .unwrap();
        assert_ne!(split, other);
    }

    #[test]
    fn unstratified_holdout_has_exact_sizes_and_differs_from_stratified() {
        let y = labels();
        let spec = |stratify| HoldoutSpec {
            train: 0.6,
            val: 0.2,
            test: 0.2,
            stratify,
            seed: 3,
        };
        let plain = holdout(&y, &spec(false)).unwrap();
        let strat = holdout(&y, &spec(true)).unwrap();
        let n = y.len();
        assert_eq!(plain.test.len(), (n as f64 * 0.2).round() as usize);
        assert_eq!(plain.val.len(), (n as f64 * 0.2).round() as usize);
        assert_eq!(plain.train.len() + plain.val.len() + plain.test.len(), n);
        assert_ne!(plain, strat);
    }

    #[test]
    fn unstratified_kfold_matches_sklearn_kfold_sizes() {
        let folds = kfold_unstratified(23, 5, 4).unwrap();
        let sizes: Vec<usize> = folds.iter().map(|f| f.test.len()).collect();
        // sklearn.model_selection.KFold(5).split(range(23)): 5, 5, 5, 4, 4.
        assert_eq!(sizes, [5, 5, 5, 4, 4]);
        let mut all: Vec<usize> = folds.iter().flat_map(|f| f.test.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..23).collect::<Vec<_>>());
        assert!(kfold_unstratified(3, 5, 0).is_err());
    }

    #[test]
    fn holdout_rejects_bad_fractions() {
        assert!(holdout(
            &labels(),
            &HoldoutSpec {
                train: 0.7,
                val: 0.2,
                test: 0.2,
                stratify: true,
                seed: 1
            }
        )
        .is_err());
    }

    #[test]
    fn kfold_partitions_every_sample_once() {
        let y = labels();
        let folds = kfold(&y, 5, 9).unwrap();
        let mut seen = vec![0; y.len()];
        for f in &folds {
            for &i in &f.test {
                seen[i] += 1;
            }
            assert_eq!(f.train.len() + f.test.len(), y.len());
            assert!(f.test.iter().all(|i| f.train.binary_search(i).is_err()));
        }
        assert!(seen.iter().all(|&s| s == 1));
    }

    #[test]
    fn merge_and_drop_renumber() {
        let names: Vec<String> = (0..6).map(|i| format!("c{i}")).collect();
        let spec = ClassSpec {
            drop: vec![5],
            merge: vec![MergeSpec {
                classes: vec![3, 1],
                name: None,
                into: None,
            }],
        };
        let m = class_mapping(&names, &spec).unwrap();
        assert_eq!(
            m.old_to_new,
            vec![Some(0), Some(1), Some(2), Some(1), Some(3), None]
        );
        assert_eq!(m.class_names, vec!["c0", "c1 + c3", "c2", "c4"]);
        assert!(class_mapping(
            &names,
            &ClassSpec {
                drop: vec![9],
                merge: vec![]
            }
        )
        .is_err());
    }
}
