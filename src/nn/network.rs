//! `Network`: a model IR compiled into a list of kernels with parameters, run per batch.
//!
//! "Compile once, run per batch": every activation, gradient and scratch buffer of a
//! (batch size, mode) pair is allocated the first time that pair runs and reused by every
//! later step. Parameters carry Keras names (`<layer>/kernel`, `/bias`, `/gamma`, `/beta`,
//! `/moving_mean`, `/moving_variance`) and Keras layouts (conv HWIO, dense (in, out)), so
//! Keras HDF5 weights map one to one. A final softmax is fused into the cross-entropy: the
//! last buffer holds logits, and `predict` applies the softmax.

use super::error::EngineError;
use super::ir::{Activation, LayerOp, ModelIr, Regularizer};
use super::ops::conv::{conv2d_backward, conv2d_forward, ConvGeom, ConvScratch};
use super::ops::dense::{dense_backward, dense_forward};
use super::ops::dropout::{apply_mask, fill_mask, mask_seed};
use super::ops::norm::{
    affine_part, batchnorm_infer_backward, batchnorm_infer_forward, batchnorm_train_backward,
    batchnorm_train_forward, infer_affine, update_running,
};
use super::ops::pool::{
    avgpool_backward, avgpool_forward, global_avgpool_backward, global_avgpool_forward,
    maxpool_backward, maxpool_backward_recompute, maxpool_forward, PoolGeom,
};
use super::ops::shape::{upsample_backward, upsample_forward};
use super::ops::{activation, loss};
use super::optim::OptimizerConfig;
use crate::train::learner::{Batch, Learner, NamedTensors, StepStats, Tensor};
use rand::distributions::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::HashMap;
use std::time::Instant;

/// Largest batch `predict` runs at once; longer inputs are processed in chunks of this size.
const PREDICT_CHUNK: usize = 64;

/// One named parameter or running statistic.
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    grad: Vec<f32>,
    /// Updated by the optimizer (false for frozen layers and batchnorm running statistics).
    pub trainable: bool,
    regularizer: Regularizer,
    slots: Vec<Vec<f32>>,
}

#[derive(Clone, Copy, Debug)]
enum Kernel {
    Conv {
        geom: ConvGeom,
        kernel: usize,
        bias: usize,
    },
    Dense {
        inputs: usize,
        units: usize,
        kernel: usize,
        bias: usize,
    },
    MaxPool(PoolGeom),
    AvgPool(PoolGeom),
    GlobalAvgPool {
        pixels: usize,
        c: usize,
    },
    BatchNorm {
        c: usize,
        momentum: f32,
        eps: f32,
        gamma: usize,
        beta: usize,
        mean: usize,
        var: usize,
    },
    Dropout {
        rate: f32,
    },
    Copy,
    Upsample {
        h: usize,
        w: usize,
        c: usize,
        factor: usize,
    },
}

struct Layer {
    kernel: Kernel,
    /// Applied in place after the kernel (Linear for a softmax fused into the loss).
    act: Activation,
    /// Size of the output's last axis (softmax normalises over it).
    last: usize,
    out_len: usize,
    trainable: bool,
}

impl Layer {
    fn has_params(&self) -> bool {
        matches!(
            self.kernel,
            Kernel::Conv { .. } | Kernel::Dense { .. } | Kernel::BatchNorm { .. }
        )
    }
    /// Batchnorm of a frozen layer runs in inference mode even while training (Keras 2.1+).
    fn bn_training(&self, train: bool) -> bool {
        train && self.trainable
    }
}

enum Scratch {
    None,
    Conv(ConvScratch<f32>),
    Norm {
        mean: Vec<f32>,
        inv_std: Vec<f32>,
        var: Vec<f32>,
    },
    Mask(Vec<f32>),
    Argmax(Vec<u32>),
}

/// All buffers of one (batch size, mode).
struct Workspace {
    acts: Vec<Vec<f32>>,
    grads: Vec<Vec<f32>>,
    input_grad: Vec<f32>,
    scratch: Vec<Scratch>,
    probs: Vec<f32>,
    /// Seconds spent per layer (forward, backward) while profiling, over `steps` steps.
    times: Vec<[f64; 2]>,
    steps: usize,
}

impl Workspace {
    fn bytes(&self) -> usize {
        let floats: usize = self
            .acts
            .iter()
            .chain(&self.grads)
            .map(Vec::len)
            .sum::<usize>()
            + self.input_grad.len()
            + self.probs.len();
        let scratch: usize = self
            .scratch
            .iter()
            .map(|s| match s {
                Scratch::None => 0,
                Scratch::Conv(c) => c.bytes(),
                Scratch::Norm { mean, inv_std, var } => {
                    (mean.len() + inv_std.len() + var.len()) * 4
                }
                Scratch::Mask(m) => m.len() * 4,
                Scratch::Argmax(a) => a.len() * 4,
            })
            .sum();
        floats * 4 + scratch
    }
}

/// Memory of one training or inference step, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryReport {
    pub parameters: usize,
    pub gradients: usize,
    pub optimizer: usize,
    /// Activations, their gradients and per-operator scratch of this batch size and mode.
    pub workspace: usize,
}

impl MemoryReport {
    pub fn total(&self) -> usize {
        self.parameters + self.gradients + self.optimizer + self.workspace
    }
}

/// The activation of one layer (or the input) and the gradient of a chosen objective w.r.t. it.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivationGradients {
    /// Output of the chosen layer (or the input images), `[n, ...shape]`.
    pub activations: Tensor,
    /// d objective / d activations, same shape.
    pub gradients: Tensor,
    /// The network's final outputs before the fused softmax, `[n, classes]`.
    pub logits: Tensor,
}

pub struct Network {
    ir: ModelIr,
    layers: Vec<Layer>,
    params: Vec<Param>,
    optimizer: OptimizerConfig,
    step: u64,
    seed: u64,
    classes: usize,
    fused_softmax: bool,
    workspaces: HashMap<(usize, bool), Workspace>,
    profiling: bool,
}

fn shape_error(ir: &ModelIr, index: usize, message: impl Into<String>) -> EngineError {
    EngineError::Shape {
        layer: ir
            .layers
            .get(index)
            .map(|l| l.name.clone())
            .unwrap_or_else(|| format!("#{index}")),
        message: message.into(),
    }
}

fn image3(shape: &[usize]) -> Option<[usize; 3]> {
    match shape {
        [h, w, c] => Some([*h, *w, *c]),
        _ => None,
    }
}

impl Network {
    /// Compiles `ir`, initialising parameters Keras-style from `seed` (glorot-uniform kernels,
    /// zero biases, unit gammas). Every layer's shapes are re-inferred and compared with the
    /// IR, so a hand-edited or stale IR fails here, naming the layer, before anything runs.
    pub fn new(
        ir: &ModelIr,
        seed: u64,
        optimizer: OptimizerConfig,
    ) -> Result<Network, EngineError> {
        super::gemm::configure();
        let rebuilt = ModelIr::build(
            &ir.name,
            ir.input.clone(),
            ir.layers
                .iter()
                .map(|l| (Some(l.name.clone()), l.op.clone()))
                .collect(),
        )
        .map_err(|e| shape_error(ir, e.layer, e.message))?;
        for (i, (have, want)) in ir.layers.iter().zip(&rebuilt.layers).enumerate() {
            if have.input != want.input || have.output != want.output {
                return Err(shape_error(
                    ir,
                    i,
                    format!(
                        "the IR says {:?} → {:?} but the layer computes {:?} → {:?}",
                        have.input, have.output, want.input, want.output
                    ),
                ));
            }
        }
        if ir.layers.is_empty() {
            return Err(EngineError::Shape {
                layer: ir.name.clone(),
                message: "the model has no layers".into(),
            });
        }
        let last_index = ir.layers.len() - 1;
        let final_act = match &ir.layers[last_index].op {
            LayerOp::Conv2d { activation, .. }
            | LayerOp::Dense { activation, .. }
            | LayerOp::Activation(activation) => *activation,
            _ => Activation::Linear,
        };
        let fused_softmax = final_act == Activation::Softmax;
        let classes = ir.output().iter().product();

        let mut params = Vec::new();
        let mut layers = Vec::new();
        for (index, layer) in ir.layers.iter().enumerate() {
            let mut rng = ChaCha8Rng::seed_from_u64(
                seed ^ (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let mut add = |suffix: &str,
                           shape: Vec<usize>,
                           value: Vec<f32>,
                           trainable: bool,
                           regularizer: Regularizer| {
                params.push(Param {
                    name: format!("{}/{suffix}", layer.name),
                    grad: if trainable {
                        vec![0.0; value.len()]
                    } else {
                        Vec::new()
                    },
                    shape,
                    value,
                    trainable,
                    regularizer,
                    slots: Vec::new(),
                });
                params.len() - 1
            };
            let mut glorot = |fan_in: usize, fan_out: usize, len: usize| -> Vec<f32> {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                let dist = Uniform::new(-limit, limit);
                (0..len).map(|_| dist.sample(&mut rng)).collect()
            };
            let trainable = layer.trainable;
            let out_len: usize = layer.output.iter().product();
            let last = *layer.output.last().unwrap_or(&1);
            let mut act = Activation::Linear;
            let kernel = match &layer.op {
                LayerOp::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    dilation,
                    groups,
                    activation,
                    regularizer,
                } => {
                    let input = image3(&layer.input)
                        .ok_or_else(|| shape_error(ir, index, "conv needs an image input"))?;
                    let geom = ConvGeom::new(
                        input, *filters, *kernel, *stride, *padding, *dilation, *groups,
                    );
                    let cg = input[2] / groups;
                    let shape = vec![kernel[0], kernel[1], cg, *filters];
                    let value = glorot(
                        kernel[0] * kernel[1] * cg,
                        kernel[0] * kernel[1] * filters,
                        geom.kernel_len(),
                    );
                    act = *activation;
                    let k = add("kernel", shape, value, trainable, *regularizer);
                    let b = add(
                        "bias",
                        vec![*filters],
                        vec![0.0; *filters],
                        trainable,
                        Regularizer::default(),
                    );
                    Kernel::Conv {
                        geom,
                        kernel: k,
                        bias: b,
                    }
                }
                LayerOp::Dense {
                    units,
                    activation,
                    regularizer,
                } => {
                    let inputs = layer.input[0];
                    act = *activation;
                    let k = add(
                        "kernel",
                        vec![inputs, *units],
                        glorot(inputs, *units, inputs * units),
                        trainable,
                        *regularizer,
                    );
                    let b = add(
                        "bias",
                        vec![*units],
                        vec![0.0; *units],
                        trainable,
                        Regularizer::default(),
                    );
                    Kernel::Dense {
                        inputs,
                        units: *units,
                        kernel: k,
                        bias: b,
                    }
                }
                LayerOp::MaxPool {
                    size,
                    stride,
                    padding,
                }
                | LayerOp::AvgPool {
                    size,
                    stride,
                    padding,
                } => {
                    let input = image3(&layer.input)
                        .ok_or_else(|| shape_error(ir, index, "pooling needs an image input"))?;
                    let geom = PoolGeom::new(input, *size, *stride, *padding);
                    if matches!(layer.op, LayerOp::MaxPool { .. }) {
                        Kernel::MaxPool(geom)
                    } else {
                        Kernel::AvgPool(geom)
                    }
                }
                LayerOp::GlobalAvgPool => {
                    let [h, w, c] = image3(&layer.input).ok_or_else(|| {
                        shape_error(ir, index, "global pooling needs an image input")
                    })?;
                    Kernel::GlobalAvgPool { pixels: h * w, c }
                }
                LayerOp::BatchNorm { momentum, epsilon } => {
                    let c = last;
                    let gamma = add(
                        "gamma",
                        vec![c],
                        vec![1.0; c],
                        trainable,
                        Regularizer::default(),
                    );
                    let beta = add(
                        "beta",
                        vec![c],
                        vec![0.0; c],
                        trainable,
                        Regularizer::default(),
                    );
                    let mean = add(
                        "moving_mean",
                        vec![c],
                        vec![0.0; c],
                        false,
                        Regularizer::default(),
                    );
                    let var = add(
                        "moving_variance",
                        vec![c],
                        vec![1.0; c],
                        false,
                        Regularizer::default(),
                    );
                    Kernel::BatchNorm {
                        c,
                        momentum: *momentum,
                        eps: *epsilon,
                        gamma,
                        beta,
                        mean,
                        var,
                    }
                }
                LayerOp::Dropout { rate } => Kernel::Dropout { rate: *rate },
                LayerOp::Flatten => Kernel::Copy,
                LayerOp::Activation(a) => {
                    act = *a;
                    Kernel::Copy
                }
                LayerOp::Upsample { factor } => {
                    let [h, w, c] = image3(&layer.input)
                        .ok_or_else(|| shape_error(ir, index, "upsampling needs an image input"))?;
                    Kernel::Upsample {
                        h,
                        w,
                        c,
                        factor: *factor,
                    }
                }
            };
            if let Activation::LeakyRelu { alpha } | Activation::Elu { alpha } = act {
                if alpha <= 0.0 {
                    return Err(shape_error(
                        ir,
                        index,
                        format!("activation alpha {alpha} must be positive"),
                    ));
                }
            }
            if index == last_index && fused_softmax {
                act = Activation::Linear;
            }
            layers.push(Layer {
                kernel,
                act,
                last,
                out_len,
                trainable,
            });
        }
        let mut network = Network {
            ir: ir.clone(),
            layers,
            params,
            optimizer,
            step: 0,
            seed,
            classes,
            fused_softmax,
            workspaces: HashMap::new(),
            profiling: false,
        };
        network.reset_slots();
        Ok(network)
    }

    fn reset_slots(&mut self) {
        let slots = self.optimizer.slots().len();
        for p in self.params.iter_mut().filter(|p| p.trainable) {
            p.slots = (0..slots).map(|_| vec![0.0; p.value.len()]).collect();
        }
    }

    pub fn ir(&self) -> &ModelIr {
        &self.ir
    }
    pub fn seed(&self) -> u64 {
        self.seed
    }
    pub fn optimizer(&self) -> OptimizerConfig {
        self.optimizer
    }
    /// Optimizer steps taken so far.
    pub fn step(&self) -> u64 {
        self.step
    }
    pub fn params(&self) -> &[Param] {
        &self.params
    }
    /// Gradient of the last training step for parameter `name` (None for running statistics).
    pub fn gradient(&self, name: &str) -> Option<&[f32]> {
        self.params
            .iter()
            .find(|p| p.name == name && p.trainable)
            .map(|p| p.grad.as_slice())
    }
    /// Replaces one parameter's values (weight import); the shape must match.
    pub fn set_param(&mut self, name: &str, value: &[f32]) -> Result<(), EngineError> {
        let p = self
            .params
            .iter_mut()
            .find(|p| p.name == name)
            .ok_or_else(|| EngineError::MissingTensor {
                name: name.to_string(),
            })?;
        if p.value.len() != value.len() {
            return Err(EngineError::TensorShape {
                name: name.to_string(),
                expected: p.shape.clone(),
                got: vec![value.len()],
            });
        }
        p.value.copy_from_slice(value);
        Ok(())
    }

    fn input_len(&self) -> usize {
        self.ir.input.iter().product()
    }

    fn workspace(&mut self, n: usize, train: bool) -> Workspace {
        if let Some(ws) = self.workspaces.remove(&(n, train)) {
            return ws;
        }
        let acts = self
            .layers
            .iter()
            .map(|l| vec![0.0; n * l.out_len])
            .collect();
        let grads = if train {
            self.layers
                .iter()
                .map(|l| vec![0.0; n * l.out_len])
                .collect()
        } else {
            Vec::new()
        };
        let scratch = self
            .layers
            .iter()
            .map(|l| match l.kernel {
                Kernel::Conv { geom, .. } => Scratch::Conv(ConvScratch::new(&geom, n, train)),
                Kernel::MaxPool(g) if train => Scratch::Argmax(vec![0; n * g.out_len()]),
                Kernel::BatchNorm { c, .. } => Scratch::Norm {
                    mean: vec![0.0; c],
                    inv_std: vec![0.0; c],
                    var: vec![0.0; c],
                },
                Kernel::Dropout { .. } if train => Scratch::Mask(vec![0.0; n * l.out_len]),
                _ => Scratch::None,
            })
            .collect();
        let times = vec![[0.0; 2]; self.layers.len()];
        Workspace {
            acts,
            grads,
            input_grad: Vec::new(),
            scratch,
            probs: vec![0.0; n * self.classes],
            times,
            steps: 0,
        }
    }

    /// Forward pass; in training mode batchnorm uses batch statistics and dropout draws masks.
    /// With `fuse` (inference only), a convolution followed by an inference batchnorm writes
    /// straight into the batchnorm's output, activation and normalisation applied while each
    /// part is in cache; the convolution's own output buffer is then left stale, so callers
    /// that read intermediate activations (gradients w.r.t. inputs) pass `false`.
    fn forward(&self, ws: &mut Workspace, images: &[f32], n: usize, train: bool, fuse: bool) {
        let mut i = 0;
        while i < self.layers.len() {
            let started = self.profiling.then(Instant::now);
            let (before, after) = ws.acts.split_at_mut(i);
            let x: &[f32] = if i == 0 { images } else { &before[i - 1] };
            let fused = fuse && !train && self.forward_conv_bn(i, &mut ws.scratch[i], x, after, n);
            if !fused {
                self.forward_layer(i, &mut ws.scratch[i], x, &mut after[0], n, train);
            }
            if let Some(t) = started {
                ws.times[i][0] += t.elapsed().as_secs_f64();
            }
            i += if fused { 2 } else { 1 };
        }
    }

    /// Layer `i` (a convolution) and layer `i + 1` (batchnorm in inference mode) in one pass,
    /// output to `acts[1]`; false (nothing done) when the layers are not such a pair. Same
    /// arithmetic as the two layers run apart, so the outputs are bit-identical.
    fn forward_conv_bn(
        &self,
        i: usize,
        scratch: &mut Scratch,
        x: &[f32],
        acts: &mut [Vec<f32>],
        n: usize,
    ) -> bool {
        let (Some(conv), Some(norm)) = (self.layers.get(i), self.layers.get(i + 1)) else {
            return false;
        };
        let (
            Kernel::Conv { geom, kernel, bias },
            Kernel::BatchNorm {
                eps,
                gamma,
                beta,
                mean,
                var,
                ..
            },
            Scratch::Conv(s),
        ) = (conv.kernel, norm.kernel, scratch)
        else {
            return false;
        };
        if norm.bn_training(false)
            || conv.act == Activation::Softmax
            || norm.act == Activation::Softmax
        {
            return false;
        }
        let p = &self.params;
        let (scale, shift) = infer_affine(
            eps,
            &p[gamma].value,
            &p[beta].value,
            &p[mean].value,
            &p[var].value,
        );
        let (conv_act, norm_act) = (conv.act, norm.act);
        let epilogue = |part: &mut [f32]| {
            activation::activate_part(conv_act, part);
            affine_part(&scale, &shift, part);
            activation::activate_part(norm_act, part);
        };
        conv2d_forward(
            &geom,
            n,
            x,
            &p[kernel].value,
            &p[bias].value,
            &mut acts[1],
            s,
            Some(&epilogue),
        );
        true
    }

    /// One layer's kernel and activation, `x` → `y`.
    fn forward_layer(
        &self,
        i: usize,
        scratch: &mut Scratch,
        x: &[f32],
        y: &mut [f32],
        n: usize,
        train: bool,
    ) {
        let layer = &self.layers[i];
        let p = &self.params;
        match (layer.kernel, scratch) {
            (Kernel::Conv { geom, kernel, bias }, Scratch::Conv(s)) => {
                conv2d_forward(&geom, n, x, &p[kernel].value, &p[bias].value, y, s, None)
            }
            (
                Kernel::Dense {
                    inputs,
                    units,
                    kernel,
                    bias,
                },
                _,
            ) => dense_forward(n, inputs, units, x, &p[kernel].value, &p[bias].value, y),
            (Kernel::MaxPool(g), Scratch::Argmax(am)) => maxpool_forward(&g, x, y, Some(am)),
            (Kernel::MaxPool(g), _) => maxpool_forward(&g, x, y, None),
            (Kernel::AvgPool(g), _) => avgpool_forward(&g, x, y),
            (Kernel::GlobalAvgPool { pixels, c }, _) => global_avgpool_forward(pixels, c, x, y),
            (
                Kernel::BatchNorm {
                    c,
                    eps,
                    gamma,
                    beta,
                    mean,
                    var,
                    ..
                },
                Scratch::Norm {
                    mean: bm,
                    inv_std,
                    var: bv,
                },
            ) => {
                if layer.bn_training(train) {
                    batchnorm_train_forward(
                        c,
                        eps,
                        x,
                        &p[gamma].value,
                        &p[beta].value,
                        y,
                        bm,
                        inv_std,
                        bv,
                    );
                } else {
                    let (g, b) = (&p[gamma].value, &p[beta].value);
                    batchnorm_infer_forward(c, eps, x, g, b, &p[mean].value, &p[var].value, y);
                }
            }
            (Kernel::Dropout { rate }, Scratch::Mask(mask)) if train => {
                fill_mask(rate, mask_seed(self.seed, self.step, i), mask);
                apply_mask(x, mask, y);
            }
            (Kernel::Upsample { h, w, c, factor }, _) => upsample_forward(h, w, c, factor, x, y),
            (Kernel::Dropout { .. } | Kernel::Copy, _) => y.copy_from_slice(x),
            (kernel, _) => unreachable!("workspace scratch does not match kernel {kernel:?}"),
        }
        activation::activate(layer.act, y, layer.last);
    }

    /// Runs layer `i` alone in inference mode on a batch of `n` (`x` and `y` sized for it):
    /// lets another executor host the kernels (the luminal comparison in `gpl bench engine`).
    pub fn run_layer(&mut self, i: usize, n: usize, x: &[f32], y: &mut [f32]) {
        let mut ws = self.workspace(n, false);
        self.forward_layer(i, &mut ws.scratch[i], x, y, n, false);
        self.workspaces.insert((n, false), ws);
    }

    /// Elements per sample of layer `i`'s output.
    pub fn layer_output_len(&self, i: usize) -> usize {
        self.layers[i].out_len
    }

    /// Number of compiled layers (one per IR layer).
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// Backward pass from `ws.grads[last]`. Layers below the lowest one that needs work are
    /// skipped; frozen layers only pass the gradient through. Returns the gradient w.r.t. the
    /// output of layer `capture`, or w.r.t. the input when `want_input`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &mut self,
        ws: &mut Workspace,
        images: &[f32],
        n: usize,
        train: bool,
        want_input: bool,
        param_grads: bool,
        capture: Option<usize>,
    ) -> Vec<f32> {
        let (stop, dx_at_stop) = if want_input {
            (0, true)
        } else if let Some(l) = capture {
            (l + 1, true)
        } else if param_grads {
            match self
                .layers
                .iter()
                .position(|l| l.trainable && l.has_params())
            {
                Some(first) => (first, false),
                None => return Vec::new(),
            }
        } else {
            return Vec::new();
        };
        if want_input && ws.input_grad.len() != images.len() {
            ws.input_grad = vec![0.0; images.len()];
        }
        for i in (stop..self.layers.len()).rev() {
            let started = self.profiling.then(Instant::now);
            let layer = &self.layers[i];
            let (gbefore, gafter) = ws.grads.split_at_mut(i);
            let dy = &mut gafter[0];
            let dx: Option<&mut [f32]> = if i > stop || (dx_at_stop && i > 0) {
                Some(&mut gbefore[i - 1])
            } else if dx_at_stop {
                Some(&mut ws.input_grad)
            } else {
                None
            };
            let x: &[f32] = if i == 0 { images } else { &ws.acts[i - 1] };
            let y = &ws.acts[i];
            activation::activate_backward(layer.act, y, dy, layer.last);
            let with_params = param_grads && layer.trainable;
            let p = &mut self.params;
            match (layer.kernel, &mut ws.scratch[i]) {
                (Kernel::Conv { geom, kernel, bias }, Scratch::Conv(s)) => {
                    let (mut gk, mut gb) = (
                        std::mem::take(&mut p[kernel].grad),
                        std::mem::take(&mut p[bias].grad),
                    );
                    conv2d_backward(
                        &geom,
                        n,
                        x,
                        &p[kernel].value,
                        dy,
                        dx,
                        with_params.then_some((&mut gk[..], &mut gb[..])),
                        s,
                    );
                    (p[kernel].grad, p[bias].grad) = (gk, gb);
                }
                (
                    Kernel::Dense {
                        inputs,
                        units,
                        kernel,
                        bias,
                    },
                    _,
                ) => {
                    let (mut gk, mut gb) = (
                        std::mem::take(&mut p[kernel].grad),
                        std::mem::take(&mut p[bias].grad),
                    );
                    dense_backward(
                        n,
                        inputs,
                        units,
                        x,
                        &p[kernel].value,
                        dy,
                        dx,
                        with_params.then_some((&mut gk[..], &mut gb[..])),
                    );
                    (p[kernel].grad, p[bias].grad) = (gk, gb);
                }
                (Kernel::MaxPool(g), scratch) => {
                    if let Some(dx) = dx {
                        match scratch {
                            Scratch::Argmax(am) => maxpool_backward(&g, dy, am, dx),
                            _ => maxpool_backward_recompute(&g, x, y, dy, dx),
                        }
                    }
                }
                (Kernel::AvgPool(g), _) => {
                    if let Some(dx) = dx {
                        avgpool_backward(&g, dy, dx);
                    }
                }
                (Kernel::GlobalAvgPool { pixels, c }, _) => {
                    if let Some(dx) = dx {
                        global_avgpool_backward(pixels, c, dy, dx);
                    }
                }
                (
                    Kernel::BatchNorm {
                        c,
                        eps,
                        gamma,
                        beta,
                        var,
                        ..
                    },
                    Scratch::Norm {
                        mean: bm, inv_std, ..
                    },
                ) => {
                    if layer.bn_training(train) {
                        let (mut gg, mut gbeta) = (
                            std::mem::take(&mut p[gamma].grad),
                            std::mem::take(&mut p[beta].grad),
                        );
                        if with_params {
                            batchnorm_train_backward(
                                c,
                                x,
                                dy,
                                &p[gamma].value,
                                bm,
                                inv_std,
                                dx,
                                &mut gg,
                                &mut gbeta,
                            );
                        } else {
                            let (mut tg, mut tb) = (vec![0.0; c], vec![0.0; c]);
                            batchnorm_train_backward(
                                c,
                                x,
                                dy,
                                &p[gamma].value,
                                bm,
                                inv_std,
                                dx,
                                &mut tg,
                                &mut tb,
                            );
                        }
                        (p[gamma].grad, p[beta].grad) = (gg, gbeta);
                    } else if let Some(dx) = dx {
                        batchnorm_infer_backward(c, eps, dy, &p[gamma].value, &p[var].value, dx);
                    }
                }
                (Kernel::Dropout { .. }, Scratch::Mask(mask)) if train => {
                    if let Some(dx) = dx {
                        apply_mask(dy, mask, dx);
                    }
                }
                (Kernel::Upsample { h, w, c, factor }, _) => {
                    if let Some(dx) = dx {
                        upsample_backward(h, w, c, factor, dy, dx);
                    }
                }
                (Kernel::Dropout { .. } | Kernel::Copy, _) => {
                    if let Some(dx) = dx {
                        dx.copy_from_slice(dy);
                    }
                }
                (kernel, _) => unreachable!("workspace scratch does not match kernel {kernel:?}"),
            }
            if let Some(t) = started {
                ws.times[i][1] += t.elapsed().as_secs_f64();
            }
        }
        match capture {
            _ if want_input => ws.input_grad.clone(),
            Some(l) => ws.grads[l].clone(),
            None => Vec::new(),
        }
    }

    fn check_images(&self, images: &[f32], n: usize) -> Result<(), EngineError> {
        let expected = n * self.input_len();
        if images.len() != expected {
            return Err(EngineError::Batch {
                what: "images",
                expected,
                got: images.len(),
            });
        }
        Ok(())
    }

    /// Sum of every layer's L1/L2 kernel penalty.
    fn penalty(&self) -> f64 {
        self.params
            .iter()
            .filter(|p| p.regularizer != Regularizer::default())
            .map(|p| loss::penalty(p.regularizer.l1, p.regularizer.l2, &p.value))
            .sum()
    }

    /// Forward and backward without an optimizer update: returns the loss (with penalties) and
    /// leaves every gradient readable through `gradient()`. `train_batch` is this plus the update.
    pub fn compute_gradients(&mut self, batch: &Batch) -> Result<StepStats, EngineError> {
        let n = batch.len();
        self.check_images(batch.images, n)?;
        if batch.weights.len() != n {
            return Err(EngineError::Batch {
                what: "sample weights",
                expected: n,
                got: batch.weights.len(),
            });
        }
        if let Some(&label) = batch.labels.iter().find(|&&l| l as usize >= self.classes) {
            return Err(EngineError::Label {
                label,
                classes: self.classes,
            });
        }
        let mut ws = self.workspace(n, true);
        self.forward(&mut ws, batch.images, n, true, false);
        let last = self.layers.len() - 1;
        let (acts, grads) = (&ws.acts[last], &mut ws.grads[last]);
        let data_loss = loss::softmax_cross_entropy(
            self.classes,
            acts,
            batch.labels,
            batch.weights,
            &mut ws.probs,
            Some(grads),
        );
        let total = data_loss + self.penalty();
        if !total.is_finite() {
            self.workspaces.insert((n, true), ws);
            return Err(EngineError::NonFiniteLoss { loss: total });
        }
        let correct = ws
            .probs
            .chunks(self.classes)
            .zip(batch.labels)
            .filter(|(p, &l)| argmax(p) == l as usize)
            .count();
        self.backward(&mut ws, batch.images, n, true, false, true, None);
        for p in self
            .params
            .iter_mut()
            .filter(|p| p.trainable && p.regularizer != Regularizer::default())
        {
            loss::penalty_backward(p.regularizer.l1, p.regularizer.l2, &p.value, &mut p.grad);
        }
        // Running statistics move only once the step is known to be finite.
        for (layer, scratch) in self.layers.iter().zip(&ws.scratch) {
            if let (
                Kernel::BatchNorm {
                    momentum,
                    mean,
                    var,
                    ..
                },
                Scratch::Norm {
                    mean: bm, var: bv, ..
                },
            ) = (layer.kernel, scratch)
            {
                if layer.bn_training(true) {
                    let (mut mm, mut mv) = (
                        std::mem::take(&mut self.params[mean].value),
                        std::mem::take(&mut self.params[var].value),
                    );
                    update_running(momentum, bm, bv, &mut mm, &mut mv);
                    (self.params[mean].value, self.params[var].value) = (mm, mv);
                }
            }
        }
        ws.steps += 1;
        self.workspaces.insert((n, true), ws);
        Ok(StepStats {
            loss: total,
            correct,
        })
    }

    /// Times every layer's forward and backward kernels from now on (see `profile`).
    pub fn set_profiling(&mut self, on: bool) {
        self.profiling = on;
        for ws in self.workspaces.values_mut() {
            ws.times.iter_mut().for_each(|t| *t = [0.0; 2]);
            ws.steps = 0;
        }
    }

    /// Mean seconds per training step (`train`) or inference batch of each layer, (name,
    /// forward, backward), for the most profiled batch size.
    pub fn profile(&self, train: bool) -> Vec<(String, f64, f64)> {
        let Some(ws) = self
            .workspaces
            .iter()
            .filter(|((_, mode), _)| *mode == train)
            .map(|(_, ws)| ws)
            .max_by_key(|ws| ws.steps)
        else {
            return Vec::new();
        };
        let steps = ws.steps.max(1) as f64;
        self.ir
            .layers
            .iter()
            .zip(&ws.times)
            .map(|(l, t)| (l.name.clone(), t[0] / steps, t[1] / steps))
            .collect()
    }

    /// The last training step's final outputs (logits when the softmax is fused), `[n, classes]`.
    pub fn train_outputs(&self, n: usize) -> Option<&[f32]> {
        self.workspaces
            .get(&(n, true))
            .and_then(|ws| ws.acts.last())
            .map(Vec::as_slice)
    }

    /// Applies the optimizer to the gradients of the last `compute_gradients`.
    pub fn apply_gradients(&mut self, lr: f32) {
        self.step += 1;
        let (optimizer, step) = (self.optimizer, self.step);
        for p in self.params.iter_mut().filter(|p| p.trainable) {
            optimizer.update(step, lr, &mut p.value, &p.grad, &mut p.slots);
        }
    }

    /// Outputs before the fused softmax for `n` images (inference mode), `[n, classes]`.
    pub fn logits(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>, EngineError> {
        self.check_images(images, n)?;
        let mut out = Vec::with_capacity(n * self.classes);
        let chunk = n.clamp(1, PREDICT_CHUNK);
        let mut ws = self.workspace(chunk, false);
        let per = self.input_len();
        let mut padded = Vec::new();
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            // A short last chunk is zero-padded: inference treats samples independently.
            let x = if end - start == chunk {
                &images[start * per..end * per]
            } else {
                padded.clear();
                padded.extend_from_slice(&images[start * per..end * per]);
                padded.resize(chunk * per, 0.0);
                &padded[..]
            };
            self.forward(&mut ws, x, chunk, false, true);
            ws.steps += 1;
            out.extend_from_slice(&ws.acts[self.layers.len() - 1][..(end - start) * self.classes]);
        }
        self.workspaces.insert((chunk, false), ws);
        Ok(out)
    }

    /// Gradient of `objective = Σ output_grad · logits` (inference mode) w.r.t. the output of
    /// layer `layer`, or w.r.t. the input images when `layer` is None. With a one-hot
    /// `output_grad` this is the class-score gradient Grad-CAM and saliency maps need.
    /// Runs the `n` images as one batch; parameter gradients are not computed.
    pub fn forward_backward_input(
        &mut self,
        images: &[f32],
        n: usize,
        output_grad: &[f32],
        layer: Option<usize>,
    ) -> Result<ActivationGradients, EngineError> {
        self.check_images(images, n)?;
        if output_grad.len() != n * self.classes {
            return Err(EngineError::Batch {
                what: "output gradient",
                expected: n * self.classes,
                got: output_grad.len(),
            });
        }
        if let Some(l) = layer {
            if l >= self.layers.len() {
                return Err(EngineError::Shape {
                    layer: format!("#{l}"),
                    message: format!("the model has {} layers", self.layers.len()),
                });
            }
        }
        let mut ws = self.workspace(n, false);
        if ws.grads.is_empty() {
            ws.grads = self
                .layers
                .iter()
                .map(|l| vec![0.0; n * l.out_len])
                .collect();
        }
        self.forward(&mut ws, images, n, false, false);
        let last = self.layers.len() - 1;
        ws.grads[last].copy_from_slice(output_grad);
        let gradients = self.backward(&mut ws, images, n, false, layer.is_none(), false, layer);
        let (activations, shape) = match layer {
            Some(l) => (ws.acts[l].clone(), self.ir.layers[l].output.clone()),
            None => (images.to_vec(), self.ir.input.clone()),
        };
        let full: Vec<usize> = std::iter::once(n).chain(shape).collect();
        let logits = Tensor {
            shape: vec![n, self.classes],
            data: ws.acts[last].clone(),
        };
        self.workspaces.insert((n, false), ws);
        Ok(ActivationGradients {
            activations: Tensor {
                shape: full.clone(),
                data: activations,
            },
            gradients: Tensor {
                shape: full,
                data: gradients,
            },
            logits,
        })
    }

    /// Gradient of each sample's class score (logit of `classes[i]`) w.r.t. a layer's output.
    pub fn class_score_gradients(
        &mut self,
        images: &[f32],
        classes: &[u32],
        layer: Option<usize>,
    ) -> Result<ActivationGradients, EngineError> {
        let mut seed = vec![0.0; classes.len() * self.classes];
        for (i, &c) in classes.iter().enumerate() {
            if c as usize >= self.classes {
                return Err(EngineError::Label {
                    label: c,
                    classes: self.classes,
                });
            }
            seed[i * self.classes + c as usize] = 1.0;
        }
        self.forward_backward_input(images, classes.len(), &seed, layer)
    }

    /// Memory a step with batch `n` holds (the workspace must have run once).
    pub fn memory(&self, n: usize, train: bool) -> MemoryReport {
        let floats = |f: &dyn Fn(&Param) -> usize| self.params.iter().map(f).sum::<usize>() * 4;
        MemoryReport {
            parameters: floats(&|p| p.value.len()),
            gradients: floats(&|p| p.grad.len()),
            optimizer: floats(&|p| p.slots.iter().map(Vec::len).sum()),
            workspace: self
                .workspaces
                .get(&(n, train))
                .map(Workspace::bytes)
                .unwrap_or(0),
        }
    }

    /// Everything `load_state` needs for a bit-exact resume.
    pub fn named_state(&self) -> NamedTensors {
        let mut out = NamedTensors::new();
        for p in &self.params {
            out.insert(
                p.name.clone(),
                Tensor {
                    shape: p.shape.clone(),
                    data: p.value.clone(),
                },
            );
            for (slot, values) in self.optimizer.slots().iter().zip(&p.slots) {
                out.insert(
                    format!("optimizer/{}/{slot}", p.name),
                    Tensor {
                        shape: p.shape.clone(),
                        data: values.clone(),
                    },
                );
            }
        }
        // Two 32-bit halves stored as exact f32 values (each below 2^24 would not suffice).
        let step = self.step;
        out.insert(
            "optimizer/iterations".into(),
            Tensor {
                shape: vec![4],
                data: (0..4)
                    .map(|i| ((step >> (16 * i)) & 0xffff) as f32)
                    .collect(),
            },
        );
        out
    }

    /// Loads parameters (required) and optimizer state (optional: absent slots restart at zero,
    /// as when importing Keras weights).
    pub fn load_named_state(&mut self, state: &NamedTensors) -> Result<(), EngineError> {
        let check = |name: &str, shape: &[usize], t: &Tensor| -> Result<(), EngineError> {
            if t.shape != shape || t.data.len() != shape.iter().product::<usize>() {
                return Err(EngineError::TensorShape {
                    name: name.to_string(),
                    expected: shape.to_vec(),
                    got: t.shape.clone(),
                });
            }
            Ok(())
        };
        for p in &self.params {
            let t = state
                .get(&p.name)
                .ok_or_else(|| EngineError::MissingTensor {
                    name: p.name.clone(),
                })?;
            check(&p.name, &p.shape, t)?;
        }
        let slots = self.optimizer.slots();
        for p in self.params.iter_mut() {
            p.value.copy_from_slice(&state[&p.name].data);
            for (slot, values) in slots.iter().zip(p.slots.iter_mut()) {
                let name = format!("optimizer/{}/{slot}", p.name);
                match state.get(&name) {
                    Some(t) => {
                        check(&name, &p.shape, t)?;
                        values.copy_from_slice(&t.data);
                    }
                    None => values.fill(0.0),
                }
            }
        }
        self.step = match state.get("optimizer/iterations") {
            Some(t) if t.data.len() == 4 => t
                .data
                .iter()
                .enumerate()
                .map(|(i, v)| (*v as u64) << (16 * i))
                .sum(),
            _ => 0,
        };
        Ok(())
    }
}

fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, v) in row.iter().enumerate() {
        if *v > row[best] {
            best = i;
        }
    }
    best
}

impl Learner for Network {
    fn classes(&self) -> usize {
        self.classes
    }

    fn train_batch(&mut self, batch: &Batch, lr: f32) -> miette::Result<StepStats> {
        let stats = self.compute_gradients(batch)?;
        self.apply_gradients(lr);
        Ok(stats)
    }

    fn predict(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>> {
        let mut out = self.logits(images, n)?;
        if self.fused_softmax {
            for row in out.chunks_mut(self.classes) {
                activation::softmax_row(row);
            }
        }
        Ok(out)
    }

    fn state(&self) -> NamedTensors {
        self.named_state()
    }

    fn load_state(&mut self, state: &NamedTensors) -> miette::Result<()> {
        Ok(self.load_named_state(state)?)
    }
}
