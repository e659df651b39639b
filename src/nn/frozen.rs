//! Fine-tuning without recomputing the frozen base: a `Learner` that splits a network at its
//! first trainable layer, runs the frozen prefix once per distinct input image (inference
//! mode, so its output depends on the pixels alone) and trains only the suffix on the cached
//! features. Valid when the training images are the same every epoch (no on-the-fly
//! augmentation) and the prefix has no dropout; the caller checks both.
//!
//! In a graph the prefix is the subgraph of the first trainable layer's ancestors (`freeze
//! until X` freezes exactly X's ancestors), and it is cached only when everything after it
//! reads one tensor of it: the output of the layer just before the split.

use super::ir::{LayerOp, LayerSpec, ModelIr, Source, INPUT};
use super::optim::OptimizerConfig;
use super::{EngineError, Network};
use crate::nn::learner::{Batch, Learner, NamedTensors, StepStats};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

/// A frozen prefix's outputs by BLAKE3 of the input image's f32 bytes.
type FeatureMap = HashMap<[u8; 32], Arc<[f32]>>;
type SharedMap = Arc<Mutex<FeatureMap>>;
/// Prefix digest → its map, least recently used first.
type Registry = Mutex<Vec<([u8; 32], SharedMap)>>;

/// Feature maps of recent prefixes (architecture + weights digest), shared by every learner in
/// this process with the same prefix: the hold-out fine-tuning, each cross-validation fold of
/// it and anything else starting from the same frozen base compute it once per image. The
/// oldest prefix is dropped beyond `SHARED_PREFIXES`, which bounds the memory of a long
/// `gpl watch` session.
static SHARED: OnceLock<Registry> = OnceLock::new();
const SHARED_PREFIXES: usize = 4;

fn shared_features(key: [u8; 32]) -> SharedMap {
    let mut shared = SHARED
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(at) = shared.iter().position(|(k, _)| *k == key) {
        let entry = shared.remove(at);
        let map = entry.1.clone();
        shared.push(entry);
        return map;
    }
    if shared.len() >= SHARED_PREFIXES {
        shared.remove(0);
    }
    let map = Arc::new(Mutex::new(FeatureMap::new()));
    shared.push((key, map.clone()));
    map
}

pub struct FrozenPrefix {
    prefix: Network,
    suffix: Network,
    /// This prefix's shared feature map, looked up on first use and again after new weights.
    features: Option<SharedMap>,
    /// Images this learner ran through the prefix itself (not found in the shared map).
    computed: usize,
    /// Kept for the feature-sharing digest.
    prefix_ir: ModelIr,
    feature_len: usize,
    image_len: usize,
}

impl FrozenPrefix {
    /// Index of the first trainable layer when the layers before it can be cached: at least
    /// one frozen layer, none of them dropout (whose training-mode output is random), and
    /// the later layers read only the last of them (no output among them, no shortcut
    /// around the split).
    pub fn split_point(ir: &ModelIr) -> Option<usize> {
        let first = ir.layers.iter().position(|l| l.trainable)?;
        let prefix = &ir.layers[..first];
        let edge = Source::Layer(first.checked_sub(1)?);
        let one_edge = ir.layers[first..]
            .iter()
            .flat_map(|l| &l.inputs)
            .all(|s| matches!(s, Source::Layer(j) if *j >= first) || *s == edge);
        (one_edge
            && ir.outputs.iter().all(|&o| o >= first)
            && !prefix
                .iter()
                .any(|l| matches!(l.op, LayerOp::Dropout { .. })))
        .then_some(first)
    }

    /// Splits `ir` at `at` (a `split_point`); both halves keep the layer names, so Keras
    /// weights map unchanged. The suffix reads the prefix's output as its input.
    pub fn new(
        ir: &ModelIr,
        at: usize,
        seed: u64,
        optimizer: OptimizerConfig,
    ) -> Result<FrozenPrefix, EngineError> {
        let (specs, outputs) = ir.specs();
        let edge = ir.layers[at - 1].name.clone();
        let part = |name: &str, input: Vec<usize>, specs: Vec<LayerSpec>, outputs: Vec<String>| {
            ModelIr::build_graph(name, input, specs, outputs)
                .map(|mut part| {
                    // Both halves are built from the model's own specs: every name is in it.
                    for layer in part.layers.iter_mut() {
                        layer.trainable = ir
                            .layer_index(&layer.name)
                            .is_none_or(|i| ir.layers[i].trainable);
                    }
                    part
                })
                .map_err(|e| EngineError::Shape {
                    layer: ir.name.clone(),
                    message: format!("splitting off the frozen base: {e}"),
                })
        };
        let prefix_ir = part(
            &format!("{}_frozen", ir.name),
            ir.input.clone(),
            specs[..at].to_vec(),
            vec![edge.clone()],
        )?;
        let suffix_specs = specs[at..]
            .iter()
            .cloned()
            .map(|mut spec| {
                for from in spec.from.iter_mut() {
                    if *from == edge {
                        *from = INPUT.to_string();
                    }
                }
                spec
            })
            .collect();
        let suffix_ir = part(&ir.name, prefix_ir.output().clone(), suffix_specs, outputs)?;
        let prefix = Network::new(&prefix_ir, seed, optimizer)?;
        let suffix = Network::new(&suffix_ir, seed, optimizer)?;
        Ok(FrozenPrefix {
            feature_len: prefix_ir.output().iter().product(),
            image_len: ir.input.iter().product(),
            prefix,
            suffix,
            prefix_ir,
            features: None,
            computed: 0,
        })
    }

    /// How many images this learner ran through the frozen prefix; the rest came from the
    /// shared feature map.
    pub fn prefix_images_computed(&self) -> usize {
        self.computed
    }

    /// Digest of what decides the prefix's outputs: its subgraph (layers, reads, output)
    /// and their weights.
    fn prefix_key(&self) -> [u8; 32] {
        let mut hasher = blake3::Hasher::new();
        hasher.update(
            serde_json::to_string(&self.prefix_ir)
                .unwrap_or_default()
                .as_bytes(),
        );
        for (name, tensor) in self.prefix.state() {
            // Optimizer slots and the step counter do not change a frozen layer's output.
            if name.starts_with("optimizer/") {
                continue;
            }
            hasher.update(name.as_bytes());
            let bytes: Vec<u8> = tensor.data.iter().flat_map(|v| v.to_le_bytes()).collect();
            hasher.update(&bytes);
        }
        *hasher.finalize().as_bytes()
    }

    /// The prefix's outputs for `n` images, computing only those not seen before by any
    /// learner with the same prefix. The map is not locked while the prefix runs, so two
    /// stages may both compute an image they miss at the same moment; both get equal values.
    fn features(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>> {
        if self.features.is_none() {
            self.features = Some(shared_features(self.prefix_key()));
        }
        let map = self.features.clone().expect("set just above");
        let lock = || map.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let keys: Vec<[u8; 32]> = images
            .chunks(self.image_len)
            .take(n)
            .map(|image| {
                let bytes: Vec<u8> = image.iter().flat_map(|v| v.to_le_bytes()).collect();
                *blake3::hash(&bytes).as_bytes()
            })
            .collect();
        let missing: Vec<usize> = {
            let known = lock();
            (0..n).filter(|&i| !known.contains_key(&keys[i])).collect()
        };
        if !missing.is_empty() {
            let mut batch = Vec::with_capacity(missing.len() * self.image_len);
            for &i in &missing {
                batch.extend_from_slice(&images[i * self.image_len..(i + 1) * self.image_len]);
            }
            let out = self
                .prefix
                .logits(&batch, missing.len())
                .map_err(miette::Report::new)?;
            self.computed += missing.len();
            let mut known = lock();
            for (&i, feature) in missing.iter().zip(out.chunks(self.feature_len)) {
                known.insert(keys[i], feature.into());
            }
        }
        let known = lock();
        let mut out = Vec::with_capacity(n * self.feature_len);
        for key in &keys {
            // Every key was inserted above when missing, and entries are never removed.
            out.extend_from_slice(&known[key]);
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
                targets: batch.targets.clone(),
                weights: batch.weights,
            },
            lr,
        )
    }

    fn predict(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>> {
        let features = self.features(images, n)?;
        self.suffix.predict(&features, n)
    }

    fn outputs(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<Vec<f32>>> {
        let features = self.features(images, n)?;
        self.suffix.outputs(&features, n)
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
        self.features = None;
        Ok(())
    }

    fn load_weights(&mut self, weights: &NamedTensors) -> miette::Result<()> {
        let (prefix, suffix) = self.split(weights);
        self.prefix.load_weights(&prefix)?;
        self.suffix.load_weights(&suffix)?;
        self.features = None;
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
