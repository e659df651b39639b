//! Rebalancing the training set: down-sample chosen classes, over-sample chosen classes with
//! augmented copies, and class weights.
//!
//! The result is a compact `BalancedIndex`: source indices plus, for each over-sampled copy,
//! the seed of its augmentation, never copies of pixels. Balancing only ever sees the training
//! indices it is given, so no validation or test sample can reach training through it.

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::augment::{augment_into_u8, AugmentSpec};
use super::{DataError, ImageSet};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resample {
    pub classes: Vec<u32>,
    pub to: usize,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WeightsSpec {
    /// No class weights.
    #[default]
    None,
    /// `N / (C · n_c)` over the balanced set, as scikit-learn's
    /// `compute_class_weight('balanced')`.
    Balanced,
    /// One weight per class.
    Explicit(Vec<f64>),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalanceSpec {
    #[serde(default)]
    pub downsample: Vec<Resample>,
    #[serde(default)]
    pub oversample: Vec<Resample>,
    /// How over-sampled copies are augmented.
    #[serde(default)]
    pub augment: AugmentSpec,
    #[serde(default)]
    pub weights: WeightsSpec,
    pub seed: u64,
}

/// One training sample: an index into the source set, and the augmentation seed when it is an
/// over-sampled copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub index: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment_seed: Option<u64>,
}

/// The balanced training set as indices (the artifact a balance stage caches, as JSON).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalancedIndex {
    pub entries: Vec<Entry>,
    pub labels: Vec<u32>,
    pub counts_before: Vec<usize>,
    pub counts_after: Vec<usize>,
    /// Per class; `None` when no weights were asked for.
    pub class_weights: Option<Vec<f64>>,
    /// The recipe for entries with a seed.
    pub augment: AugmentSpec,
}

/// scikit-learn's `compute_class_weight('balanced', classes=present, y)`: `N / (C · n_c)` with
/// C the number of classes present; absent classes get weight 0.
pub fn balanced_weights(counts: &[usize]) -> Vec<f64> {
    let n: usize = counts.iter().sum();
    let present = counts.iter().filter(|&&c| c > 0).count();
    counts
        .iter()
        .map(|&c| {
            if c == 0 {
                0.0
            } else {
                n as f64 / (present as f64 * c as f64)
            }
        })
        .collect()
}

/// Balances the training samples `train` (indices into `labels`).
pub fn balance(
    labels: &[u32],
    num_classes: usize,
    train: &[usize],
    spec: &BalanceSpec,
) -> Result<BalancedIndex, DataError> {
    spec.augment.validate()?;
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); num_classes];
    for &i in train {
        let l = *labels.get(i).ok_or_else(|| {
            DataError::invalid("balance", format!("train index {i} is outside the dataset"))
        })? as usize;
        if l >= num_classes {
            return Err(DataError::UnknownClass {
                class: l as u32,
                classes: num_classes,
            });
        }
        by_class[l].push(i);
    }
    let counts_before: Vec<usize> = by_class.iter().map(Vec::len).collect();
    let mut target_down = vec![None; num_classes];
    let mut target_up = vec![None; num_classes];
    for (targets, rules) in [
        (&mut target_down, &spec.downsample),
        (&mut target_up, &spec.oversample),
    ] {
        for r in rules {
            for &c in &r.classes {
                let slot = targets.get_mut(c as usize).ok_or(DataError::UnknownClass {
                    class: c,
                    classes: num_classes,
                })?;
                *slot = Some(r.to);
            }
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let mut entries = Vec::new();
    let mut out_labels = Vec::new();
    for c in 0..num_classes {
        let mut members = by_class[c].clone();
        if let Some(to) = target_down[c] {
            if members.len() > to {
                members.shuffle(&mut rng);
                members.truncate(to);
                members.sort_unstable();
            }
        }
        for &i in &members {
            entries.push(Entry {
                index: i as u32,
                augment_seed: None,
            });
            out_labels.push(c as u32);
        }
        if let Some(to) = target_up[c] {
            if members.len() < to {
                if members.is_empty() {
                    return Err(DataError::invalid(
                        "oversample",
                        format!("class {c} has no training samples to copy"),
                    ));
                }
                // Copies cycle through a shuffled list of originals, so each is used evenly.
                let mut order = members.clone();
                order.shuffle(&mut rng);
                for k in 0..to - members.len() {
                    entries.push(Entry {
                        index: order[k % order.len()] as u32,
                        augment_seed: Some(rng.gen()),
                    });
                    out_labels.push(c as u32);
                }
            }
        }
    }
    let mut counts_after = vec![0; num_classes];
    for &l in &out_labels {
        counts_after[l as usize] += 1;
    }
    let class_weights = match &spec.weights {
        WeightsSpec::None => None,
        WeightsSpec::Balanced => Some(balanced_weights(&counts_after)),
        WeightsSpec::Explicit(w) => {
            if w.len() != num_classes || w.iter().any(|v| !v.is_finite() || *v < 0.0) {
                return Err(DataError::invalid(
                    "class weights",
                    format!("need {num_classes} non-negative weights, got {w:?}"),
                ));
            }
            Some(w.clone())
        }
    };
    Ok(BalancedIndex {
        entries,
        labels: out_labels,
        counts_before,
        counts_after,
        class_weights,
        augment: spec.augment.clone(),
    })
}

/// Renders a balanced index into pixels: originals copied, over-sampled copies augmented
/// (rounded to uint8), in parallel.
pub fn materialize(set: &ImageSet, index: &BalancedIndex) -> ImageSet {
    let n = set.image_len();
    let mut images = vec![0u8; index.entries.len() * n];
    images
        .par_chunks_mut(n.max(1))
        .zip(index.entries.par_iter())
        .for_each(|(out, e)| {
            let src = set.image(e.index as usize);
            match e.augment_seed {
                None => out.copy_from_slice(src),
                Some(seed) => augment_into_u8(
                    &index.augment,
                    src,
                    set.height,
                    set.width,
                    set.channels,
                    seed,
                    out,
                ),
            }
        });
    ImageSet {
        height: set.height,
        width: set.width,
        channels: set.channels,
        images,
        labels: index.labels.clone(),
        class_names: set.class_names.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downsample_and_oversample_hit_their_targets() {
        let labels: Vec<u32> = [0u32; 30]
            .iter()
            .chain(&[1u32; 5])
            .chain(&[2u32; 12])
            .copied()
            .collect();
        let train: Vec<usize> = (0..labels.len()).collect();
        let spec = BalanceSpec {
            downsample: vec![Resample {
                classes: vec![0],
                to: 10,
            }],
            oversample: vec![Resample {
                classes: vec![1],
                to: 12,
            }],
            augment: AugmentSpec {
                rotation_range: 20.0,
                ..Default::default()
            },
            weights: WeightsSpec::Balanced,
            seed: 3,
        };
        let b = balance(&labels, 3, &train, &spec).unwrap();
        assert_eq!(b.counts_before, vec![30, 5, 12]);
        assert_eq!(b.counts_after, vec![10, 12, 12]);
        assert_eq!(
            b.entries
                .iter()
                .filter(|e| e.augment_seed.is_some())
                .count(),
            7
        );
        let w = b.class_weights.clone().unwrap();
        assert!((w[0] - 34.0 / 30.0).abs() < 1e-12);
        assert_eq!(
            b,
            balance(&labels, 3, &train, &spec).unwrap_or_else(|e| panic!("{e}"))
        );
    }
}
