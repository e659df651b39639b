//! The contract between the training loop and the compute engine.
//!
//! The loop (callbacks, history, checkpoints, predictions) only sees a `Learner`, so it
//! is tested with a tiny model of its own and runs unchanged on the real engine.

use std::collections::BTreeMap;

/// Named f32 tensors: parameters, optimizer moments and batchnorm running statistics.
/// Ordered so that saving them is byte-deterministic.
pub type NamedTensors = BTreeMap<String, Tensor>;

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// What one model output is trained towards, one entry per sample of the batch. The target's
/// kind chooses the output's loss for the batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Target<'a> {
    /// A class id per sample: softmax cross-entropy against the one-hot label smoothed
    /// Keras-style, y·(1−ε) + ε/K with ε = `label_smoothing`.
    Classes {
        labels: &'a [u32],
        label_smoothing: f32,
    },
    /// Per-anchor targets for a sigmoid focal loss over `classes` logits per anchor (the
    /// output holds `anchors · classes` logits per sample, no activation): `labels` has one
    /// entry per anchor per sample (`[n · anchors]`): −1 ignored, 0 background, c + 1 for
    /// class c. Loss = Σ over non-ignored anchors and classes of α_t (1 − p_t)^γ · BCE(p, y),
    /// each sample's terms times its batch weight, divided by max(1, positive anchors in the
    /// batch) (RetinaNet; torchvision's `sigmoid_focal_loss` with reduction "sum").
    Anchors {
        labels: &'a [i32],
        classes: usize,
        alpha: f32,
        gamma: f32,
    },
    /// Box regression: `values` `[n · anchors · 4]` encoded targets; only anchors whose
    /// `labels` entry (`[n · anchors]`, as for `Anchors`) is ≥ 1 count. Loss = Σ smooth-L1
    /// (pred − target; `beta`, PyTorch's) over the positive anchors' 4 values, each sample's
    /// terms times its batch weight, divided by max(1, positive anchors in the batch).
    Boxes {
        values: &'a [f32],
        labels: &'a [i32],
        beta: f32,
    },
}

impl Target<'_> {
    /// How the target is named in messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Target::Classes { .. } => "class labels",
            Target::Anchors { .. } => "anchor labels",
            Target::Boxes { .. } => "boxes",
        }
    }
}

/// One mini-batch, images already scaled to [0, 1] in NHWC order.
pub struct Batch<'a> {
    pub images: &'a [f32],
    /// One target per model output, in the model's output order.
    pub targets: Vec<Target<'a>>,
    /// Per-sample loss weights (the class weight of each sample's label; 1.0 without weights),
    /// applied to every output's loss; the detection losses multiply each sample's terms by it
    /// and keep their normaliser (the positive anchors) unweighted.
    pub weights: &'a [f32],
}

impl<'a> Batch<'a> {
    /// A batch for a model with one classification output, without label smoothing.
    pub fn classes(images: &'a [f32], labels: &'a [u32], weights: &'a [f32]) -> Batch<'a> {
        Batch {
            images,
            targets: vec![Target::Classes {
                labels,
                label_smoothing: 0.0,
            }],
            weights,
        }
    }

    /// The class labels of the first output, which accuracy is counted on.
    pub fn labels(&self) -> Option<&'a [u32]> {
        match self.targets.first() {
            Some(Target::Classes { labels, .. }) => Some(labels),
            _ => None,
        }
    }

    pub fn len(&self) -> usize {
        self.weights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.weights.is_empty()
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepStats {
    /// The sum of the outputs' losses plus the L1/L2 penalties; a class output's is Keras's mean
    /// over the batch of weight_i · crossentropy_i.
    pub loss: f64,
    /// Samples whose arg-max prediction equals the label (0 when the first target is not
    /// `Classes`).
    pub correct: usize,
}

pub trait Learner {
    /// Number of output classes.
    fn classes(&self) -> usize;
    /// One optimizer step at learning rate `lr`; dropout and batchnorm in training mode.
    fn train_batch(&mut self, batch: &Batch, lr: f32) -> miette::Result<StepStats>;
    /// Class probabilities, `n * classes` row-major, in inference mode.
    fn predict(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>>;
    /// Every model output for `n` images in inference mode, in output order, each as the
    /// model defines it (`[n, values]`; a softmax ending an output is applied, nothing else:
    /// a detector's class logits and box offsets come raw).
    fn outputs(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<Vec<f32>>> {
        let _ = (images, n);
        miette::bail!("this learner cannot return its model's outputs")
    }
    /// The L1/L2 penalty of the layer regularizers at the current weights. Keras adds it to
    /// the validation loss too (`val_loss` = unweighted crossentropy + penalties), so the loop
    /// asks for it after each epoch. Engines without regularizers keep the default.
    fn regularization_loss(&self) -> f64 {
        0.0
    }
    /// Everything needed to resume bit-exactly: weights, optimizer state, running stats, step counters.
    fn state(&self) -> NamedTensors;
    fn load_state(&mut self, state: &NamedTensors) -> miette::Result<()>;
    /// Replaces some tensors of the state (imported weights for transfer learning) and
    /// keeps the rest (other layers, optimizer moments). Every name must exist with the
    /// same shape. Engines may override it with something cheaper.
    fn load_weights(&mut self, weights: &NamedTensors) -> miette::Result<()> {
        let mut state = self.state();
        for (name, tensor) in weights {
            match state.get_mut(name) {
                Some(old) if old.shape == tensor.shape => *old = tensor.clone(),
                Some(old) => miette::bail!(
                    "weight `{name}` has shape {:?}, the model's is {:?}",
                    tensor.shape,
                    old.shape
                ),
                None => miette::bail!("the model has no weight `{name}`"),
            }
        }
        self.load_state(&state)
    }
}
