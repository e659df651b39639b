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

use crate::nn::Network;

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
