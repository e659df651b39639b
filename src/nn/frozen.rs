//! Fine-tuning without recomputing the frozen base: a `Learner` that splits a network at its
//! first trainable layer, runs the frozen prefix once per distinct input image (inference
//! mode, so its output depends on the pixels alone) and trains only the suffix on the cached
//! features. Valid when the training images are the same every epoch (no on-the-fly
//! augmentation) and the prefix has no dropout; the caller checks both.

use super::ir::{LayerOp, ModelIr};
use super::optim::OptimizerConfig;
use super::{EngineError, Network};
use crate::train::learner::{Batch, Learner, NamedTensors, StepStats};
use std::collections::HashMap;

pub struct FrozenPrefix {
    prefix: Network,
    suffix: Network,
    /// BLAKE3 of an image's f32 bytes → the prefix's output for it.
    features: HashMap<[u8; 32], Vec<f32>>,
    feature_len: usize,
    image_len: usize,
}

impl FrozenPrefix {
    /// Index of the first trainable layer when the layers before it can be cached: at least
    /// one frozen layer, none of them dropout (whose training-mode output is random).
    pub fn split_point(ir: &ModelIr) -> Option<usize> {
        let first = ir.layers.iter().position(|l| l.trainable)?;
        let prefix = &ir.layers[..first];
        (first > 0
            && !prefix
                .iter()
                .any(|l| matches!(l.op, LayerOp::Dropout { .. })))
        .then_some(first)
    }

    /// Splits `ir` at `at`; both halves keep the layer names, so Keras weights map unchanged.
    pub fn new(
        ir: &ModelIr,
        at: usize,
        seed: u64,
        optimizer: OptimizerConfig,
    ) -> Result<FrozenPrefix, EngineError> {
        let part = |name: &str, input: Vec<usize>, range: &[crate::nn::ir::LayerIr]| {
            ModelIr::build(
                name,
                input,
                range
                    .iter()
                    .map(|l| (Some(l.name.clone()), l.op.clone()))
                    .collect(),
            )
            .map(|mut part| {
                for (layer, original) in part.layers.iter_mut().zip(range) {
                    layer.trainable = original.trainable;
                }
                part
            })
            .map_err(|e| EngineError::Shape {
                layer: range[e.layer].name.clone(),
                message: e.message,
            })
        };
        let prefix_ir = part(
            &format!("{}_frozen", ir.name),
            ir.input.clone(),
            &ir.layers[..at],
        )?;
        let suffix_ir = part(&ir.name, prefix_ir.output().clone(), &ir.layers[at..])?;
        let prefix = Network::new(&prefix_ir, seed, optimizer)?;
        let suffix = Network::new(&suffix_ir, seed, optimizer)?;
        Ok(FrozenPrefix {
            feature_len: prefix_ir.output().iter().product(),
            image_len: ir.input.iter().product(),
            prefix,
            suffix,
            features: HashMap::new(),
        })
    }

    /// The prefix's outputs for `n` images, computing only those not seen before.
    fn features(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>> {
        let keys: Vec<[u8; 32]> = images
            .chunks(self.image_len)
            .take(n)
            .map(|image| {
                let bytes: Vec<u8> = image.iter().flat_map(|v| v.to_le_bytes()).collect();
                *blake3::hash(&bytes).as_bytes()
            })
            .collect();
        let missing: Vec<usize> = (0..n)
            .filter(|&i| !self.features.contains_key(&keys[i]))
            .collect();
        if !missing.is_empty() {
            let mut batch = Vec::with_capacity(missing.len() * self.image_len);
            for &i in &missing {
                batch.extend_from_slice(&images[i * self.image_len..(i + 1) * self.image_len]);
            }
            let out = self
                .prefix
                .logits(&batch, missing.len())
                .map_err(miette::Report::new)?;
            for (&i, feature) in missing.iter().zip(out.chunks(self.feature_len)) {
                self.features.insert(keys[i], feature.to_vec());
            }
        }
        let mut out = Vec::with_capacity(n * self.feature_len);
        for key in &keys {
            // Every key was inserted just above when missing.
            out.extend_from_slice(&self.features[key]);
        }
        Ok(out)
    }
}

impl Learner for FrozenPrefix {
    fn classes(&self) -> usize {
        self.suffix.classes()
    }

    fn train_batch(&mut self, batch: &Batch, lr: f32) -> miette::Result<StepStats> {
        let features = self.features(batch.images, batch.len())?;
        self.suffix.train_batch(
            &Batch {
                images: &features,
                labels: batch.labels,
                weights: batch.weights,
            },
            lr,
        )
    }

    fn predict(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>> {
        let features = self.features(images, n)?;
        self.suffix.predict(&features, n)
    }

    fn regularization_loss(&self) -> f64 {
        self.suffix.regularization_loss()
    }

    fn state(&self) -> NamedTensors {
        let mut state = self.prefix.state();
        state.extend(self.suffix.state());
        state
    }

    fn load_state(&mut self, state: &NamedTensors) -> miette::Result<()> {
        let (prefix, suffix) = self.split(state);
        self.prefix.load_state(&prefix)?;
        self.suffix.load_state(&suffix)?;
        self.features.clear();
        Ok(())
    }

    fn load_weights(&mut self, weights: &NamedTensors) -> miette::Result<()> {
        let (prefix, suffix) = self.split(weights);
        self.prefix.load_weights(&prefix)?;
        self.suffix.load_weights(&suffix)?;
        self.features.clear();
        Ok(())
    }
}

impl FrozenPrefix {
    /// The tensors each half knows by name; the shared step counter goes to both.
    fn split(&self, tensors: &NamedTensors) -> (NamedTensors, NamedTensors) {
        let (prefix_names, suffix_names) = (self.prefix.state(), self.suffix.state());
        let pick = |names: &NamedTensors| {
            tensors
                .iter()
                .filter(|(k, _)| names.contains_key(*k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect()
        };
        (pick(&prefix_names), pick(&suffix_names))
    }
}
