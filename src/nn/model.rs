//! `Model`: a model IR compiled into layers (kernel + fused activation, the layers it
//! reads) and named parameters, with each layer's forward and backward kernels. It holds
//! no activations: the luminal graphs of `nn::graph` own those and call into the model per
//! operator, so one model serves its training, inference and explanation graphs alike.
//!
//! Parameters carry Keras names (`<layer>/kernel`, `/bias`, `/gamma`, `/beta`,
//! `/moving_mean`, `/moving_variance`) and Keras layouts (conv HWIO, dense (in, out)), so
//! Keras HDF5 weights map one to one. A weighted sum's fusion weights are its `kernel`.
//! A softmax ending an output is fused into that output's cross-entropy: the layer
//! outputs logits, and `Network::predict` applies the softmax.
//!
//! A layer that shares another's weights (`LayerIr::shares`) reads the owner's parameters
//! and has none of its own, so every name, penalty and optimizer update exists once. Its
//! backward writes the weight gradients into buffers of its own, which
//! `sum_shared_gradients` adds to the parameters' after the backward pass, in layer order.
//! It trains exactly when the owner does.

use super::error::EngineError;
use super::ir::{Activation, LayerOp, ModelIr, Regularizer, Source};
use super::ops::conv::{
    conv2d_backward, conv2d_backward_made, conv2d_forward, ConvGeom, ConvScratch, Prologue,
};
use super::ops::dense::{dense_backward, dense_forward};
use super::ops::dropout::{apply_mask, fill_mask, mask_seed};
use super::ops::merge::{
    add_forward, concat_backward, concat_forward, multiply_backward, multiply_forward,
    weighted_sum_backward, weighted_sum_forward,
};
use super::ops::norm::{
    batchnorm_infer_backward, batchnorm_infer_forward, batchnorm_train_backward,
    batchnorm_train_forward, moment_shift, update_running, BatchStats,
};
use super::ops::pool::{
    avgpool_backward, avgpool_forward, global_avgpool_backward, global_avgpool_forward,
    maxpool_backward, maxpool_backward_recompute, maxpool_forward, PoolGeom,
};
use super::ops::shape::{upsample_backward, upsample_forward};
use super::ops::{activation, loss};
use rand::distributions::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// One named parameter or running statistic.
pub struct Param {
    pub name: String,
    pub shape: Vec<usize>,
    pub value: Vec<f32>,
    pub(crate) grad: Vec<f32>,
    /// Updated by the optimizer (false for frozen layers and batchnorm running statistics).
    pub trainable: bool,
    pub(crate) regularizer: Regularizer,
    pub(crate) slots: Vec<Vec<f32>>,
}

#[derive(Clone, Copy, Debug)]
pub(crate) enum Kernel {
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
    Add,
    /// Rows of each input's channels (`Layer::in_lens[k] / rows_per_sample`) side by side.
    Concat {
        rows_per_sample: usize,
    },
    Multiply {
        c: usize,
        broadcast: bool,
    },
    WeightedSum {
        weights: usize,
        eps: f32,
    },
}

pub(crate) struct Layer {
    pub(crate) kernel: Kernel,
    /// Applied in place after the kernel (Linear for a softmax fused into the loss).
    pub(crate) act: Activation,
    /// Size of the output's last axis (softmax normalises over it).
    pub(crate) last: usize,
    pub(crate) out_len: usize,
    /// What the layer reads, in order (earlier layers or the images).
    pub(crate) inputs: Vec<Source>,
    /// Elements per sample of each input.
    pub(crate) in_lens: Vec<usize>,
    pub(crate) trainable: bool,
}

impl Layer {
    pub(crate) fn has_params(&self) -> bool {
        matches!(
            self.kernel,
            Kernel::Conv { .. }
                | Kernel::Dense { .. }
                | Kernel::BatchNorm { .. }
                | Kernel::WeightedSum { .. }
        )
    }
    /// Whether the layer has parameters that train (its backward computes their gradients).
    pub(crate) fn trains_params(&self) -> bool {
        self.trainable && self.has_params()
    }
    /// Batchnorm of a frozen layer runs in inference mode even while training (Keras 2.1+).
    pub(crate) fn bn_training(&self, train: bool) -> bool {
        train && self.trainable
    }
}

pub(crate) enum Scratch {
    None,
    Conv(ConvScratch<f32>),
    Norm {
        mean: Vec<f32>,
        inv_std: Vec<f32>,
        var: Vec<f32>,
    },
    Mask(Vec<f32>),
    /// Per max-pool output, the position of its maximum inside the window (`ops::pool`).
    Argmax(Vec<u8>),
}

impl Scratch {
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Scratch::None => 0,
            Scratch::Conv(c) => c.bytes(),
            Scratch::Norm { mean, inv_std, var } => (mean.len() + inv_std.len() + var.len()) * 4,
            Scratch::Mask(m) => m.len() * 4,
            Scratch::Argmax(a) => a.len(),
        }
    }
}

/// One output of the model: the layer, its class count, and whether its softmax runs
/// inside the cross-entropy instead of the layer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Head {
    pub(crate) layer: usize,
    pub(crate) classes: usize,
    pub(crate) fused_softmax: bool,
}

/// The compiled layers and their parameters; see the module comment.
pub(crate) struct Model {
    pub(crate) layers: Vec<Layer>,
    pub(crate) params: Vec<Param>,
    /// Optimizer steps taken (dropout masks are drawn from it).
    pub(crate) step: u64,
    pub(crate) seed: u64,
    /// The model's outputs in order; the first is the one `predict` and accuracy use.
    pub(crate) heads: Vec<Head>,
    /// Operators time their kernels (`Network::profile`).
    pub(crate) profiling: bool,
    /// Whether graphs fuse a convolution with the batchnorm after it (`fusion`); off only to
    /// compare with the layers run apart (tests, `gpl bench engine`).
    pub(crate) fusion: bool,
    /// Per layer: for one sharing another's weights, its own kernel and bias gradients.
    pub(crate) shared_grads: Vec<Option<[Vec<f32>; 2]>>,
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

impl Model {
    /// Compiles `ir`, initialising parameters Keras-style from `seed` (glorot-uniform kernels,
    /// zero biases, unit gammas). Every layer's shapes are re-inferred and compared with the
    /// IR, so a hand-edited or stale IR fails here, naming the layer, before anything runs.
    pub(crate) fn build(ir: &ModelIr, seed: u64) -> Result<Model, EngineError> {
        let (specs, outputs) = ir.specs();
        let rebuilt = ModelIr::build_graph(&ir.name, ir.input.clone(), specs, outputs).map_err(
            |e| match e.layer() {
                Some(layer) => shape_error(ir, layer, e.to_string()),
                None => EngineError::Shape {
                    layer: ir.name.clone(),
                    message: e.to_string(),
                },
            },
        )?;
        for (i, (have, want)) in ir.layers.iter().zip(&rebuilt.layers).enumerate() {
            if have.inputs != want.inputs {
                return Err(shape_error(
                    ir,
                    i,
                    "the IR's layers are not in reading order".to_string(),
                ));
            }
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
        let mut heads = Vec::with_capacity(ir.outputs.len());
        for &o in &ir.outputs {
            let layer = &ir.layers[o];
            let act = match &layer.op {
                LayerOp::Conv2d { activation, .. }
                | LayerOp::Dense { activation, .. }
                | LayerOp::Activation(activation) => *activation,
                _ => Activation::Linear,
            };
            let fused_softmax = act == Activation::Softmax;
            let reader = ir
                .layers
                .iter()
                .find(|l| l.inputs.contains(&Source::Layer(o)));
            if let (true, Some(reader)) = (fused_softmax, reader) {
                return Err(shape_error(
                    ir,
                    o,
                    format!(
                        "an output ending in softmax runs its softmax inside the loss, so `{}` cannot read it: give `{}` a linear activation and add `activation softmax` as the output",
                        reader.name, layer.name
                    ),
                ));
            }
            heads.push(Head {
                layer: o,
                classes: layer.output.iter().product(),
                fused_softmax,
            });
        }

        let mut params = Vec::new();
        let mut layers: Vec<Layer> = Vec::new();
        let mut shared_grads = Vec::with_capacity(ir.layers.len());
        for (index, layer) in ir.layers.iter().enumerate() {
            // The owner's weights, which a sharing layer uses instead of its own.
            let owned = layer.shares.map(|o| match layers.get(o).map(|l| l.kernel) {
                Some(Kernel::Conv { kernel, bias, .. } | Kernel::Dense { kernel, bias, .. }) => {
                    Ok([kernel, bias])
                }
                _ => Err(shape_error(
                    ir,
                    index,
                    "shares the weights of a layer without any",
                )),
            });
            let owned = owned.transpose()?;
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
            // Shared weights train when their owner does.
            let trainable = layer
                .shares
                .map_or(layer.trainable, |o| ir.layers[o].trainable);
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
                    act = *activation;
                    let [k, b] = match owned {
                        Some(ids) => ids,
                        None => {
                            let cg = input[2] / groups;
                            let shape = vec![kernel[0], kernel[1], cg, *filters];
                            let value = glorot(
                                kernel[0] * kernel[1] * cg,
                                kernel[0] * kernel[1] * filters,
                                geom.kernel_len(),
                            );
                            let k = add("kernel", shape, value, trainable, *regularizer);
                            let b = add(
                                "bias",
                                vec![*filters],
                                vec![0.0; *filters],
                                trainable,
                                Regularizer::default(),
                            );
                            [k, b]
                        }
                    };
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
                    let [k, b] = match owned {
                        Some(ids) => ids,
                        None => {
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
                            [k, b]
                        }
                    };
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
                LayerOp::Add => Kernel::Add,
                LayerOp::Concat => Kernel::Concat {
                    rows_per_sample: out_len / last,
                },
                LayerOp::Multiply => Kernel::Multiply {
                    c: last,
                    broadcast: ir.source_shape(layer.inputs[1]) != &layer.input,
                },
                LayerOp::WeightedSum { epsilon } => {
                    let k = layer.inputs.len();
                    // BiFPN initialises the fusion weights to one: a plain average.
                    let weights = add(
                        "kernel",
                        vec![k],
                        vec![1.0; k],
                        trainable,
                        Regularizer::default(),
                    );
                    Kernel::WeightedSum {
                        weights,
                        eps: *epsilon,
                    }
                }
            };
            if act.needs_input() && !matches!(kernel, Kernel::Copy) {
                return Err(shape_error(
                    ir,
                    index,
                    format!("{} runs only as a layer of its own", act.keyword()),
                ));
            }
            if let Activation::LeakyRelu { alpha } | Activation::Elu { alpha } = act {
                if alpha <= 0.0 {
                    return Err(shape_error(
                        ir,
                        index,
                        format!("activation alpha {alpha} must be positive"),
                    ));
                }
            }
            if heads.iter().any(|h| h.layer == index && h.fused_softmax) {
                act = Activation::Linear;
            }
            shared_grads.push(owned.map(|ids| ids.map(|id| vec![0.0; params[id].grad.len()])));
            layers.push(Layer {
                kernel,
                act,
                last,
                out_len,
                inputs: layer.inputs.clone(),
                in_lens: ir
                    .input_shapes(index)
                    .iter()
                    .map(|s| s.iter().product())
                    .collect(),
                trainable,
            });
        }
        Ok(Model {
            layers,
            params,
            step: 0,
            seed,
            heads,
            profiling: false,
            fusion: true,
            shared_grads,
        })
    }

    /// Adds each sharing layer's weight gradients of the last backward pass to the shared
    /// parameters' (which hold the owner's), in layer order.
    pub(crate) fn sum_shared_gradients(&mut self) {
        for (layer, own) in self.layers.iter().zip(&self.shared_grads) {
            let (Some(own), true) = (own, layer.trainable) else {
                continue;
            };
            let (Kernel::Conv { kernel, bias, .. } | Kernel::Dense { kernel, bias, .. }) =
                layer.kernel
            else {
                unreachable!("only conv and dense layers share weights");
            };
            for (id, g) in [kernel, bias].into_iter().zip(own) {
                for (sum, x) in self.params[id].grad.iter_mut().zip(g) {
                    *sum += x;
                }
            }
        }
    }

    /// The first output, which `predict`, accuracy and explanations use.
    pub(crate) fn head(&self) -> Head {
        self.heads[0]
    }

    /// One layer's kernel and activation, inputs `xs` (in the layer's input order) → `y`.
    pub(crate) fn forward_layer(
        &self,
        i: usize,
        scratch: &mut Scratch,
        xs: &[&[f32]],
        y: &mut [f32],
        n: usize,
        train: bool,
    ) {
        let layer = &self.layers[i];
        let p = &self.params;
        let x = xs[0];
        match (layer.kernel, scratch) {
            (Kernel::Conv { geom, kernel, bias }, Scratch::Conv(s))
                if layer.act != Activation::Softmax =>
            {
                // The activation as the convolution's epilogue, while each part is in cache.
                let act = layer.act;
                let epilogue = |_: usize, part: &mut [f32]| activation::activate_part(act, part);
                conv2d_forward(
                    &geom,
                    n,
                    x,
                    &p[kernel].value,
                    &p[bias].value,
                    y,
                    s,
                    Some(&epilogue),
                );
                return;
            }
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
                        n,
                        &moment_shift(&p[mean].value),
                        x,
                        &p[gamma].value,
                        &p[beta].value,
                        y,
                        BatchStats {
                            mean: bm,
                            inv_std,
                            var: bv,
                        },
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
            (Kernel::Add, _) => add_forward(xs, y),
            (Kernel::Concat { rows_per_sample }, _) => {
                let channels: Vec<usize> =
                    layer.in_lens.iter().map(|l| l / rows_per_sample).collect();
                concat_forward(&channels, xs, y)
            }
            (Kernel::Multiply { c, broadcast }, _) => multiply_forward(c, broadcast, x, xs[1], y),
            (Kernel::WeightedSum { weights, eps }, _) => {
                weighted_sum_forward(&p[weights].value, eps, xs, y)
            }
            (Kernel::Dropout { .. } | Kernel::Copy, _) => y.copy_from_slice(x),
            (kernel, _) => unreachable!("workspace scratch does not match kernel {kernel:?}"),
        }
        activation::activate(layer.act, y, layer.last);
    }

    /// Layer `i`'s backward kernel: `dy` (d loss / d output, overwritten with the gradient
    /// before the activation) → each input's gradient in `dxs` where asked (`None`: not
    /// wanted), and, with `param_grads` on a trainable layer, the parameter gradients
    /// (written, not accumulated).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_layer(
        &mut self,
        i: usize,
        scratch: &mut Scratch,
        xs: &[&[f32]],
        y: &[f32],
        dy: &mut [f32],
        dxs: &mut [Option<&mut [f32]>],
        n: usize,
        train: bool,
        param_grads: bool,
    ) {
        let layer = &self.layers[i];
        let x = xs[0];
        // A convolution's activation backward runs in its prologue, block by block with the
        // bias gradient's sum (softmax needs whole rows of its own axis).
        let in_prologue =
            matches!(layer.kernel, Kernel::Conv { .. }) && layer.act != Activation::Softmax;
        if layer.act.needs_input() {
            // Only a layer of its own (a copy) has such an activation: its input is `x`.
            activation::activate_backward_from_input(layer.act, x, dy);
        } else if !in_prologue {
            activation::activate_backward(layer.act, y, dy, layer.last);
        }
        let with_params = param_grads && layer.trainable;
        let p = &mut self.params;
        let own = &mut self.shared_grads[i];
        match (layer.kernel, &mut *dxs) {
            (Kernel::Add, dxs) => {
                for dx in dxs.iter_mut().flatten() {
                    dx.copy_from_slice(dy);
                }
                return;
            }
            (Kernel::Concat { rows_per_sample }, dxs) => {
                let channels: Vec<usize> =
                    layer.in_lens.iter().map(|l| l / rows_per_sample).collect();
                concat_backward(&channels, dy, dxs);
                return;
            }
            (Kernel::Multiply { c, broadcast }, [da, db]) => {
                multiply_backward(
                    c,
                    broadcast,
                    x,
                    xs[1],
                    dy,
                    da.as_deref_mut(),
                    db.as_deref_mut(),
                );
                return;
            }
            (Kernel::WeightedSum { weights, eps }, dxs) => {
                let mut gw = std::mem::take(&mut p[weights].grad);
                weighted_sum_backward(
                    &p[weights].value,
                    eps,
                    xs,
                    y,
                    dy,
                    dxs,
                    with_params.then_some(&mut gw[..]),
                );
                p[weights].grad = gw;
                return;
            }
            _ => {}
        }
        let dx = dxs.first_mut().and_then(|d| d.as_deref_mut());
        match (layer.kernel, scratch) {
            (Kernel::Conv { geom, kernel, bias }, Scratch::Conv(s)) => {
                let (act, f) = (layer.act, geom.filters);
                let prologue = |row: usize, d: &mut [f32]| {
                    activation::activate_backward_part(act, &y[row * f..][..d.len()], d)
                };
                let prologue = (in_prologue && act != Activation::Linear).then_some(&prologue as _);
                conv_backward(
                    p,
                    own,
                    [kernel, bias],
                    with_params,
                    &geom,
                    n,
                    x,
                    Some(dy),
                    prologue,
                    dx,
                    s,
                );
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
                let [mut gk, mut gb] = take_grads(p, own, [kernel, bias]);
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
                put_grads(p, own, [kernel, bias], [gk, gb]);
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
            (
                kernel @ (Kernel::Add
                | Kernel::Concat { .. }
                | Kernel::Multiply { .. }
                | Kernel::WeightedSum { .. }),
                _,
            ) => unreachable!("joins returned above: {kernel:?}"),
            (kernel, _) => unreachable!("workspace scratch does not match kernel {kernel:?}"),
        }
    }

    /// Scratch for layer `i` at batch `n` (im2col panels, batch statistics, masks, argmax).
    pub(crate) fn scratch(&self, i: usize, n: usize, train: bool) -> Scratch {
        let l = &self.layers[i];
        match l.kernel {
            Kernel::Conv { geom, .. } => Scratch::Conv(ConvScratch::new(&geom, n, train)),
            Kernel::MaxPool(g) if train => Scratch::Argmax(vec![0; n * g.out_len()]),
            Kernel::BatchNorm { c, .. } => Scratch::Norm {
                mean: vec![0.0; c],
                inv_std: vec![0.0; c],
                var: vec![0.0; c],
            },
            Kernel::Dropout { .. } if train => Scratch::Mask(vec![0.0; n * l.out_len]),
            _ => Scratch::None,
        }
    }

    /// Sum of every layer's L1/L2 kernel penalty.
    pub(crate) fn penalty(&self) -> f64 {
        self.params
            .iter()
            .filter(|p| p.regularizer != Regularizer::default())
            .map(|p| loss::penalty(p.regularizer.l1, p.regularizer.l2, &p.value))
            .sum()
    }

    /// Adds the penalties' gradients to the trainable kernels' gradients.
    pub(crate) fn penalty_backward(&mut self) {
        for p in self
            .params
            .iter_mut()
            .filter(|p| p.trainable && p.regularizer != Regularizer::default())
        {
            loss::penalty_backward(p.regularizer.l1, p.regularizer.l2, &p.value, &mut p.grad);
        }
    }

    /// Moves layer `i`'s running statistics towards the batch statistics in `scratch` (a
    /// batchnorm that trained this step; anything else is left alone).
    pub(crate) fn update_running_stats(&mut self, i: usize, scratch: &Scratch) {
        let layer = &self.layers[i];
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
}

/// The buffers a layer's backward writes its weight gradients `ids` into: the parameters'
/// own, or a sharing layer's `own` (added in by `Model::sum_shared_gradients`).
pub(crate) fn take_grads(
    params: &mut [Param],
    own: &mut Option<[Vec<f32>; 2]>,
    ids: [usize; 2],
) -> [Vec<f32>; 2] {
    match own {
        Some(own) => own.each_mut().map(std::mem::take),
        None => ids.map(|id| std::mem::take(&mut params[id].grad)),
    }
}

/// A convolution's backward, from its stored output gradient `dy` through the `prologue`, or,
/// without `dy`, from the prologue alone, which makes it sample by sample in cache
/// (`conv2d_backward_made`); the kernel and bias gradients (parameters `[kernel, bias]`, taken
/// and given back as `take_grads` does) written when `with_params`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_backward(
    params: &mut [Param],
    own: &mut Option<[Vec<f32>; 2]>,
    [kernel, bias]: [usize; 2],
    with_params: bool,
    geom: &ConvGeom,
    n: usize,
    x: &[f32],
    dy: Option<&mut [f32]>,
    prologue: Option<Prologue<f32>>,
    dx: Option<&mut [f32]>,
    scratch: &mut ConvScratch<f32>,
) {
    let [mut gk, mut gb] = take_grads(params, own, [kernel, bias]);
    let grads = with_params.then_some((&mut gk[..], &mut gb[..]));
    let kernel_value = &params[kernel].value;
    match dy {
        Some(dy) => conv2d_backward(geom, n, x, kernel_value, dy, prologue, dx, grads, scratch),
        None => {
            let made = prologue.expect("a prologue that makes the output gradient");
            conv2d_backward_made(geom, n, x, kernel_value, made, dx, grads, scratch)
        }
    }
    put_grads(params, own, [kernel, bias], [gk, gb]);
}

/// Gives back what `take_grads` took.
pub(crate) fn put_grads(
    params: &mut [Param],
    own: &mut Option<[Vec<f32>; 2]>,
    ids: [usize; 2],
    grads: [Vec<f32>; 2],
) {
    match own {
        Some(own) => *own = grads,
        None => {
            for (id, g) in ids.into_iter().zip(grads) {
                params[id].grad = g;
            }
        }
    }
}
