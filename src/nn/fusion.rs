//! A convolution and the batchnorm after it, run as one graph operator (the fusion pass,
//! `graph::FuseConvBatchnorm`), in inference and in training; in inference a max-pool after
//! the convolution (or its batchnorm) joins too, batchnorm or not. Each fused path calls the same
//! kernels and loops as the two layers run apart, in the same order, so its results are
//! bit-identical to theirs (`tests/it/engine_network.rs` checks both modes); what it saves
//! is passes over memory:
//!
//! ```text
//! inference  conv → act → affine → act             in the convolution's epilogue
//!            → max-pool                              of each sample while it is in cache
//! training   conv → act → batch moments             in the epilogue; then normalise
//!            dγ, dβ (one pass); then dx of the batchnorm → act backward → bias sum
//!                                                   in the convolution's backward prologue
//! ```
//!
//! With a max-pool fused after the batchnorm, the pool reads the convolution's output through
//! the batchnorm's affine map, and where its windows do not overlap its backward is a gather
//! (`Routing`) made block by block in cache, by the gradient sums and again in the prologue,
//! instead of a routed tensor written by one pass and read by two.

use super::ir::{Activation, Source};
use super::model::{conv_backward, Kernel, Model, Scratch};
use super::ops::activation;
use super::ops::conv::{
    backward_in_cache, conv2d_forward, conv2d_forward_pooled, conv_pools_in_cache, ConvMethod,
    Prologue,
};
use super::ops::norm::{
    affine, affine_part, batch_moments, batch_statistics, batchnorm_param_gradients,
    batchnorm_param_gradients_routed, batchnorm_train_normalise, infer_affine, moment_shift,
    sample_moments, BatchStats, InputGradient,
};
use super::ops::pool::{
    maxpool_backward, maxpool_forward_affine, maxpool_sample, routed_rows, windows_disjoint,
    PoolGeom,
};
use std::sync::Mutex;

/// A fused max-pool's input gradient as a gather (`pool::routed_rows`): its output gradient
/// and the argmax its forward kept.
pub(crate) struct Routing<'a> {
    pub(crate) pool: PoolGeom,
    pub(crate) argmax: &'a [u8],
    pub(crate) dy: &'a [f32],
}

impl Routing<'_> {
    /// Rows `first ..` of the routed gradient into `out`.
    fn rows(&self, first: usize, out: &mut [f32]) {
        routed_rows(&self.pool, self.dy, self.argmax, first, out)
    }

    /// The geometry, output gradient and argmax, as the batchnorm's routed loops take them.
    fn parts(&self) -> (&PoolGeom, &[f32], &[u8]) {
        (&self.pool, self.dy, self.argmax)
    }
}

/// The layers after an inference convolution that run in its pass (`forward_conv_chain`),
/// in order and consecutive: a batchnorm, then an activation layer (only after a
/// batchnorm), then a max-pool.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct InferChain {
    pub(crate) norm: bool,
    pub(crate) act: bool,
    pub(crate) pool: bool,
}

impl InferChain {
    /// The layers in the chain, the convolution included.
    pub(crate) fn len(self) -> usize {
        1 + usize::from(self.norm) + usize::from(self.act) + usize::from(self.pool)
    }
}

impl Model {
    /// The max-pool `k`'s backward as a `Routing`, where its windows do not overlap.
    pub(crate) fn routing<'a>(
        &self,
        k: usize,
        scratch: &'a Scratch,
        dy: &'a [f32],
    ) -> Option<Routing<'a>> {
        match (self.layers[k].kernel, scratch) {
            (Kernel::MaxPool(pool), Scratch::Argmax(argmax)) if windows_disjoint(&pool) => {
                Some(Routing { pool, argmax, dy })
            }
            _ => None,
        }
    }

    /// Whether the backward of the convolution `i`, fused with a batchnorm and the max-pool
    /// `i + 2`, can make its output gradient from the pool's in cache, sample by sample, so
    /// the routed tensor is never stored: the pool's windows do not overlap (`routing`) and
    /// the convolution's backward runs sample by sample (`conv::backward_in_cache`; `dx`:
    /// with the input gradient).
    pub(crate) fn routes_in_cache(&self, i: usize, dx: bool) -> bool {
        matches!(self.layers[i + 2].kernel, Kernel::MaxPool(pool) if windows_disjoint(&pool))
            && self.conv_routes_in_cache(i, dx)
    }

    /// Whether layer `i` (a convolution) and layer `i + 1` (a batchnorm) can run as one
    /// operator in a graph that trains (`train`: the batchnorm uses the batch's statistics,
    /// `forward_conv_moments` …) or infers (`forward_conv_chain`).
    pub(crate) fn fusible_conv_bn(&self, i: usize, train: bool) -> bool {
        let (Some(conv), Some(norm)) = (self.layers.get(i), self.layers.get(i + 1)) else {
            return false;
        };
        // Inference never writes the convolution's own output, and training passes it to the
        // batchnorm's backward only: nothing else may read it.
        self.only_reader(i, i + 1)
            && matches!(
                (conv.kernel, norm.kernel),
                (Kernel::Conv { .. }, Kernel::BatchNorm { .. })
            )
            && norm.bn_training(train) == train
            && self.fusion
            && conv.act != Activation::Softmax
            && norm.act != Activation::Softmax
    }

    /// Whether layer `k` reads layer `j`'s output and nothing else, and nothing else reads it
    /// (no other layer, and it is not a model output).
    fn only_reader(&self, j: usize, k: usize) -> bool {
        !self.heads.iter().any(|h| h.layer == j)
            && self
                .layers
                .get(k)
                .is_some_and(|l| l.inputs == [Source::Layer(j)])
            && !self
                .layers
                .iter()
                .enumerate()
                .any(|(m, l)| m != k && l.inputs.contains(&Source::Layer(j)))
    }

    /// Whether the activation layer `j + 1` can run inside the batchnorm `j` before it, as the
    /// batchnorm's own activation would (the SSD-lite's batchnorm → ReLU6 blocks): the
    /// batchnorm's only reader, element-wise and derived from its output, and the batchnorm
    /// has no activation of its own.
    pub(crate) fn fusible_bn_act(&self, j: usize) -> bool {
        let (Some(norm), Some(act)) = (self.layers.get(j), self.layers.get(j + 1)) else {
            return false;
        };
        self.only_reader(j, j + 1)
            && matches!(norm.kernel, Kernel::BatchNorm { .. })
            && matches!(act.kernel, Kernel::Copy)
            && norm.act == Activation::Linear
            && !matches!(act.act, Activation::Linear | Activation::Softmax)
            && !act.act.needs_input()
            && self.fusion
    }

    /// The activation applied after batchnorm `j`'s normalisation: the activation layer's
    /// after it when that is fused (`with_act`), else its own.
    fn post_activation(&self, j: usize, with_act: bool) -> Activation {
        if with_act {
            self.layers[j + 1].act
        } else {
            self.layers[j].act
        }
    }

    /// Whether the max-pool `j + 1` can pool the inference convolution `conv`'s output in
    /// cache, sample by sample (`conv2d_forward_pooled`), `j` being the convolution or the
    /// last layer fused with it: the pool is `j`'s only reader, has no activation of its own,
    /// and the convolution runs by the direct method, whose parts are whole samples.
    pub(crate) fn fusible_conv_pool(&self, conv: usize, j: usize) -> bool {
        let (Some(last), Some(pool)) = (self.layers.get(j), self.layers.get(j + 1)) else {
            return false;
        };
        let Kernel::Conv { geom, .. } = self.layers[conv].kernel else {
            return false;
        };
        self.only_reader(j, j + 1)
            && matches!(pool.kernel, Kernel::MaxPool(_))
            && pool.act == Activation::Linear
            && last.act != Activation::Softmax
            && conv_pools_in_cache(&geom)
            && self.fusion
    }

    /// Inference: the convolution `i` and the layers fused after it (`chain`) in one pass,
    /// output to `y` (the last one's output). The activations and a batchnorm's affine map
    /// are applied while each sample is in cache, and a fused max-pool pools it there, so
    /// only the last layer's output is written. Same arithmetic as the layers run apart, so
    /// the outputs are bit-identical. Callers check `fusible_conv_bn(i, false)` for a
    /// batchnorm and `fusible_conv_pool` for a pool first.
    pub(crate) fn forward_conv_chain(
        &self,
        i: usize,
        chain: InferChain,
        scratch: &mut Scratch,
        x: &[f32],
        y: &mut [f32],
        n: usize,
    ) {
        let (Kernel::Conv { geom, kernel, bias }, Scratch::Conv(s)) =
            (self.layers[i].kernel, scratch)
        else {
            unreachable!("the chain starts at a convolution");
        };
        let p = &self.params;
        let conv_act = self.layers[i].act;
        // The batchnorm's affine map and the activation after it.
        let norm = chain.norm.then(|| {
            assert!(
                self.fusible_conv_bn(i, false),
                "layers {i} and {} do not fuse",
                i + 1
            );
            let Kernel::BatchNorm {
                eps,
                gamma,
                beta,
                mean,
                var,
                ..
            } = self.layers[i + 1].kernel
            else {
                unreachable!("checked by fusible_conv_bn");
            };
            let affine = infer_affine(
                eps,
                &p[gamma].value,
                &p[beta].value,
                &p[mean].value,
                &p[var].value,
            );
            (affine, self.post_activation(i + 1, chain.act))
        });
        let epilogue = |_: usize, part: &mut [f32]| {
            activation::activate_part(conv_act, part);
            if let Some(((scale, shift), norm_act)) = &norm {
                affine_part(scale, shift, part);
                activation::activate_part(*norm_act, part);
            }
        };
        let (kernel, bias) = (&p[kernel].value, &p[bias].value);
        if chain.pool {
            let last = i + chain.len() - 2;
            assert!(
                self.fusible_conv_pool(i, last),
                "layer {} does not fuse",
                last + 1
            );
            let Kernel::MaxPool(pool) = self.layers[last + 1].kernel else {
                unreachable!("checked by fusible_conv_pool");
            };
            let pool_sample = |sample: &[f32], out: &mut [f32]| maxpool_sample(&pool, sample, out);
            conv2d_forward_pooled(
                &geom,
                n,
                x,
                kernel,
                bias,
                y,
                pool.out_len(),
                s,
                Some(&epilogue),
                &pool_sample,
            );
        } else {
            conv2d_forward(&geom, n, x, kernel, bias, y, s, Some(&epilogue));
        }
    }

    /// Training, first half: layer `i` (a convolution) and its activation → `y_conv`, and the
    /// batch moments the batchnorm after it needs (`norm::sample_moments` of each sample, in
    /// the convolution's epilogue where its parts are whole samples). Callers check
    /// `fusible_conv_bn(i, true)` first.
    pub(crate) fn forward_conv_moments(
        &self,
        i: usize,
        scratch: &mut Scratch,
        x: &[f32],
        y_conv: &mut [f32],
        n: usize,
    ) -> Vec<f64> {
        let (conv, norm) = (&self.layers[i], &self.layers[i + 1]);
        let (
            Kernel::Conv { geom, kernel, bias },
            Kernel::BatchNorm { c, mean, .. },
            Scratch::Conv(s),
        ) = (conv.kernel, norm.kernel, scratch)
        else {
            unreachable!("checked by fusible_conv_bn");
        };
        let p = &self.params;
        let shift = moment_shift(&p[mean].value);
        let (sample_len, pixels) = (conv.out_len, conv.out_len / c);
        // The depthwise kernel's parts are image rows, not samples: its moments take a pass.
        let whole_samples = geom.method() != ConvMethod::Depthwise;
        let moments = Mutex::new(vec![0.0f64; n * 2 * c]);
        let act = conv.act;
        let epilogue = |row: usize, part: &mut [f32]| {
            activation::activate_part(act, part);
            if whole_samples {
                let mut own = vec![0.0f64; 2 * c];
                for (k, sample) in part.chunks(sample_len).enumerate() {
                    sample_moments(c, &shift, sample, &mut own);
                    let mut all = moments.lock().unwrap_or_else(|e| e.into_inner());
                    all[(row / pixels + k) * 2 * c..][..2 * c].copy_from_slice(&own);
                }
            }
        };
        conv2d_forward(
            &geom,
            n,
            x,
            &p[kernel].value,
            &p[bias].value,
            y_conv,
            s,
            Some(&epilogue),
        );
        if whole_samples {
            moments.into_inner().unwrap_or_else(|e| e.into_inner())
        } else {
            batch_moments(c, n, &shift, y_conv)
        }
    }

    /// Training, second half: layer `j`'s (the batchnorm's) statistics from the `moments`, its
    /// normalisation of `y_conv` and its activation (the activation layer's after it with
    /// `with_act`) → `y`, in one pass.
    pub(crate) fn forward_bn_from_moments(
        &self,
        j: usize,
        scratch: &mut Scratch,
        moments: &[f64],
        y_conv: &[f32],
        y: &mut [f32],
        with_act: bool,
    ) {
        let norm = &self.layers[j];
        let (
            Kernel::BatchNorm {
                c,
                eps,
                gamma,
                beta,
                mean,
                ..
            },
            Scratch::Norm {
                mean: bm,
                inv_std,
                var,
            },
        ) = (norm.kernel, scratch)
        else {
            unreachable!("checked by fusible_conv_bn");
        };
        let p = &self.params;
        batchnorm_train_normalise(
            c,
            eps,
            &moment_shift(&p[mean].value),
            moments,
            y_conv,
            &p[gamma].value,
            &p[beta].value,
            y,
            BatchStats {
                mean: bm,
                inv_std,
                var,
            },
            self.post_activation(j, with_act),
        );
    }

    /// Whether the max-pool `j + 1` can apply the training batchnorm `j`'s normalisation as
    /// it reads (`forward_bn_pool_from_moments`), so the normalised tensor is never written:
    /// the pool is the batchnorm's only reader, and neither has an activation of its own.
    pub(crate) fn fusible_bn_pool(&self, j: usize) -> bool {
        let (Some(norm), Some(pool)) = (self.layers.get(j), self.layers.get(j + 1)) else {
            return false;
        };
        self.only_reader(j, j + 1)
            && matches!(norm.kernel, Kernel::BatchNorm { .. })
            && matches!(pool.kernel, Kernel::MaxPool(_))
            && norm.act == Activation::Linear
            && pool.act == Activation::Linear
            && self.fusion
    }

    /// Training, second half when a max-pool follows: the batchnorm `j`'s statistics from
    /// the `moments`, then the max-pool `j + 1` of its normalisation of `y_conv` → `y` (the
    /// pool's output) and the pool's argmax. Callers check `fusible_bn_pool(j)` first.
    pub(crate) fn forward_bn_pool_from_moments(
        &self,
        j: usize,
        norm_scratch: &mut Scratch,
        pool_scratch: &mut Scratch,
        moments: &[f64],
        y_conv: &[f32],
        y: &mut [f32],
    ) {
        let (
            Kernel::BatchNorm {
                c,
                eps,
                gamma,
                beta,
                mean,
                ..
            },
            Kernel::MaxPool(g),
            Scratch::Norm {
                mean: bm,
                inv_std,
                var,
            },
            Scratch::Argmax(argmax),
        ) = (
            self.layers[j].kernel,
            self.layers[j + 1].kernel,
            norm_scratch,
            pool_scratch,
        )
        else {
            unreachable!("checked by fusible_bn_pool");
        };
        let p = &self.params;
        let mut stats = BatchStats {
            mean: bm,
            inv_std,
            var,
        };
        let shift = moment_shift(&p[mean].value);
        batch_statistics(c, eps, y_conv.len() / c, &shift, moments, &mut stats);
        let (scale, offset) = affine(&p[gamma].value, &p[beta].value, stats.mean, stats.inv_std);
        maxpool_forward_affine(&g, y_conv, &scale, &offset, y, argmax);
    }

    /// The max-pool `k`'s backward: `dy` (its output's gradient) routed to `dx` through the
    /// argmax its training forward kept.
    pub(crate) fn backward_pool(&self, k: usize, scratch: &Scratch, dy: &[f32], dx: &mut [f32]) {
        let (Kernel::MaxPool(g), Scratch::Argmax(argmax)) = (self.layers[k].kernel, scratch) else {
            unreachable!("checked by fusible_bn_pool");
        };
        maxpool_backward(&g, dy, argmax, dx);
    }

    /// Backward, first half: the backward of the activation after layer `j`'s (the
    /// batchnorm's) normalisation on `dy` (in place; `y` is that activation's output), its
    /// parameter gradients (written when `param_grads`), and what its input
    /// gradient needs.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_bn_sums(
        &mut self,
        j: usize,
        scratch: &Scratch,
        y_conv: &[f32],
        y: &[f32],
        dy: &mut [f32],
        routing: Option<&Routing>,
        param_grads: bool,
        with_act: bool,
    ) -> InputGradient<f32> {
        let norm = &self.layers[j];
        let (
            Kernel::BatchNorm { c, gamma, beta, .. },
            Scratch::Norm {
                mean: bm, inv_std, ..
            },
        ) = (norm.kernel, scratch)
        else {
            unreachable!("checked by fusible_conv_bn");
        };
        if routing.is_none() {
            activation::activate_backward(self.post_activation(j, with_act), y, dy, c);
        }
        let with_params = param_grads && norm.trainable;
        let p = &mut self.params;
        let (mut gg, mut gb) = if with_params {
            (
                std::mem::take(&mut p[gamma].grad),
                std::mem::take(&mut p[beta].grad),
            )
        } else {
            (vec![0.0; c], vec![0.0; c])
        };
        let (gamma_value, mean) = (&p[gamma].value, &bm[..]);
        let grad = match routing {
            // A fused pool's batchnorm has no activation of its own (`fusible_bn_pool`).
            Some(r) => batchnorm_param_gradients_routed(
                c,
                y_conv,
                gamma_value,
                mean,
                inv_std,
                &mut gg,
                &mut gb,
                r.parts(),
            ),
            None => batchnorm_param_gradients(
                c,
                y_conv,
                dy,
                gamma_value,
                mean,
                inv_std,
                &mut gg,
                &mut gb,
            ),
        };
        if with_params {
            (p[gamma].grad, p[beta].grad) = (gg, gb);
        }
        grad
    }

    /// Backward, second half: the convolution `i`'s gradients, its output gradient `dy` going
    /// through the batchnorm's input gradient and the activation's backward in the
    /// convolution's prologue, block by block with the bias sum. Without `dy`, the `routing`
    /// makes it in the prologue, sample by sample in cache (callers check
    /// `routes_in_cache`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_conv_after_bn(
        &mut self,
        i: usize,
        scratch: &mut Scratch,
        x: &[f32],
        y_conv: &[f32],
        norm: &InputGradient<f32>,
        dy: Option<&mut [f32]>,
        routing: Option<&Routing>,
        dx: Option<&mut [f32]>,
        n: usize,
        param_grads: bool,
    ) {
        let conv = &self.layers[i];
        let (Kernel::Conv { geom, kernel, bias }, Scratch::Conv(s)) = (conv.kernel, scratch) else {
            unreachable!("checked by fusible_conv_bn");
        };
        let (act, f) = (conv.act, geom.filters);
        let with_params = param_grads && conv.trainable;
        let prologue = |row: usize, d: &mut [f32]| {
            let y = &y_conv[row * f..][..d.len()];
            match routing {
                Some(r) => norm.apply_routed(r.parts(), act, row, y, d),
                None => {
                    norm.apply(y, d);
                    activation::activate_backward_part(act, y, d);
                }
            }
        };
        // Without dy, routed sample by sample in cache (`routes_in_cache`).
        let (p, own, ids) = (&mut self.params, &mut self.shared_grads[i], [kernel, bias]);
        conv_backward(
            p,
            own,
            ids,
            with_params,
            &geom,
            n,
            x,
            dy,
            Some(&prologue),
            dx,
            s,
        );
    }
}

impl Model {
    /// Whether a training convolution `i` and the max-pool `i + 1` after it (no batchnorm
    /// between) can run as one operator, whose backward makes the convolution's output
    /// gradient from the pool's by its argmax inside the convolution's prologue
    /// (`backward_conv_pool`): the pool is the convolution's only reader, has no activation
    /// of its own, its windows do not overlap, and the convolution's activation runs in
    /// its prologue.
    pub(crate) fn fusible_conv_pool_train(&self, i: usize) -> bool {
        let (Some(conv), Some(pool)) = (self.layers.get(i), self.layers.get(i + 1)) else {
            return false;
        };
        self.only_reader(i, i + 1)
            && matches!(conv.kernel, Kernel::Conv { .. })
            && matches!(pool.kernel, Kernel::MaxPool(g) if windows_disjoint(&g))
            && conv.act != Activation::Softmax
            && !conv.act.needs_input()
            && pool.act == Activation::Linear
            && self.fusion
    }

    /// Whether `backward_conv_pool` makes the output gradient sample by sample in cache
    /// (the direct method, with its own input gradient when `dx` is wanted), so the routed
    /// tensor needs no buffer.
    pub(crate) fn conv_routes_in_cache(&self, i: usize, dx: bool) -> bool {
        matches!(self.layers[i].kernel, Kernel::Conv { geom, .. } if backward_in_cache(&geom, dx))
    }

    /// The backward of the training convolution `i` and the max-pool `i + 1` fused with it:
    /// `dy` (the pool's output gradient) routed through the pool's argmax and the
    /// activation's backward in the convolution's prologue, block by block. With `routed`
    /// (a buffer for the convolution's output gradient) the pool's backward writes it first,
    /// as the layers apart do; without, it is made in cache (`conv_routes_in_cache`).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward_conv_pool(
        &mut self,
        i: usize,
        conv_scratch: &mut Scratch,
        pool_scratch: &Scratch,
        x: &[f32],
        y_conv: &[f32],
        dy: &[f32],
        routed: Option<&mut [f32]>,
        dx: Option<&mut [f32]>,
        n: usize,
        param_grads: bool,
    ) {
        let conv = &self.layers[i];
        let (Kernel::Conv { geom, kernel, bias }, Scratch::Conv(s)) = (conv.kernel, conv_scratch)
        else {
            unreachable!("checked by fusible_conv_pool_train");
        };
        let routing = self
            .routing(i + 1, pool_scratch, dy)
            .expect("checked by fusible_conv_pool_train");
        let (act, f) = (conv.act, geom.filters);
        let with_params = param_grads && conv.trainable;
        let activation = |row: usize, d: &mut [f32]| {
            activation::activate_backward_part(act, &y_conv[row * f..][..d.len()], d)
        };
        let made = |row: usize, d: &mut [f32]| {
            routing.rows(row, d);
            activation(row, d);
        };
        let (dy, prologue): (_, Option<Prologue<f32>>) = match routed {
            Some(routed) => {
                let Scratch::Argmax(argmax) = pool_scratch else {
                    unreachable!("a training max-pool keeps its argmax");
                };
                maxpool_backward(&routing.pool, dy, argmax, routed);
                (
                    Some(routed),
                    (act != Activation::Linear).then_some(&activation),
                )
            }
            None => (None, Some(&made)),
        };
        let (p, own, ids) = (&mut self.params, &mut self.shared_grads[i], [kernel, bias]);
        conv_backward(p, own, ids, with_params, &geom, n, x, dy, prologue, dx, s);
    }
}
