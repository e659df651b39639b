//! The model's luminal graphs: every layer a luminal `Operator` with a forward and a
//! backward kernel, compiled once per (batch size, mode) and executed per batch.
//!
//! ```text
//! Input → LayerForward(0) → … → LayerForward(out_k) → OutputLoss_k, one per output (Train)
//!            fusion pass: conv + training batchnorm (+ max-pool) → ConvBnTrain
//!            autograd pass:  ← LayerBackward(out_k) ← OutputLossBackward_k
//! Input → LayerForward … ; fusion pass: conv (+ batchnorm) (+ max-pool) → ConvChainForward  (Infer)
//! Input → LayerForward … → ScoreObjective (first output); autograd w.r.t. one activation
//! ```
//!
//! Each layer's node reads the nodes of the layers it names (`Layer::inputs`), so a model
//! graph branches and joins as its IR does; the autograd pass sums the gradients of a
//! tensor read by several nodes.
//!
//! luminal 0.2 tensors are `Box<dyn Data>`, and an operator returns its outputs on every
//! execution. Ours return a `Buffer`: a shared handle to a vector the operator allocated
//! when the graph was compiled, so an execution allocates nothing and intermediate buffers
//! live as long as the graph (measured: fresh outputs per execution cost 23–37% of a
//! forward pass, docs/decisions.md). Parameters, batch statistics and the optimizer state
//! stay in the `Model`, shared by the graphs of every batch size and mode.

mod autograd;
mod fuse;
mod ops;
#[cfg(test)]
mod tests;

pub(crate) use autograd::Autograd;
pub(crate) use fuse::FuseConvBatchnorm;
pub(crate) use ops::{LossKind, Targets};

use super::ir::Source;
use super::model::{Head, Model, Scratch};
use luminal::prelude::{Graph, NodeIndex, ShapeTracker, Tensor};
use ops::{Input, LayerForward, OutputLoss, ScoreObjective};
use std::cell::{Ref, RefCell, RefMut};
use std::fmt;
use std::rc::{Rc, Weak};
use std::time::Instant;

/// A graph tensor's data: a handle to a vector owned by the operator that writes it.
#[derive(Clone)]
pub(crate) struct Buffer(Rc<RefCell<Vec<f32>>>);

/// The length only: luminal prints operators (and so their buffers) in graph displays.
impl fmt::Debug for Buffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Buffer({})", self.0.borrow().len())
    }
}

impl luminal::prelude::Data for Buffer {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// Buffers are equal when they are the same buffer (operators compare by identity).
impl PartialEq for Buffer {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

impl Buffer {
    pub(crate) fn tensor(&self) -> Tensor {
        Tensor::new(self.clone())
    }
    pub(crate) fn borrow(&self) -> Ref<'_, Vec<f32>> {
        self.0.borrow()
    }
    pub(crate) fn borrow_mut(&self) -> RefMut<'_, Vec<f32>> {
        self.0.borrow_mut()
    }
}

/// The buffers of one graph, counted for the memory report while an operator holds them.
#[derive(Default)]
pub(crate) struct Arena(RefCell<Vec<Weak<RefCell<Vec<f32>>>>>);

impl PartialEq for Arena {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl fmt::Debug for Arena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Arena")
    }
}

impl Arena {
    /// A zeroed buffer of `len` floats.
    pub(crate) fn buffer(&self, len: usize) -> Buffer {
        let b = Buffer(Rc::new(RefCell::new(vec![0.0; len])));
        self.0.borrow_mut().push(Rc::downgrade(&b.0));
        b
    }

    /// Bytes of the buffers still held.
    pub(crate) fn bytes(&self) -> usize {
        self.0
            .borrow()
            .iter()
            .filter_map(Weak::upgrade)
            .map(|b| b.borrow().len() * 4)
            .sum()
    }
}

/// What the operators of one compiled graph share: the model, the batch size, each
/// layer's scratch (the forward writes it, the backward and the running-statistics
/// update read it), the per-layer timings, and the graph's buffers.
pub(crate) struct Context {
    pub(crate) model: Rc<RefCell<Model>>,
    pub(crate) n: usize,
    pub(crate) scratch: Vec<RefCell<Scratch>>,
    /// Seconds per layer, [forward, backward], summed while the model is profiling.
    pub(crate) times: RefCell<Vec<[f64; 2]>>,
    pub(crate) arena: Rc<Arena>,
}

/// Operators compare (luminal's `TraitObjEq`) and print by the graph they belong to.
impl PartialEq for Context {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch {}", self.n)
    }
}

impl Context {
    fn new(model: Rc<RefCell<Model>>, n: usize, train: bool) -> Context {
        let (scratch, layers) = {
            let m = model.borrow();
            let scratch = (0..m.layers.len())
                .map(|i| RefCell::new(m.scratch(i, n, train)))
                .collect();
            (scratch, m.layers.len())
        };
        Context {
            model,
            n,
            scratch,
            times: RefCell::new(vec![[0.0; 2]; layers]),
            arena: Rc::new(Arena::default()),
        }
    }

    pub(crate) fn buffer(&self, len: usize) -> Buffer {
        self.arena.buffer(len)
    }

    /// Bytes of the live buffers and the scratch: the graph's share of a step's memory.
    pub(crate) fn bytes(&self) -> usize {
        let scratch: usize = self.scratch.iter().map(|s| s.borrow().bytes()).sum();
        self.arena.bytes() + scratch
    }

    /// Runs `f`, adding its seconds to layer `layer`'s `phase` (0 forward, 1 backward)
    /// when the model is profiling.
    fn timed<R>(&self, layer: usize, phase: usize, f: impl FnOnce() -> R) -> R {
        if !self.model.borrow().profiling {
            return f();
        }
        let started = Instant::now();
        let r = f();
        self.times.borrow_mut()[layer][phase] += started.elapsed().as_secs_f64();
        r
    }
}

/// What a compiled graph computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Mode {
    /// Forward with batch statistics and dropout, each output's loss (the kind its batch
    /// target names: cross-entropy, focal, smooth-L1), backward to every trainable parameter;
    /// convolutions fused with the training batchnorm after them.
    Train,
    /// Forward in inference mode, convolutions fused with the batchnorm after them.
    Infer,
    /// Forward in inference mode and the gradient of `Σ seed · output(objective)` (the first
    /// output's logits, or any layer's output for filter visualisation) w.r.t. the output of
    /// layer `wrt` (or the input images when None); no parameter gradients.
    Explain {
        objective: usize,
        wrt: Option<usize>,
    },
}

/// One compiled graph and the buffers the network reads and writes around an execution.
pub(crate) struct Compiled {
    pub(crate) graph: Graph,
    pub(crate) ctx: Rc<Context>,
    /// The images, written before each execution.
    pub(crate) input: Buffer,
    /// Each layer's output (an output layer's holds its logits). A buffer the fusion pass
    /// made unwritten is emptied: a fused convolution's in `Infer` graphs, a batchnorm's
    /// fused into the max-pool after it in `Train` graphs.
    pub(crate) outputs: Vec<Buffer>,
    /// Per model output: targets and sample weights in, loss and probabilities out (`Train`).
    pub(crate) targets: Vec<Rc<Targets>>,
    /// d objective / d logits (`Explain`).
    pub(crate) seed: Option<Buffer>,
    /// The gradient the `Explain` graph was compiled for.
    pub(crate) captured: Option<Buffer>,
    /// Executions so far (profiles are averaged over them).
    pub(crate) steps: usize,
}

fn shape(n: usize, len: usize) -> ShapeTracker {
    ShapeTracker::new(&[n.into(), len.into()])
}

/// Builds the forward graph of `model` for batch `n`, then runs the compiler passes that
/// `mode` needs: the fusion pass (`Train`, `Infer`) and the autograd pass (`Train`, `Explain`).
pub(crate) fn compile(
    model: &Rc<RefCell<Model>>,
    input_len: usize,
    n: usize,
    mode: Mode,
) -> Compiled {
    let train = mode == Mode::Train;
    let ctx = Rc::new(Context::new(model.clone(), n, train));
    let (layers, heads): (Vec<(usize, Vec<Source>)>, Vec<Head>) = {
        let m = model.borrow();
        let layers = m
            .layers
            .iter()
            .map(|l| (l.out_len, l.inputs.clone()))
            .collect();
        (layers, m.heads.clone())
    };
    let mut graph = Graph::new();
    let input = ctx.buffer(n * input_len);
    let input_node = graph.add_op(Input).finish();
    graph.set_tensor(input_node, 0, input.tensor());
    graph.no_delete.insert(input_node);
    let mut nodes: Vec<NodeIndex> = Vec::with_capacity(layers.len());
    let mut outputs = Vec::with_capacity(layers.len());
    for (layer, (len, sources)) in layers.iter().enumerate() {
        let out = ctx.buffer(n * len);
        let mut op = graph.add_op(LayerForward {
            ctx: ctx.clone(),
            layer,
            train,
            out: out.clone(),
        });
        for source in sources {
            let (node, len) = match *source {
                Source::Input => (input_node, input_len),
                Source::Layer(j) => (nodes[j], layers[j].0),
            };
            op = op.input(node, 0, shape(n, len));
        }
        nodes.push(op.finish());
        outputs.push(out);
    }
    let (mut targets, mut seed, mut captured) = (Vec::new(), None, None);
    match mode {
        Mode::Train => {
            let mut losses = Vec::with_capacity(heads.len());
            for head in &heads {
                let t = Rc::new(Targets::new(&ctx, head.classes));
                losses.push(
                    graph
                        .add_op(OutputLoss { targets: t.clone() })
                        .input(nodes[head.layer], 0, shape(n, head.classes))
                        .finish(),
                );
                targets.push(t);
            }
            graph.compile(FuseConvBatchnorm, ());
            graph.compile(
                &Autograd::new(ctx.arena.clone(), losses, true, Vec::new()),
                (),
            );
        }
        Mode::Infer => graph.compile(FuseConvBatchnorm, ()),
        Mode::Explain { objective, wrt } => {
            let len = layers[objective].0;
            let s = ctx.buffer(n * len);
            let objective = graph
                .add_op(ScoreObjective { seed: s.clone() })
                .input(nodes[objective], 0, shape(n, len))
                .finish();
            let wrt = wrt.map_or(input_node, |l| nodes[l]);
            let pass = Autograd::new(ctx.arena.clone(), vec![objective], false, vec![wrt]);
            graph.compile(&pass, ());
            captured = pass.gradient(wrt);
            seed = Some(s);
        }
    }
    Compiled {
        graph,
        ctx,
        input,
        outputs,
        targets,
        seed,
        captured,
        steps: 0,
    }
}
