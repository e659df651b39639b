//! Does a map explain the model? Two checks every explain stage runs on its own samples:
//!
//! - **Cascading randomisation** (Adebayo et al., "Sanity Checks for Saliency Maps", 2018):
//!   re-initialise the trained model's layers from the top down, one more layer at each
//!   step, and measure how similar the maps stay (Spearman rank correlation). A method whose
//!   maps survive the randomisation of the whole network shows the image, not the model.
//! - **Deletion** (Petsiuk et al., RISE, 2018): black out the most-attributed pixels first
//!   and follow the target class's probability; a faithful map makes it fall fast (a small
//!   area under the curve).

use super::maps::{attribute, input_shape, Method};
use crate::nn::{EngineError, Network, OptimizerConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Seed of the re-initialised weights (fixed: the check must not depend on the training seed).
const RANDOM_INIT_SEED: u64 = 0x5A17;

/// Spearman's rank correlation with average ranks for ties (SciPy's `spearmanr`); None when
/// either side is constant (SciPy returns NaN there).
pub fn spearman(a: &[f32], b: &[f32]) -> Option<f64> {
    assert_eq!(a.len(), b.len(), "spearman needs two samples of one length");
    let (ra, rb) = (ranks(a), ranks(b));
    let n = a.len() as f64;
    let (ma, mb) = (ra.iter().sum::<f64>() / n, rb.iter().sum::<f64>() / n);
    let (mut cov, mut va, mut vb) = (0.0, 0.0, 0.0);
    for (x, y) in ra.iter().zip(&rb) {
        cov += (x - ma) * (y - mb);
        va += (x - ma) * (x - ma);
        vb += (y - mb) * (y - mb);
    }
    (va > 0.0 && vb > 0.0).then(|| cov / (va * vb).sqrt())
}

/// 1-based ranks, ties sharing their average rank.
fn ranks(values: &[f32]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&i, &j| values[i].total_cmp(&values[j]));
    let mut out = vec![0.0; values.len()];
    let mut start = 0;
    while start < order.len() {
        let mut end = start + 1;
        while end < order.len() && values[order[end]] == values[order[start]] {
            end += 1;
        }
        let rank = (start + end + 1) as f64 / 2.0;
        for &i in &order[start..end] {
            out[i] = rank;
        }
        start = end;
    }
    out
}

/// One step of the cascade: every layer from the top down to `layer` re-initialised.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CascadeStep {
    pub layer: String,
    /// Mean over the samples of the Spearman correlation between the trained and the
    /// randomised model's maps (None when every map of a side is constant).
    pub spearman: Option<f64>,
}

/// The layers that own parameters, top (output) first, with their parameter names.
fn layers_top_down(network: &Network) -> Vec<(String, Vec<String>)> {
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for p in network.params().iter() {
        let layer = p.name.split('/').next().unwrap_or(&p.name).to_string();
        groups.entry(layer).or_default().push(p.name.clone());
    }
    network
        .ir()
        .layers
        .iter()
        .rev()
        .filter_map(|l| groups.remove(&l.name).map(|names| (l.name.clone(), names)))
        .collect()
}

/// Runs `methods` on the cascade of randomised models; `trained[m]` are method m's maps of
/// the trained model (`[n, H, W]`). The network's own weights are restored afterwards.
pub fn cascade(
    network: &mut Network,
    images: &[f32],
    targets: &[u32],
    methods: &[Method],
    trained: &[Vec<f32>],
    seed: u64,
) -> Result<Vec<Vec<CascadeStep>>, EngineError> {
    let fresh = Network::new(network.ir(), RANDOM_INIT_SEED, OptimizerConfig::adam())?;
    let random: BTreeMap<String, Vec<f32>> = fresh
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    let original: BTreeMap<String, Vec<f32>> = network
        .params()
        .iter()
        .map(|p| (p.name.clone(), p.value.clone()))
        .collect();
    let [h, w, _] = input_shape(network)?;
    let pixels = h * w;
    let mut out = vec![Vec::new(); methods.len()];
    let result = (|| {
        for (layer, names) in layers_top_down(network) {
            for name in &names {
                network.set_param(name, &random[name])?;
            }
            for (m, method) in methods.iter().enumerate() {
                let maps = attribute(network, images, targets, method, seed)?.maps;
                let scores: Vec<f64> = trained[m]
                    .chunks(pixels)
                    .zip(maps.chunks(pixels))
                    .filter_map(|(a, b)| spearman(a, b))
                    .collect();
                out[m].push(CascadeStep {
                    layer: layer.clone(),
                    spearman: (!scores.is_empty())
                        .then(|| scores.iter().sum::<f64>() / scores.len() as f64),
                });
            }
        }
        Ok(())
    })();
    for (name, value) in &original {
        network.set_param(name, value)?;
    }
    result.map(|()| out)
}

/// Fractions of pixels removed along a deletion curve: 0, 1/steps, …, 1.
pub fn deletion_fractions(steps: usize) -> Vec<f64> {
    (0..=steps).map(|k| k as f64 / steps as f64).collect()
}

/// The target class's probability as the most-attributed pixels are blacked out, `steps + 1`
/// points per image (ties in the map broken by pixel order), and the curve's area (trapezoid
/// rule over the removed fraction).
pub fn deletion(
    network: &mut Network,
    images: &[f32],
    targets: &[u32],
    maps: &[f32],
    steps: usize,
) -> Result<Vec<(Vec<f32>, f64)>, EngineError> {
    let [h, w, c] = input_shape(network)?;
    let (pixels, per) = (h * w, h * w * c);
    let mut out = Vec::with_capacity(targets.len());
    for (i, &target) in targets.iter().enumerate() {
        let map = &maps[i * pixels..(i + 1) * pixels];
        let mut order: Vec<usize> = (0..pixels).collect();
        order.sort_by(|&a, &b| map[b].total_cmp(&map[a]));
        let image = &images[i * per..(i + 1) * per];
        let mut batch = Vec::with_capacity((steps + 1) * per);
        for k in 0..=steps {
            let removed = k * pixels / steps;
            let start = batch.len();
            batch.extend_from_slice(image);
            for &p in &order[..removed] {
                batch[start + p * c..start + (p + 1) * c].fill(0.0);
            }
        }
        let probs = network.probabilities(&batch, steps + 1)?;
        let classes = probs.len() / (steps + 1);
        let curve: Vec<f32> = (0..=steps)
            .map(|k| probs[k * classes + target as usize])
            .collect();
        let area = curve
            .windows(2)
            .map(|p| (p[0] + p[1]) as f64 / 2.0 / steps as f64)
            .sum();
        out.push((curve, area));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spearman_uses_average_ranks_for_ties() {
        // scipy.stats.spearmanr([1, 2, 2, 3], [1, 3, 2, 4]).statistic = 0.9486832980505138
        let r = spearman(&[1.0, 2.0, 2.0, 3.0], &[1.0, 3.0, 2.0, 4.0]).unwrap();
        assert!((r - 0.948_683_298_050_513_8).abs() < 1e-12, "{r}");
        assert_eq!(spearman(&[1.0, 1.0], &[1.0, 2.0]), None);
        assert_eq!(spearman(&[3.0, 1.0, 2.0], &[30.0, 10.0, 20.0]), Some(1.0));
    }
}
