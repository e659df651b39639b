//! The training loop's overhead, for `gpl bench engine`: one epoch through `fit` (shuffle,
//! batch gathering, class weights and on-the-fly augmentation on the producer thread,
//! overlapped with compute) against the engine's raw training step on a ready batch.

use crate::data::augment::AugmentSpec;
use crate::data::synth::{synthesize, SynthConfig};
use crate::nn::ir::ModelIr;
use crate::nn::learner::{Batch, Learner};
use crate::nn::network::Network;
use crate::nn::optim::OptimizerConfig;
use crate::train::fit::{fit, FitConfig, FitContext, TrainData};
use std::time::Instant;

pub struct EpochFigures {
    /// Images/s of `train_batch` on one prepared batch, repeated.
    pub raw_step: f64,
    /// Images/s of a whole epoch through `fit`.
    pub epoch: f64,
    pub images: usize,
}

/// The report's oversampling augmentation (stdlib/augment.gpl `keras_default`).
fn keras_default() -> AugmentSpec {
    AugmentSpec {
        rotation_range: 40.0,
        width_shift_range: 0.2,
        height_shift_range: 0.1,
        shear_range: 0.2,
        zoom_range: AugmentSpec::zoom(0.2),
        horizontal_flip: true,
        ..AugmentSpec::default()
    }
}

/// Measures both rates on synthetic Galaxy10 images shaped as `ir`'s input (69×69×3).
/// The epoch holds `batches` full batches; the second of two epochs is timed, so workspace
/// allocation in the first does not count against the loop.
pub fn epoch_vs_step(ir: &ModelIr, batch: usize, batches: usize) -> miette::Result<EpochFigures> {
    let images = batch * batches;
    let set = synthesize(&SynthConfig::galaxy10(images, 11)).map_err(miette::Report::new)?;
    let shape = [set.height, set.width, set.channels];
    if shape.as_slice() != ir.input.as_slice() {
        miette::bail!(
            "benchmark images are {shape:?}, the model takes {:?}",
            ir.input
        );
    }

    // Raw: the same prepared batch, `2 × batches` steps after two warm-up steps.
    let mut net = Network::new(ir, 7, OptimizerConfig::adam())?;
    let pixels: Vec<f32> = set.images[..batch * set.image_len()]
        .iter()
        .map(|&b| b as f32 / 255.0)
        .collect();
    let labels = set.labels[..batch].to_vec();
    let weights = vec![1.0f32; batch];
    let ready = Batch::classes(&pixels, &labels, &weights);
    for _ in 0..2 {
        net.train_batch(&ready, 1e-3)?;
    }
    let start = Instant::now();
    for _ in 0..2 * batches {
        net.train_batch(&ready, 1e-3)?;
    }
    let raw_step = (2 * images) as f64 / start.elapsed().as_secs_f64();

    // Through the loop: the same model, shuffled, class-weighted and augmented per sample.
    let spec = keras_default();
    let class_weights: Vec<f32> = crate::data::balance::balanced_weights(&set.class_counts())
        .iter()
        .map(|&w| w as f32)
        .collect();
    let data = TrainData {
        images: &set,
        class_weights: Some(&class_weights),
        augment: Some(&spec),
        detection: None,
    };
    let config = FitConfig {
        epochs: 2,
        batch_size: batch,
        seed: 5,
        ..FitConfig::default()
    };
    let mut net = Network::new(ir, 7, OptimizerConfig::adam())?;
    let outcome =
        fit(&mut net, &config, &data, None, FitContext::default()).map_err(miette::Report::new)?;
    let seconds = outcome
        .history
        .epochs
        .last()
        .map(|e| e.seconds)
        .ok_or_else(|| miette::miette!("the benchmark epoch did not run"))?;
    Ok(EpochFigures {
        raw_step,
        epoch: images as f64 / seconds,
        images,
    })
}
