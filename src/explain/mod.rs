//! Explanations of a trained network: attribution maps (Grad-CAM and its relatives, gradient
//! methods, occlusion), intermediate activations, filter visualisation by gradient ascent, and
//! the checks that tell whether a map says anything about the model (cascading randomisation,
//! deletion curves). Everything here works on an `nn::Network` and plain image buffers
//! (`[n, h, w, c]`, NHWC, exactly as the model sees them); the `explain` stage chooses the
//! samples and writes the files.

pub mod filters;
pub mod maps;
pub mod samples;
pub mod sanity;

pub use maps::{attribute, Attribution, Baseline, Method};

use crate::nn::{EngineError, Network};

/// Images per engine call: gradient graphs are compiled per batch size, so every call uses
/// this one size (a short last chunk is padded with zero images and a zero seed).
pub const CHUNK: usize = 32;

/// Height, width and channels of a layer's output, for layers with a spatial extent.
pub fn spatial(network: &Network, layer: usize) -> Option<[usize; 3]> {
    match network.ir().layers.get(layer)?.output.as_slice() {
        &[h, w, c] => Some([h, w, c]),
        _ => None,
    }
}

/// Softmax probabilities of the first output for `n` images, `[n, classes]`.
pub fn probabilities(
    network: &mut Network,
    images: &[f32],
    n: usize,
) -> Result<Vec<f32>, EngineError> {
    let mut logits = network.logits(images, n)?;
    let classes = logits.len() / n.max(1);
    for row in logits.chunks_mut(classes.max(1)) {
        softmax_in_place(row);
    }
    Ok(logits)
}

pub(crate) fn softmax_in_place(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f64;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v as f64;
    }
    for v in row.iter_mut() {
        *v = (*v as f64 / sum) as f32;
    }
}
