//! A small, deterministic `Learner` (softmax regression with L2 and momentum SGD) so the
//! epoch loop, callbacks, checkpoints and resume are tested without the compute engine.
//! It trains for real: the loss falls and its state round-trips bit-exactly.

use crate::nn::learner::{Batch, Learner, NamedTensors, StepStats, Tensor};

#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxRegression {
    pub features: usize,
    pub classes: usize,
    /// L2 penalty factor on the weights (Keras `l2(x)`: adds `x * sum(w^2)` to the loss).
    pub l2: f32,
    pub momentum: f32,
    weights: Vec<f32>,
    bias: Vec<f32>,
    weights_velocity: Vec<f32>,
    bias_velocity: Vec<f32>,
    steps: f32,
}

impl SoftmaxRegression {
    /// Weights start from a fixed pattern of small values (no RNG needed for a convex model).
    pub fn new(features: usize, classes: usize) -> Self {
        let weights = (0..features * classes)
            .map(|i| ((i * 7919 % 201) as f32 - 100.0) * 1e-4)
            .collect();
        SoftmaxRegression {
            features,
            classes,
            l2: 1e-4,
            momentum: 0.9,
            weights,
            bias: vec![0.0; classes],
            weights_velocity: vec![0.0; features * classes],
            bias_velocity: vec![0.0; classes],
            steps: 0.0,
        }
    }

    fn probabilities(&self, image: &[f32], out: &mut [f32]) {
        for (c, o) in out.iter_mut().enumerate() {
            let mut z = self.bias[c];
            for (f, x) in image.iter().enumerate() {
                z += x * self.weights[f * self.classes + c];
            }
            *o = z;
        }
        let max = out.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0;
        for o in out.iter_mut() {
            *o = (*o - max).exp();
            sum += *o;
        }
        for o in out.iter_mut() {
            *o /= sum;
        }
    }

    fn penalty(&self) -> f64 {
        self.l2 as f64
            * self
                .weights
                .iter()
                .map(|w| (*w as f64) * (*w as f64))
                .sum::<f64>()
    }
}

impl Learner for SoftmaxRegression {
    fn classes(&self) -> usize {
        self.classes
    }

    fn train_batch(&mut self, batch: &Batch, lr: f32) -> miette::Result<StepStats> {
        let n = batch.len();
        let Some(labels) = batch.labels() else {
            miette::bail!("softmax regression trains on class labels only");
        };
        if batch.images.len() != n * self.features {
            miette::bail!(
                "batch holds {} values for {n} samples of {} features",
                batch.images.len(),
                self.features
            );
        }
        let mut grad_w = vec![0.0f32; self.weights.len()];
        let mut grad_b = vec![0.0f32; self.classes];
        let mut probs = vec![0.0f32; self.classes];
        let mut loss = 0.0f64;
        let mut correct = 0;
        for (i, &label) in labels.iter().enumerate().take(n) {
            let image = &batch.images[i * self.features..(i + 1) * self.features];
            self.probabilities(image, &mut probs);
            let label = label as usize;
            let weight = batch.weights[i];
            loss += weight as f64 * -(probs[label].clamp(1e-7, 1.0 - 1e-7) as f64).ln();
            let predicted = (0..self.classes)
                .max_by(|a, b| probs[*a].total_cmp(&probs[*b]))
                .unwrap_or(0);
            correct += usize::from(predicted == label);
            for c in 0..self.classes {
                let dz = weight * (probs[c] - f32::from(c == label)) / n as f32;
                grad_b[c] += dz;
                for (f, x) in image.iter().enumerate() {
                    grad_w[f * self.classes + c] += dz * x;
                }
            }
        }
        let penalty = self.penalty();
        for (g, w) in grad_w.iter_mut().zip(&self.weights) {
            *g += 2.0 * self.l2 * w;
        }
        for ((w, v), g) in self
            .weights
            .iter_mut()
            .zip(&mut self.weights_velocity)
            .zip(&grad_w)
        {
            *v = self.momentum * *v - lr * g;
            *w += *v;
        }
        for ((b, v), g) in self
            .bias
            .iter_mut()
            .zip(&mut self.bias_velocity)
            .zip(&grad_b)
        {
            *v = self.momentum * *v - lr * g;
            *b += *v;
        }
        self.steps += 1.0;
        Ok(StepStats {
            loss: loss / n as f64 + penalty,
            correct,
        })
    }

    fn predict(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>> {
        if images.len() != n * self.features {
            miette::bail!(
                "{} values for {n} samples of {} features",
                images.len(),
                self.features
            );
        }
        let mut out = vec![0.0f32; n * self.classes];
        for (image, row) in images
            .chunks_exact(self.features)
            .zip(out.chunks_exact_mut(self.classes))
        {
            self.probabilities(image, row);
        }
        Ok(out)
    }

    fn regularization_loss(&self) -> f64 {
        self.penalty()
    }

    fn state(&self) -> NamedTensors {
        let t = |shape: Vec<usize>, data: &[f32]| Tensor {
            shape,
            data: data.to_vec(),
        };
        NamedTensors::from([
            (
                "dense/kernel".to_string(),
                t(vec![self.features, self.classes], &self.weights),
            ),
            ("dense/bias".to_string(), t(vec![self.classes], &self.bias)),
            (
                "optimizer/dense/kernel/velocity".to_string(),
                t(vec![self.features, self.classes], &self.weights_velocity),
            ),
            (
                "optimizer/dense/bias/velocity".to_string(),
                t(vec![self.classes], &self.bias_velocity),
            ),
            (
                "optimizer/iterations".to_string(),
                t(vec![1], &[self.steps]),
            ),
        ])
    }

    fn load_state(&mut self, state: &NamedTensors) -> miette::Result<()> {
        let get = |name: &str, len: usize| -> miette::Result<Vec<f32>> {
            let tensor = state
                .get(name)
                .ok_or_else(|| miette::miette!("state has no `{name}`"))?;
            if tensor.data.len() != len {
                miette::bail!(
                    "`{name}` holds {} values, expected {len}",
                    tensor.data.len()
                );
            }
            Ok(tensor.data.clone())
        };
        let size = self.features * self.classes;
        self.weights = get("dense/kernel", size)?;
        self.bias = get("dense/bias", self.classes)?;
        self.weights_velocity = get("optimizer/dense/kernel/velocity", size)?;
        self.bias_velocity = get("optimizer/dense/bias/velocity", self.classes)?;
        self.steps = get("optimizer/iterations", 1)?[0];
        Ok(())
    }
}
