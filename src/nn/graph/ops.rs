//! The luminal operators of a model graph. Forward operators answer two custom calls the
//! compiler passes make through luminal's `Operator::custom`: `TRAINABLE` (does the node
//! own parameters that want gradients) and `BACKWARD` (a new operator computing the
//! gradients of the inputs the request names). A backward operator's inputs are, in
//! order: the gradient of the forward node's output (absent for a loss), the forward
//! node's inputs, and its output; its outputs are the gradients asked for, in input order.

use super::{Buffer, Context};
use crate::nn::fusion::InferChain;
use crate::nn::ops::loss::{box_smooth_l1, sigmoid_focal_loss, softmax_cross_entropy};
use luminal::op::{InputTensor, Operator};
use luminal::prelude::{ShapeTracker, Tensor};
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::rc::Rc;

pub(crate) type Inputs<'a> = Vec<(InputTensor<'a>, ShapeTracker)>;

/// Custom-call key: answers `Box<dyn Operator>`, the backward operator, for a `BackwardRequest`.
pub(crate) const BACKWARD: &str = "gpl::backward";
/// Custom-call key: answers `bool`, whether the node has trainable parameters.
pub(crate) const TRAINABLE: &str = "gpl::trainable";

/// Which gradients a backward operator must produce.
pub(crate) struct BackwardRequest {
    /// One flag per forward input: produce d loss / d input.
    pub(crate) inputs: Vec<bool>,
    /// Produce the parameter gradients (of trainable layers).
    pub(crate) params: bool,
}

/// The buffer behind input `k`.
pub(super) fn input<'a>(inp: &'a Inputs, k: usize) -> &'a Buffer {
    inp[k]
        .0
        .borrowed()
        .data
        .as_any()
        .downcast_ref::<Buffer>()
        .expect("model graphs carry Buffers")
}

pub(super) fn backward_answer(op: impl Operator + 'static) -> Option<Box<dyn Any>> {
    let op: Box<dyn Operator> = Box::new(op);
    Some(Box::new(op))
}

/// The images: its tensor is set when the graph is compiled and kept, so it never runs.
#[derive(Debug, PartialEq)]
pub(crate) struct Input;

impl Operator for Input {
    fn process(&mut self, _: Inputs) -> Vec<Tensor> {
        unreachable!("the input tensor is set at compile time and kept")
    }
}

/// One IR layer's kernel and its activation.
#[derive(Debug, PartialEq)]
pub(crate) struct LayerForward {
    pub(crate) ctx: Rc<Context>,
    pub(crate) layer: usize,
    pub(crate) train: bool,
    pub(crate) out: Buffer,
}

impl LayerForward {
    fn trainable(&self) -> bool {
        self.ctx.model.borrow().layers[self.layer].trains_params()
    }
}

impl Operator for LayerForward {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let xs: Vec<_> = (0..inp.len()).map(|k| input(&inp, k).borrow()).collect();
        let slices: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let mut y = self.out.borrow_mut();
        let ctx = &self.ctx;
        ctx.timed(self.layer, 0, || {
            ctx.model.borrow().forward_layer(
                self.layer,
                &mut ctx.scratch[self.layer].borrow_mut(),
                &slices,
                &mut y,
                ctx.n,
                self.train,
            )
        });
        vec![self.out.tensor()]
    }

    fn custom(&mut self, key: &str, request: Box<dyn Any>) -> Option<Box<dyn Any>> {
        match key {
            TRAINABLE => Some(Box::new(self.trainable())),
            BACKWARD => {
                let request = request.downcast::<BackwardRequest>().ok()?;
                let in_lens = self.ctx.model.borrow().layers[self.layer].in_lens.clone();
                backward_answer(LayerBackward {
                    ctx: self.ctx.clone(),
                    layer: self.layer,
                    train: self.train,
                    params: request.params && self.trainable(),
                    dxs: request
                        .inputs
                        .iter()
                        .zip(in_lens)
                        .map(|(wanted, len)| wanted.then(|| self.ctx.buffer(self.ctx.n * len)))
                        .collect(),
                })
            }
            _ => None,
        }
    }
}

/// A layer's backward kernel: inputs (dy, x_1 … x_k, y), outputs the gradients of the
/// inputs asked for, in input order.
#[derive(Debug, PartialEq)]
pub(crate) struct LayerBackward {
    ctx: Rc<Context>,
    layer: usize,
    train: bool,
    params: bool,
    /// One per forward input: its gradient buffer when asked.
    dxs: Vec<Option<Buffer>>,
}

impl Operator for LayerBackward {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        // dy belongs to the one backward node that produced it, which has run: this node
        // may overwrite it (the activation's backward runs in place).
        let k = inp.len() - 2;
        let mut dy = input(&inp, 0).borrow_mut();
        let xs: Vec<_> = (1..=k).map(|j| input(&inp, j).borrow()).collect();
        let slices: Vec<&[f32]> = xs.iter().map(|x| x.as_slice()).collect();
        let y = input(&inp, k + 1).borrow();
        let mut dx_refs: Vec<_> = self
            .dxs
            .iter()
            .map(|d| d.as_ref().map(Buffer::borrow_mut))
            .collect();
        let mut dxs: Vec<Option<&mut [f32]>> = dx_refs
            .iter_mut()
            .map(|d| d.as_deref_mut().map(Vec::as_mut_slice))
            .collect();
        let ctx = &self.ctx;
        ctx.timed(self.layer, 1, || {
            ctx.model.borrow_mut().backward_layer(
                self.layer,
                &mut ctx.scratch[self.layer].borrow_mut(),
                &slices,
                &y,
                &mut dy,
                &mut dxs,
                ctx.n,
                self.train,
                self.params,
            )
        });
        self.dxs.iter().flatten().map(Buffer::tensor).collect()
    }
}

/// An inference convolution and the layers after it that run in its pass (made by the
/// fusion pass: a batchnorm, an activation layer, a max-pool), writing the last one's buffer.
#[derive(Debug, PartialEq)]
pub(crate) struct ConvChainForward {
    pub(crate) ctx: Rc<Context>,
    pub(crate) conv: usize,
    pub(crate) chain: InferChain,
    pub(crate) out: Buffer,
}

impl Operator for ConvChainForward {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let (x, mut y) = (input(&inp, 0).borrow(), self.out.borrow_mut());
        let ctx = &self.ctx;
        ctx.timed(self.conv, 0, || {
            ctx.model.borrow().forward_conv_chain(
                self.conv,
                self.chain,
                &mut ctx.scratch[self.conv].borrow_mut(),
                &x,
                &mut y,
                ctx.n,
            )
        });
        vec![self.out.tensor()]
    }
}

/// A training convolution and the batchnorm after it, and the max-pool after that when it
/// fuses too (made by the fusion pass before the autograd pass): the convolution, its
/// activation and the batch moments in one pass over the convolution's output, then the
/// normalisation, or the max-pool reading the convolution's output through the
/// normalisation (the normalised tensor is then never written), or, in place of the pool, an
/// activation layer applied with the normalisation. It keeps the convolution's
/// output for its backward, which reads (dy, x, this node's output).
#[derive(Debug, PartialEq)]
pub(crate) struct ConvBnTrain {
    pub(crate) ctx: Rc<Context>,
    pub(crate) conv: usize,
    /// Whether the max-pool `conv + 2` is fused too (its buffer is then `out`).
    pub(crate) pool: bool,
    /// Whether the activation layer `conv + 2` is fused too (its buffer is then `out`).
    pub(crate) act: bool,
    pub(crate) conv_out: Buffer,
    pub(crate) out: Buffer,
}

impl ConvBnTrain {
    fn trainable(&self) -> bool {
        let model = self.ctx.model.borrow();
        model.layers[self.conv..=self.conv + 1]
            .iter()
            .any(|l| l.trains_params())
    }
}

impl Operator for ConvBnTrain {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let x = input(&inp, 0).borrow();
        let (mut y_conv, mut y) = (self.conv_out.borrow_mut(), self.out.borrow_mut());
        let (ctx, conv, norm, pool) = (&self.ctx, self.conv, self.conv + 1, self.conv + 2);
        let moments = ctx.timed(conv, 0, || {
            ctx.model.borrow().forward_conv_moments(
                conv,
                &mut ctx.scratch[conv].borrow_mut(),
                &x,
                &mut y_conv,
                ctx.n,
            )
        });
        if self.pool {
            ctx.timed(pool, 0, || {
                ctx.model.borrow().forward_bn_pool_from_moments(
                    norm,
                    &mut ctx.scratch[norm].borrow_mut(),
                    &mut ctx.scratch[pool].borrow_mut(),
                    &moments,
                    &y_conv,
                    &mut y,
                )
            });
        } else {
            ctx.timed(norm, 0, || {
                ctx.model.borrow().forward_bn_from_moments(
                    norm,
                    &mut ctx.scratch[norm].borrow_mut(),
                    &moments,
                    &y_conv,
                    &mut y,
                    self.act,
                )
            });
        }
        vec![self.out.tensor()]
    }

    fn custom(&mut self, key: &str, request: Box<dyn Any>) -> Option<Box<dyn Any>> {
        match key {
            TRAINABLE => Some(Box::new(self.trainable())),
            BACKWARD => {
                let request = request.downcast::<BackwardRequest>().ok()?;
                let wants_dx = request.inputs[0];
                let (in_len, norm_len, in_cache) = {
                    let model = self.ctx.model.borrow();
                    let layers = &model.layers;
                    let in_cache = self.pool && model.routes_in_cache(self.conv, wants_dx);
                    (
                        layers[self.conv].in_lens[0],
                        layers[self.conv + 1].out_len,
                        in_cache,
                    )
                };
                let n = self.ctx.n;
                backward_answer(ConvBnTrainBackward {
                    ctx: self.ctx.clone(),
                    conv: self.conv,
                    conv_out: self.conv_out.clone(),
                    act: self.act,
                    pool: self.pool,
                    routed: (self.pool && !in_cache).then(|| self.ctx.buffer(n * norm_len)),
                    params: request.params && self.trainable(),
                    dx: wants_dx.then(|| self.ctx.buffer(n * in_len)),
                })
            }
            _ => None,
        }
    }
}

/// `ConvBnTrain`'s backward: inputs (dy, x, the forward node's output); output the input's
/// gradient when asked. Without a pool, dy is overwritten: it becomes the convolution's
/// output gradient; with one, the pool routes dy into `routed`, which becomes it.
#[derive(Debug, PartialEq)]
pub(crate) struct ConvBnTrainBackward {
    ctx: Rc<Context>,
    conv: usize,
    conv_out: Buffer,
    /// Whether an activation layer after the batchnorm is fused.
    act: bool,
    /// Whether the max-pool after the batchnorm is fused.
    pool: bool,
    /// The gradient of the batchnorm's output, when the pool is fused and it is stored
    /// (not made sample by sample in cache: `Model::routes_in_cache`).
    routed: Option<Buffer>,
    params: bool,
    dx: Option<Buffer>,
}

impl Operator for ConvBnTrainBackward {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let mut dy_in = input(&inp, 0).borrow_mut();
        let (x, y) = (input(&inp, 1).borrow(), input(&inp, 2).borrow());
        let y_conv = self.conv_out.borrow();
        let mut dx = self.dx.as_ref().map(Buffer::borrow_mut);
        let (ctx, conv, norm, pool) = (&self.ctx, self.conv, self.conv + 1, self.conv + 2);
        let mut routed = self.routed.as_ref().map(Buffer::borrow_mut);
        let pool_scratch = self.pool.then(|| ctx.scratch[pool].borrow());
        // The batchnorm's output gradient (none where it is made in the convolution's
        // backward, sample by sample in cache), and its output where its activation needs it
        // (a fused pool has none: `fusible_bn_pool`). A fused pool whose windows do not
        // overlap routes its gradient block by block inside the batchnorm's sums and the
        // convolution's prologue (`Routing`): the routed tensor is then written only there.
        let (mut dy, y_norm, routing): (Option<&mut [f32]>, &[f32], _) =
            match pool_scratch.as_deref() {
                Some(scratch) => {
                    let dy_pool: &[f32] = &dy_in;
                    let routing = ctx.model.borrow().routing(pool, scratch, dy_pool);
                    match (routed.as_deref_mut(), &routing) {
                        (Some(routed), None) => ctx.timed(pool, 1, || {
                            ctx.model
                                .borrow()
                                .backward_pool(pool, scratch, dy_pool, routed)
                        }),
                        (None, None) => unreachable!("routes_in_cache checks the windows"),
                        _ => {}
                    }
                    (routed.as_deref_mut().map(|r| &mut r[..]), &[], routing)
                }
                None => (Some(&mut dy_in[..]), &y[..], None),
            };
        let grad = ctx.timed(norm, 1, || {
            ctx.model.borrow_mut().backward_bn_sums(
                norm,
                &ctx.scratch[norm].borrow(),
                &y_conv,
                y_norm,
                dy.as_deref_mut().unwrap_or_default(),
                routing.as_ref(),
                self.params,
                self.act,
            )
        });
        ctx.timed(conv, 1, || {
            ctx.model.borrow_mut().backward_conv_after_bn(
                conv,
                &mut ctx.scratch[conv].borrow_mut(),
                &x,
                &y_conv,
                &grad,
                dy,
                routing.as_ref(),
                dx.as_deref_mut().map(Vec::as_mut_slice),
                ctx.n,
                self.params,
            )
        });
        self.dx.iter().map(Buffer::tensor).collect()
    }
}

/// A training convolution and the max-pool after it, with no batchnorm between (made by the
/// fusion pass before the autograd pass). Its forward runs the two layers as they run apart
/// and keeps the convolution's output for the backward; its backward makes the
/// convolution's output gradient from the pool's in the convolution's prologue
/// (`Model::backward_conv_pool`), so the routed tensor is not stored where the convolution
/// runs sample by sample.
#[derive(Debug, PartialEq)]
pub(crate) struct ConvPoolTrain {
    pub(crate) ctx: Rc<Context>,
    pub(crate) conv: usize,
    pub(crate) conv_out: Buffer,
    pub(crate) out: Buffer,
}

impl Operator for ConvPoolTrain {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let x = input(&inp, 0).borrow();
        let (mut y_conv, mut y) = (self.conv_out.borrow_mut(), self.out.borrow_mut());
        let (ctx, n) = (&self.ctx, self.ctx.n);
        let run = |layer: usize, x: &[f32], y: &mut [f32]| {
            ctx.timed(layer, 0, || {
                let scratch = &mut ctx.scratch[layer].borrow_mut();
                ctx.model
                    .borrow()
                    .forward_layer(layer, scratch, &[x], y, n, true)
            })
        };
        run(self.conv, &x, &mut y_conv);
        run(self.conv + 1, &y_conv, &mut y);
        vec![self.out.tensor()]
    }

    fn custom(&mut self, key: &str, request: Box<dyn Any>) -> Option<Box<dyn Any>> {
        let model = self.ctx.model.borrow();
        match key {
            TRAINABLE => Some(Box::new(model.layers[self.conv].trains_params())),
            BACKWARD => {
                let request = request.downcast::<BackwardRequest>().ok()?;
                let layer = &model.layers[self.conv];
                let wants_dx = request.inputs[0];
                let n = self.ctx.n;
                let stored = !model.conv_routes_in_cache(self.conv, wants_dx);
                backward_answer(ConvPoolTrainBackward {
                    ctx: self.ctx.clone(),
                    conv: self.conv,
                    conv_out: self.conv_out.clone(),
                    routed: stored.then(|| self.ctx.buffer(n * layer.out_len)),
                    params: request.params && layer.trains_params(),
                    dx: wants_dx.then(|| self.ctx.buffer(n * layer.in_lens[0])),
                })
            }
            _ => None,
        }
    }
}

/// `ConvPoolTrain`'s backward: inputs (dy, x, the pool's output); output the input's
/// gradient when asked.
#[derive(Debug, PartialEq)]
pub(crate) struct ConvPoolTrainBackward {
    ctx: Rc<Context>,
    conv: usize,
    conv_out: Buffer,
    /// The convolution's output gradient, where it is stored (`conv_routes_in_cache`).
    routed: Option<Buffer>,
    params: bool,
    dx: Option<Buffer>,
}

impl Operator for ConvPoolTrainBackward {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let (dy, x) = (input(&inp, 0).borrow(), input(&inp, 1).borrow());
        let y_conv = self.conv_out.borrow();
        let mut routed = self.routed.as_ref().map(Buffer::borrow_mut);
        let mut dx = self.dx.as_ref().map(Buffer::borrow_mut);
        let (ctx, conv) = (&self.ctx, self.conv);
        ctx.timed(conv, 1, || {
            ctx.model.borrow_mut().backward_conv_pool(
                conv,
                &mut ctx.scratch[conv].borrow_mut(),
                &ctx.scratch[conv + 1].borrow(),
                &x,
                &y_conv,
                &dy,
                routed.as_deref_mut().map(Vec::as_mut_slice),
                dx.as_deref_mut().map(Vec::as_mut_slice),
                ctx.n,
                self.params,
            )
        });
        self.dx.iter().map(Buffer::tensor).collect()
    }
}

/// Which loss an output trains with in the current batch, chosen by the batch's target (see
/// `learner::Target`): the compiled graph stays the same whatever the kind.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum LossKind {
    /// Softmax cross-entropy with Keras label smoothing ε.
    Classes { smoothing: f32 },
    /// Sigmoid focal loss over `classes` logits per anchor.
    Focal {
        classes: usize,
        alpha: f32,
        gamma: f32,
    },
    /// Smooth-L1 over the 4 values of each positive anchor.
    Boxes { beta: f32 },
}

/// One output's targets and what its loss leaves for the network to read.
pub(crate) struct Targets {
    pub(crate) kind: Cell<LossKind>,
    /// Class ids (`Classes`), one per sample.
    pub(crate) labels: RefCell<Vec<u32>>,
    /// One label per anchor (`Focal`, `Boxes`): −1 ignored, 0 background, c + 1 for class c.
    pub(crate) anchor_labels: RefCell<Vec<i32>>,
    /// Encoded box targets (`Boxes`), as long as the output.
    pub(crate) boxes: RefCell<Vec<f32>>,
    pub(crate) weights: RefCell<Vec<f32>>,
    /// Values per sample of the output.
    pub(crate) classes: usize,
    /// Softmax of the logits (`Classes` only).
    pub(crate) probs: Buffer,
    /// d loss / d output, computed with the loss (a softmax is fused into it).
    dlogits: Buffer,
    /// The output's loss in the last execution.
    pub(crate) loss: Cell<f64>,
}

impl PartialEq for Targets {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl std::fmt::Debug for Targets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Targets({} values, {:?})", self.classes, self.kind.get())
    }
}

impl Targets {
    pub(crate) fn new(ctx: &Context, classes: usize) -> Targets {
        Targets {
            kind: Cell::new(LossKind::Classes { smoothing: 0.0 }),
            labels: RefCell::new(vec![0; ctx.n]),
            anchor_labels: RefCell::new(Vec::new()),
            boxes: RefCell::new(Vec::new()),
            weights: RefCell::new(vec![0.0; ctx.n]),
            classes,
            probs: ctx.buffer(ctx.n * classes),
            dlogits: ctx.buffer(ctx.n * classes),
            loss: Cell::new(0.0),
        }
    }
}

/// One output's loss, of the kind its targets name for this execution: weighted softmax
/// cross-entropy from logits, the sigmoid focal loss, or smooth-L1 on positive anchors'
/// boxes. Outputs the class probabilities (meaningful for `Classes` only).
#[derive(Debug, PartialEq)]
pub(crate) struct OutputLoss {
    pub(crate) targets: Rc<Targets>,
}

impl Operator for OutputLoss {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let t = &self.targets;
        let x = input(&inp, 0).borrow();
        let weights = t.weights.borrow();
        let mut dlogits = t.dlogits.borrow_mut();
        let loss = match t.kind.get() {
            LossKind::Classes { smoothing } => softmax_cross_entropy(
                t.classes,
                &x,
                &t.labels.borrow(),
                &weights,
                smoothing,
                &mut t.probs.borrow_mut(),
                Some(&mut dlogits),
            ),
            LossKind::Focal {
                classes,
                alpha,
                gamma,
            } => sigmoid_focal_loss(
                classes,
                &x,
                &t.anchor_labels.borrow(),
                &weights,
                alpha,
                gamma,
                Some(&mut dlogits),
            ),
            LossKind::Boxes { beta } => box_smooth_l1(
                beta,
                &x,
                &t.boxes.borrow(),
                &t.anchor_labels.borrow(),
                &weights,
                Some(&mut dlogits),
            ),
        };
        t.loss.set(loss);
        vec![t.probs.tensor()]
    }

    fn custom(&mut self, key: &str, _: Box<dyn Any>) -> Option<Box<dyn Any>> {
        match key {
            BACKWARD => backward_answer(GradientOut {
                name: "OutputLossBackward",
                source: self.targets.dlogits.clone(),
                grad: self.targets.dlogits.clone(),
            }),
            _ => None,
        }
    }
}

/// The objective `Σ seed · logits` whose gradient explanations follow (a one-hot seed
/// makes it a class score). Its value is never needed, only its gradient, the seed.
#[derive(Debug, PartialEq)]
pub(crate) struct ScoreObjective {
    pub(crate) seed: Buffer,
}

impl Operator for ScoreObjective {
    fn process(&mut self, _: Inputs) -> Vec<Tensor> {
        vec![self.seed.tensor()]
    }

    fn custom(&mut self, key: &str, _: Box<dyn Any>) -> Option<Box<dyn Any>> {
        let len = self.seed.borrow().len();
        match key {
            BACKWARD => backward_answer(GradientOut {
                name: "ScoreObjectiveBackward",
                source: self.seed.clone(),
                // A copy: the layer backward after it overwrites its gradient in place.
                grad: Buffer(Rc::new(RefCell::new(vec![0.0; len]))),
            }),
            _ => None,
        }
    }
}

/// A loss's backward: hands on a gradient the loss computed (copying it when `grad` is
/// its own buffer).
#[derive(Debug, PartialEq)]
pub(super) struct GradientOut {
    pub(super) name: &'static str,
    pub(super) source: Buffer,
    pub(super) grad: Buffer,
}

impl Operator for GradientOut {
    fn process(&mut self, _: Inputs) -> Vec<Tensor> {
        if !Rc::ptr_eq(&self.source.0, &self.grad.0) {
            self.grad
                .borrow_mut()
                .copy_from_slice(&self.source.borrow());
        }
        vec![self.grad.tensor()]
    }
}

/// Sums the gradient contributions of a tensor read by several nodes (or copies one, to
/// keep a requested gradient apart from the backward node that overwrites its input).
#[derive(Debug, PartialEq)]
pub(crate) struct SumGradients {
    pub(crate) out: Buffer,
}

impl Operator for SumGradients {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let mut out = self.out.borrow_mut();
        out.copy_from_slice(&input(&inp, 0).borrow());
        for k in 1..inp.len() {
            for (o, g) in out.iter_mut().zip(input(&inp, k).borrow().iter()) {
                *o += g;
            }
        }
        vec![self.out.tensor()]
    }
}
