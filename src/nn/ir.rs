//! Model IR: a graph of layers in topological order with every output shape resolved.
//!
//! The checker builds it from a `model` block (so shape errors are found at check time,
//! pointing at the layer's line); the engine compiles it into a graph. Each layer names the
//! tensors it reads (`Source`: the model input or an earlier layer); by default a layer reads
//! the one before it, so a layer list is the chain it always was. Shapes are per-sample
//! `[height, width, channels]` for images and `[features]` after `flatten`, the same order
//! Keras uses, so imported Keras weights map without transposing axes.
//!
//! Serialised (stage configs, checkpoint metadata) a layer lists its inputs by name under
//! `from` only when they differ from the default, and the model its `outputs` only when
//! they differ from the last layer: a chain's JSON is the same as before graphs existed.
//!
//! A conv or dense layer may `share` an earlier layer's weights (EfficientDet's heads apply
//! one convolution to every pyramid level): it owns no parameters, and the layer it names
//! must take weights of the same shape. Serialised, `share` names the owner and is written
//! only when present.

use super::ops::pool::MAX_POOL_WINDOW;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

/// Per-sample tensor shape (the batch axis is never stored).
pub type Shape = Vec<usize>;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Activation {
    Linear,
    Relu,
    /// min(max(x, 0), 6) (MobileNet).
    Relu6,
    LeakyRelu {
        alpha: f32,
    },
    Elu {
        alpha: f32,
    },
    Sigmoid,
    Tanh,
    Softmax,
    /// x · relu6(x + 3) / 6 (MobileNetV3). Its derivative needs x, not only the output.
    HardSwish,
    /// x · sigmoid(x) (EfficientNet's SiLU). Its derivative needs x, not only the output.
    Swish,
}

impl Activation {
    /// The backward pass needs the activation's input: such an activation runs as a layer
    /// of its own (which keeps its input), never fused into a conv or dense layer.
    pub fn needs_input(self) -> bool {
        match self {
            Activation::HardSwish | Activation::Swish => true,
            Activation::Linear
            | Activation::Relu
            | Activation::Relu6
            | Activation::LeakyRelu { .. }
            | Activation::Elu { .. }
            | Activation::Sigmoid
            | Activation::Tanh
            | Activation::Softmax => false,
        }
    }

    /// The name written in a model block.
    pub fn keyword(self) -> &'static str {
        match self {
            Activation::Linear => "linear",
            Activation::Relu => "relu",
            Activation::Relu6 => "relu6",
            Activation::LeakyRelu { .. } => "leaky_relu",
            Activation::Elu { .. } => "elu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
            Activation::Softmax => "softmax",
            Activation::HardSwish => "hard_swish",
            Activation::Swish => "swish",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Padding {
    /// No padding: output = floor((in - effective_kernel) / stride) + 1.
    Valid,
    /// Keras/TensorFlow "same": output = ceil(in / stride), extra padding at the end.
    Same,
}

/// L1/L2 weight penalties of a layer (Keras `kernel_regularizer=l1_l2(l1, l2)`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Regularizer {
    pub l1: f32,
    pub l2: f32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LayerOp {
    Conv2d {
        filters: usize,
        kernel: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
        dilation: [usize; 2],
        /// 1 for an ordinary convolution; `groups == in_channels == filters` is depthwise.
        groups: usize,
        activation: Activation,
        regularizer: Regularizer,
    },
    Dense {
        units: usize,
        activation: Activation,
        regularizer: Regularizer,
    },
    MaxPool {
        size: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    },
    AvgPool {
        size: [usize; 2],
        stride: [usize; 2],
        padding: Padding,
    },
    GlobalAvgPool,
    BatchNorm {
        momentum: f32,
        epsilon: f32,
    },
    Dropout {
        rate: f32,
    },
    Flatten,
    Activation(Activation),
    Upsample {
        factor: usize,
    },
    /// Element-wise sum of two or more inputs of one shape (a residual join).
    Add,
    /// Two or more inputs joined along the channel (last) axis; the other axes must agree.
    Concat,
    /// The first input times the second, which has the first's shape or only its channels
    /// (`[c]` or `1 x 1 x c`, broadcast over space: squeeze-excitation).
    Multiply,
    /// BiFPN's fast normalised fusion: Σ_i w_i · x_i / (ε + Σ_j w_j) over inputs of one
    /// shape, with one learnable weight per input kept non-negative by a ReLU.
    WeightedSum {
        epsilon: f32,
    },
}

/// Where a layer reads a tensor from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// The model's input images.
    Input,
    /// The output of an earlier layer (its index in `ModelIr::layers`).
    Layer(usize),
}

/// The name `from:` uses for the model's input.
pub const INPUT: &str = "input";

/// One layer after shape inference.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerIr {
    /// Unique within the model: the user's name, or `<kind>_<n>` like Keras (`conv2d_3`).
    pub name: String,
    pub op: LayerOp,
    /// The tensors it reads, in order; every source comes before the layer.
    pub inputs: Vec<Source>,
    /// The shape of its first input (a join's other inputs: `ModelIr::input_shapes`).
    pub input: Shape,
    pub output: Shape,
    /// Trainable parameter count (batchnorm counts gamma and beta; its running stats are not trainable).
    pub params: usize,
    /// Multiply-adds times two, per sample, forward only.
    pub flops: u64,
    /// False for layers frozen by `freeze until` / `trainable from`.
    pub trainable: bool,
    /// The earlier layer whose weights this one uses (never itself a sharing layer); such a
    /// layer has no parameters of its own (`params` 0).
    pub shares: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(into = "ModelFile", try_from = "ModelFile")]
pub struct ModelIr {
    pub name: String,
    pub input: Shape,
    pub layers: Vec<LayerIr>,
    /// The layers whose outputs the model returns (each gets a loss in training), in order.
    pub outputs: Vec<usize>,
}

/// A layer as written: its op, optional name, and the names it reads (empty: the layer
/// written before it, or the model input for the first).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerSpec {
    pub name: Option<String>,
    pub op: LayerOp,
    pub from: Vec<String>,
    /// `share:`, the layer whose weights this one uses.
    pub share: Option<String>,
}

impl LayerSpec {
    /// A layer reading the one before it.
    pub fn chained(name: Option<String>, op: LayerOp) -> LayerSpec {
        LayerSpec {
            name,
            op,
            from: Vec::new(),
            share: None,
        }
    }
}

/// Why a model's layers do not form a valid graph. `layer` indexes the specs as given.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GraphError {
    /// The layer cannot take its input shapes; `other` is the spec of the input that
    /// disagrees with the first one, for a join.
    #[error("layer {layer}: {message}")]
    Shape {
        layer: usize,
        message: String,
        other: Option<usize>,
    },
    #[error("layer {layer} reads `{name}`, which is no layer of the model")]
    UnknownSource { layer: usize, name: String },
    #[error("output `{name}` is no layer of the model")]
    UnknownOutput { name: String },
    /// Layers that read each other in a circle, in reading order (the first reads the last).
    #[error("layers {layers:?} read each other in a cycle")]
    Cycle { layers: Vec<usize> },
    #[error("layer {layer} reaches no output")]
    Unused { layer: usize },
    #[error("layer {layer} shares `{name}`, which is no layer of the model")]
    UnknownShare { layer: usize, name: String },
    /// `share` names a layer whose weights this one cannot use; `owner` is its spec.
    #[error("layer {layer} cannot share `{owner_name}`'s weights: {message}")]
    Share {
        layer: usize,
        owner: usize,
        owner_name: String,
        message: String,
    },
    #[error("the model has no layers")]
    Empty,
}

impl GraphError {
    /// The spec the error is about, when there is one.
    pub fn layer(&self) -> Option<usize> {
        match self {
            GraphError::Shape { layer, .. }
            | GraphError::UnknownSource { layer, .. }
            | GraphError::UnknownShare { layer, .. }
            | GraphError::Share { layer, .. }
            | GraphError::Unused { layer } => Some(*layer),
            GraphError::Cycle { layers } => layers.first().copied(),
            GraphError::UnknownOutput { .. } | GraphError::Empty => None,
        }
    }
}

impl ModelIr {
    /// A chain: every layer reads the one before it, the last is the output. Layer names
    /// that are `None` get Keras-style automatic names.
    pub fn build(
        name: &str,
        input: Shape,
        ops: Vec<(Option<String>, LayerOp)>,
    ) -> Result<ModelIr, GraphError> {
        let specs = ops
            .into_iter()
            .map(|(n, op)| LayerSpec::chained(n, op))
            .collect();
        ModelIr::build_graph(name, input, specs, Vec::new())
    }

    /// Resolves names (automatic ones counted per kind in the order written), checks the
    /// graph (known sources, no cycle, every layer reaching an output), orders the layers
    /// topologically (keeping the written order wherever the reads allow) and infers every
    /// shape. `outputs` empty means the last layer written.
    pub fn build_graph(
        name: &str,
        input: Shape,
        specs: Vec<LayerSpec>,
        outputs: Vec<String>,
    ) -> Result<ModelIr, GraphError> {
        if specs.is_empty() {
            return Err(GraphError::Empty);
        }
        let names = layer_names(&specs);
        let position = |n: &str| names.iter().position(|x| x == n);
        // Sources by spec index.
        let mut reads: Vec<Vec<Source>> = Vec::with_capacity(specs.len());
        for (i, spec) in specs.iter().enumerate() {
            let sources = if spec.from.is_empty() {
                vec![if i == 0 {
                    Source::Input
                } else {
                    Source::Layer(i - 1)
                }]
            } else {
                let mut sources = Vec::with_capacity(spec.from.len());
                for n in &spec.from {
                    sources.push(match position(n) {
                        Some(j) => Source::Layer(j),
                        None if n == INPUT => Source::Input,
                        None => {
                            return Err(GraphError::UnknownSource {
                                layer: i,
                                name: n.clone(),
                            })
                        }
                    });
                }
                sources
            };
            reads.push(sources);
        }
        let mut outs = Vec::new();
        for n in &outputs {
            match position(n) {
                Some(j) if !outs.contains(&j) => outs.push(j),
                Some(_) => {}
                None => return Err(GraphError::UnknownOutput { name: n.clone() }),
            }
        }
        if outs.is_empty() {
            outs.push(specs.len() - 1);
        }
        let order = topological(&reads)?;
        // Every layer must reach an output.
        let mut live = vec![false; specs.len()];
        let mut stack = outs.clone();
        while let Some(j) = stack.pop() {
            if !std::mem::replace(&mut live[j], true) {
                stack.extend(reads[j].iter().filter_map(|s| match s {
                    Source::Layer(k) => Some(*k),
                    Source::Input => None,
                }));
            }
        }
        // Positions in the topological order, by spec index.
        let mut at = vec![0; specs.len()];
        for (pos, &i) in order.iter().enumerate() {
            at[i] = pos;
        }
        let mut layers: Vec<LayerIr> = Vec::with_capacity(specs.len());
        for &i in &order {
            let shapes: Vec<&Shape> = reads[i]
                .iter()
                .map(|s| match s {
                    Source::Input => &input,
                    Source::Layer(j) => &layers[at[*j]].output,
                })
                .collect();
            let read_names: Vec<&str> = reads[i]
                .iter()
                .map(|s| match s {
                    Source::Input => INPUT,
                    Source::Layer(j) => names[*j].as_str(),
                })
                .collect();
            let (output, mut params, flops) =
                infer(&shapes, &read_names, &specs[i].op).map_err(|(message, k)| {
                    GraphError::Shape {
                        layer: i,
                        message,
                        other: k.and_then(|k| match reads[i][k] {
                            Source::Layer(j) => Some(j),
                            Source::Input => None,
                        }),
                    }
                })?;
            let shares = match &specs[i].share {
                None => None,
                Some(owner) => {
                    let j = position(owner).ok_or_else(|| GraphError::UnknownShare {
                        layer: i,
                        name: owner.clone(),
                    })?;
                    let fail = |message: String| GraphError::Share {
                        layer: i,
                        owner: j,
                        owner_name: owner.clone(),
                        message,
                    };
                    if j == i {
                        return Err(fail("a layer cannot share its own weights".into()));
                    }
                    if at[j] >= at[i] {
                        return Err(fail(format!(
                            "`{owner}` does not come before `{}`: the first layer of a group owns the weights and later ones share them",
                            names[i]
                        )));
                    }
                    let theirs = &layers[at[j]];
                    check_share(&specs[i].op, shapes[0], &theirs.op, &theirs.input)
                        .map_err(fail)?;
                    // Sharing a sharing layer shares its owner's weights.
                    params = 0;
                    Some(theirs.shares.unwrap_or(at[j]))
                }
            };
            layers.push(LayerIr {
                name: names[i].clone(),
                op: specs[i].op.clone(),
                inputs: reads[i]
                    .iter()
                    .map(|s| match s {
                        Source::Input => Source::Input,
                        Source::Layer(j) => Source::Layer(at[*j]),
                    })
                    .collect(),
                input: shapes[0].clone(),
                output,
                params,
                flops,
                trainable: true,
                shares,
            });
        }
        if let Some(dead) = (0..specs.len()).find(|&i| !live[i]) {
            return Err(GraphError::Unused { layer: dead });
        }
        Ok(ModelIr {
            name: name.to_string(),
            input,
            layers,
            outputs: outs.iter().map(|&j| at[j]).collect(),
        })
    }

    /// The layers as specs with explicit sources, and the output names: building them again
    /// gives this model back (trainable flags aside). The engine re-infers shapes this way.
    pub fn specs(&self) -> (Vec<LayerSpec>, Vec<String>) {
        let specs = self
            .layers
            .iter()
            .map(|l| LayerSpec {
                name: Some(l.name.clone()),
                op: l.op.clone(),
                from: l
                    .inputs
                    .iter()
                    .map(|s| self.source_name(*s).to_string())
                    .collect(),
                share: l.shares.map(|o| self.layers[o].name.clone()),
            })
            .collect();
        let outputs = self
            .outputs
            .iter()
            .map(|&o| self.layers[o].name.clone())
            .collect();
        (specs, outputs)
    }

    /// `input` or the layer's name.
    pub fn source_name(&self, source: Source) -> &str {
        match source {
            Source::Input => INPUT,
            Source::Layer(j) => &self.layers[j].name,
        }
    }

    pub fn source_shape(&self, source: Source) -> &Shape {
        match source {
            Source::Input => &self.input,
            Source::Layer(j) => &self.layers[j].output,
        }
    }

    /// The shapes layer `i` reads, in input order.
    pub fn input_shapes(&self, i: usize) -> Vec<&Shape> {
        self.layers[i]
            .inputs
            .iter()
            .map(|s| self.source_shape(*s))
            .collect()
    }

    /// Each layer reads only the one before it and the last is the only output.
    pub fn is_chain(&self) -> bool {
        self.outputs == [self.layers.len().saturating_sub(1)]
            && self
                .layers
                .iter()
                .enumerate()
                .all(|(i, l)| l.inputs == [default_source(i)])
    }

    /// The first output's shape.
    pub fn output(&self) -> &Shape {
        self.outputs
            .first()
            .map(|&o| &self.layers[o].output)
            .unwrap_or(&self.input)
    }

    /// Layers (by index) whose outputs `layer` depends on, not counting itself.
    pub fn ancestors(&self, layer: usize) -> Vec<usize> {
        let mut seen = vec![false; self.layers.len()];
        let mut stack = vec![layer];
        while let Some(j) = stack.pop() {
            for s in &self.layers[j].inputs {
                if let Source::Layer(k) = *s {
                    if !std::mem::replace(&mut seen[k], true) {
                        stack.push(k);
                    }
                }
            }
        }
        (0..self.layers.len()).filter(|&k| seen[k]).collect()
    }

    /// A path from the input to an output that does not pass through `layer` (as layer
    /// indices), if there is one: then `layer` does not lie on every path to an output.
    pub fn path_avoiding(&self, layer: usize) -> Option<Vec<usize>> {
        // Walk back from each output, never entering `layer`, until the input is read.
        let mut via: Vec<Option<Option<usize>>> = vec![None; self.layers.len()];
        let mut stack: Vec<usize> = Vec::new();
        for &o in &self.outputs {
            if o != layer && via[o].is_none() {
                via[o] = Some(None);
                stack.push(o);
            }
        }
        while let Some(j) = stack.pop() {
            for s in &self.layers[j].inputs {
                match *s {
                    Source::Input => {
                        let mut path = vec![j];
                        let mut k = j;
                        while let Some(Some(next)) = via[k] {
                            path.push(next);
                            k = next;
                        }
                        return Some(path);
                    }
                    Source::Layer(k) if k != layer && via[k].is_none() => {
                        via[k] = Some(Some(j));
                        stack.push(k);
                    }
                    Source::Layer(_) => {}
                }
            }
        }
        None
    }

    pub fn total_params(&self) -> usize {
        self.layers.iter().map(|l| l.params).sum()
    }

    pub fn trainable_params(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.trainable)
            .map(|l| l.params)
            .sum()
    }

    pub fn total_flops(&self) -> u64 {
        self.layers.iter().map(|l| l.flops).sum()
    }

    /// The per-level maps a detector output joins, finest first: `[height, width, channels]`
    /// of each map that a `flatten` turns into part of output `output` (a `concat` of
    /// flattens, or one flatten). `None` when the output is not built that way.
    pub fn level_maps(&self, output: usize) -> Option<Vec<[usize; 3]>> {
        let layer = &self.layers[output];
        let flattens: Vec<Source> = match layer.op {
            LayerOp::Concat => layer.inputs.clone(),
            LayerOp::Flatten => vec![Source::Layer(output)],
            _ => return None,
        };
        flattens
            .iter()
            .map(|s| match *s {
                Source::Layer(k) if self.layers[k].op == LayerOp::Flatten => {
                    match self.layers[k].input.as_slice() {
                        &[h, w, c] => Some([h, w, c]),
                        _ => None,
                    }
                }
                _ => None,
            })
            .collect()
    }

    /// Index of a layer by name.
    pub fn layer_index(&self, name: &str) -> Option<usize> {
        self.layers.iter().position(|l| l.name == name)
    }
}

/// Each spec's name: its own, or `<kind>_<n>` counted per kind in the order written (Keras's
/// automatic names, `conv2d_3`).
pub fn layer_names(specs: &[LayerSpec]) -> Vec<String> {
    let mut counters: BTreeMap<&'static str, usize> = BTreeMap::new();
    specs
        .iter()
        .map(|s| {
            let kind = s.op.kind();
            let counter = counters.entry(kind).or_insert(0);
            *counter += 1;
            s.name
                .clone()
                .unwrap_or_else(|| format!("{kind}_{counter}"))
        })
        .collect()
}

/// What layer `i` reads when its `from` is not written.
fn default_source(i: usize) -> Source {
    match i {
        0 => Source::Input,
        _ => Source::Layer(i - 1),
    }
}

/// Kahn's algorithm taking the lowest written index first, so a model written in reading
/// order keeps its order; a cycle is reported with the layers on it.
fn topological(reads: &[Vec<Source>]) -> Result<Vec<usize>, GraphError> {
    let n = reads.len();
    let mut pending = vec![0usize; n];
    let mut readers: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, sources) in reads.iter().enumerate() {
        for s in sources {
            if let Source::Layer(j) = *s {
                pending[i] += 1;
                readers[j].push(i);
            }
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> =
        (0..n).filter(|&i| pending[i] == 0).map(Reverse).collect();
    let mut order = Vec::with_capacity(n);
    while let Some(Reverse(i)) = ready.pop() {
        order.push(i);
        for &r in &readers[i] {
            pending[r] -= 1;
            if pending[r] == 0 {
                ready.push(Reverse(r));
            }
        }
    }
    if order.len() == n {
        return Ok(order);
    }
    // Every layer left waits on another layer left: follow first unresolved reads until one
    // repeats, then report the loop from that layer.
    let mut walk = vec![(0..n)
        .find(|&i| pending[i] > 0)
        .expect("some layer is left")];
    loop {
        let current = *walk.last().expect("walk is not empty");
        let next = reads[current]
            .iter()
            .find_map(|s| match *s {
                Source::Layer(j) if pending[j] > 0 => Some(j),
                _ => None,
            })
            .expect("a layer left waits on another left");
        if let Some(start) = walk.iter().position(|&w| w == next) {
            let mut cycle: Vec<usize> = walk[start..].to_vec();
            // Reading order: each layer reads the one after it in `walk`; report the first
            // written layer first, followed by what reads it.
            cycle.reverse();
            let first = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, &l)| l)
                .map(|(k, _)| k)
                .unwrap_or(0);
            cycle.rotate_left(first);
            return Err(GraphError::Cycle { layers: cycle });
        }
        walk.push(next);
    }
}

/// A layer as stored: sources by name, and only when they are not the default.
#[derive(Serialize, Deserialize)]
struct LayerFile {
    name: String,
    op: LayerOp,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    from: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    share: Option<String>,
    input: Shape,
    output: Shape,
    params: usize,
    flops: u64,
    trainable: bool,
}

#[derive(Serialize, Deserialize)]
struct ModelFile {
    name: String,
    input: Shape,
    layers: Vec<LayerFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    outputs: Vec<String>,
}

impl From<ModelIr> for ModelFile {
    fn from(ir: ModelIr) -> ModelFile {
        let chain_end = ir.outputs == [ir.layers.len().saturating_sub(1)];
        let outputs = if chain_end {
            Vec::new()
        } else {
            ir.outputs
                .iter()
                .map(|&o| ir.layers[o].name.clone())
                .collect()
        };
        let from: Vec<Vec<String>> = ir
            .layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                if l.inputs == [default_source(i)] {
                    Vec::new()
                } else {
                    l.inputs
                        .iter()
                        .map(|s| ir.source_name(*s).to_string())
                        .collect()
                }
            })
            .collect();
        let share: Vec<Option<String>> = ir
            .layers
            .iter()
            .map(|l| l.shares.map(|o| ir.layers[o].name.clone()))
            .collect();
        ModelFile {
            name: ir.name,
            input: ir.input,
            layers: ir
                .layers
                .into_iter()
                .zip(from)
                .zip(share)
                .map(|((l, from), share)| LayerFile {
                    name: l.name,
                    op: l.op,
                    from,
                    share,
                    input: l.input,
                    output: l.output,
                    params: l.params,
                    flops: l.flops,
                    trainable: l.trainable,
                })
                .collect(),
            outputs,
        }
    }
}

impl TryFrom<ModelFile> for ModelIr {
    type Error = String;

    /// Names resolve to earlier layers only: the stored order is topological.
    fn try_from(file: ModelFile) -> Result<ModelIr, String> {
        let mut layers: Vec<LayerIr> = Vec::with_capacity(file.layers.len());
        for (i, l) in file.layers.into_iter().enumerate() {
            let inputs = if l.from.is_empty() {
                vec![default_source(i)]
            } else {
                l.from
                    .iter()
                    .map(|n| match layers.iter().position(|x| &x.name == n) {
                        Some(j) => Ok(Source::Layer(j)),
                        None if n == INPUT => Ok(Source::Input),
                        None => Err(format!(
                            "layer `{}` reads `{n}`, which is not an earlier layer",
                            l.name
                        )),
                    })
                    .collect::<Result<_, _>>()?
            };
            let shares = match &l.share {
                None => None,
                Some(n) => Some(layers.iter().position(|x| &x.name == n).ok_or_else(|| {
                    format!(
                        "layer `{}` shares `{n}`, which is not an earlier layer",
                        l.name
                    )
                })?),
            };
            layers.push(LayerIr {
                name: l.name,
                op: l.op,
                inputs,
                input: l.input,
                output: l.output,
                params: l.params,
                flops: l.flops,
                trainable: l.trainable,
                shares,
            });
        }
        let outputs = if file.outputs.is_empty() {
            vec![layers.len().saturating_sub(1)]
        } else {
            file.outputs
                .iter()
                .map(|n| {
                    layers
                        .iter()
                        .position(|l| &l.name == n)
                        .ok_or_else(|| format!("output `{n}` is no layer of the model"))
                })
                .collect::<Result<_, _>>()?
        };
        Ok(ModelIr {
            name: file.name,
            input: file.input,
            layers,
            outputs,
        })
    }
}

impl LayerOp {
    /// The Keras-like kind used for automatic names and summaries.
    pub fn kind(&self) -> &'static str {
        match self {
            LayerOp::Conv2d { .. } => "conv2d",
            LayerOp::Dense { .. } => "dense",
            LayerOp::MaxPool { .. } => "max_pooling2d",
            LayerOp::AvgPool { .. } => "average_pooling2d",
            LayerOp::GlobalAvgPool => "global_average_pooling2d",
            LayerOp::BatchNorm { .. } => "batch_normalization",
            LayerOp::Dropout { .. } => "dropout",
            LayerOp::Flatten => "flatten",
            LayerOp::Activation(_) => "activation",
            LayerOp::Upsample { .. } => "up_sampling2d",
            LayerOp::Add => "add",
            LayerOp::Concat => "concatenate",
            LayerOp::Multiply => "multiply",
            LayerOp::WeightedSum { .. } => "weighted_sum",
        }
    }

    /// How many inputs the op takes: (at least, at most).
    pub fn arity(&self) -> (usize, usize) {
        match self {
            LayerOp::Add | LayerOp::Concat | LayerOp::WeightedSum { .. } => (2, usize::MAX),
            LayerOp::Multiply => (2, 2),
            LayerOp::Conv2d { .. }
            | LayerOp::Dense { .. }
            | LayerOp::MaxPool { .. }
            | LayerOp::AvgPool { .. }
            | LayerOp::GlobalAvgPool
            | LayerOp::BatchNorm { .. }
            | LayerOp::Dropout { .. }
            | LayerOp::Flatten
            | LayerOp::Activation(_)
            | LayerOp::Upsample { .. } => (1, 1),
        }
    }
}

fn spatial_out(
    input: usize,
    window: usize,
    stride: usize,
    padding: Padding,
) -> Result<usize, String> {
    match padding {
        Padding::Same => Ok(input.div_ceil(stride)),
        Padding::Valid if window > input => Err(format!(
            "a {window}-wide window does not fit a feature map {input} wide (use padding same, or a smaller window)"
        )),
        Padding::Valid => Ok((input - window) / stride + 1),
    }
}

fn image_shape(shape: &Shape, what: &str) -> Result<(usize, usize, usize), String> {
    match shape.as_slice() {
        [h, w, c] => Ok((*h, *w, *c)),
        _ => Err(format!(
            "{what} needs an image-shaped input (height x width x channels) but gets {}",
            fmt_shape(shape)
        )),
    }
}

/// `69 x 69 x 3` style, as summaries print it.
pub fn fmt_shape(shape: &Shape) -> String {
    shape
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join(" x ")
}

/// Whether a layer `op` reading `input` can use the weights of a layer `theirs` reading
/// `their_input`: both conv or both dense, with weights of one shape (a convolution's
/// spatial size may differ), and no penalty of its own that differs from theirs (the
/// penalty belongs to the weights, and counts once).
fn check_share(
    op: &LayerOp,
    input: &Shape,
    theirs: &LayerOp,
    their_input: &Shape,
) -> Result<(), String> {
    // The kernel's shape as Keras stores it, and the groups that split it.
    let weights = |op: &LayerOp, input: &Shape| match op {
        LayerOp::Conv2d {
            filters,
            kernel,
            groups,
            ..
        } => {
            let c = input.last().copied().unwrap_or(0);
            let grouped = if *groups == 1 {
                String::new()
            } else {
                format!(" in {groups} groups")
            };
            Some(format!(
                "{}{grouped}",
                fmt_shape(&vec![kernel[0], kernel[1], c / groups, *filters])
            ))
        }
        LayerOp::Dense { units, .. } => Some(fmt_shape(&vec![input.iter().product(), *units])),
        _ => None,
    };
    let regularizer = |op: &LayerOp| match op {
        LayerOp::Conv2d { regularizer, .. } | LayerOp::Dense { regularizer, .. } => *regularizer,
        _ => Regularizer::default(),
    };
    let (Some(mine), Some(other)) = (weights(op, input), weights(theirs, their_input)) else {
        return Err(format!(
            "only conv and dense layers share weights, and this is {} sharing {}",
            op.kind(),
            theirs.kind()
        ));
    };
    if op.kind() != theirs.kind() {
        return Err(format!(
            "a {} layer cannot use the weights of a {} layer",
            op.kind(),
            theirs.kind()
        ));
    }
    if mine != other {
        return Err(format!(
            "its kernel would be {mine} but the shared kernel is {other}"
        ));
    }
    let reg = regularizer(op);
    if reg != Regularizer::default() && reg != regularizer(theirs) {
        return Err(
            "the L1/L2 penalty belongs to the shared weights: set it on the layer that owns them"
                .into(),
        );
    }
    Ok(())
}

/// Output shape, parameters and FLOPs of `op` reading `inputs` (named `names`, for
/// messages). An error says why, with the input that disagrees with the first, for a join.
fn infer(
    inputs: &[&Shape],
    names: &[&str],
    op: &LayerOp,
) -> Result<(Shape, usize, u64), (String, Option<usize>)> {
    let (least, most) = op.arity();
    let kind = op.kind();
    if inputs.len() < least {
        return Err((
            format!(
                "{kind} joins {least} or more layers but reads {}: name them with `from: [a, b]`",
                inputs.len()
            ),
            None,
        ));
    }
    if inputs.len() > most {
        return Err((
            format!(
                "{kind} reads {most} input{} but is given {}",
                if most == 1 { "" } else { "s" },
                inputs.len()
            ),
            None,
        ));
    }
    let (first, first_name) = (inputs[0], names[0]);
    let mismatch = |k: usize, verb: &str, need: &str| {
        (
            format!(
                "cannot {verb} `{first_name}` ({}) and `{}` ({}): {need}",
                fmt_shape(first),
                names[k],
                fmt_shape(inputs[k])
            ),
            Some(k),
        )
    };
    let elements: usize = first
        .iter()
        .try_fold(1, |acc, &d| mul(acc, d))
        .map_err(|m| (m, None))?;
    match op {
        LayerOp::Add => {
            if let Some(k) = (1..inputs.len()).find(|&k| inputs[k] != first) {
                return Err(mismatch(k, "add", "add needs equal shapes"));
            }
            Ok((first.clone(), 0, (elements * (inputs.len() - 1)) as u64))
        }
        LayerOp::WeightedSum { epsilon } => {
            if epsilon.is_nan() || *epsilon <= 0.0 {
                return Err((
                    format!("weighted_sum epsilon {epsilon} must be positive"),
                    None,
                ));
            }
            if let Some(k) = (1..inputs.len()).find(|&k| inputs[k] != first) {
                return Err(mismatch(k, "fuse", "weighted_sum needs equal shapes"));
            }
            let k = inputs.len();
            Ok((first.clone(), k, (2 * k * elements) as u64))
        }
        LayerOp::Concat => {
            let lead = &first[..first.len().saturating_sub(1)];
            if first.is_empty() {
                return Err(("concat needs inputs with a channel axis".into(), None));
            }
            if let Some(k) = (1..inputs.len()).find(|&k| {
                inputs[k].len() != first.len() || &inputs[k][..inputs[k].len() - 1] != lead
            }) {
                return Err(mismatch(
                    k,
                    "concatenate",
                    "concat joins along channels, so every other axis must agree",
                ));
            }
            let mut out = lead.to_vec();
            out.push(inputs.iter().map(|s| s[s.len() - 1]).sum());
            Ok((out, 0, 0))
        }
        LayerOp::Multiply => {
            let other = inputs[1];
            let channels = first.last().copied().unwrap_or(0);
            let broadcast = matches!(other.as_slice(), [c] | [1, 1, c] if *c == channels);
            if other != first && !broadcast {
                return Err(mismatch(
                    1,
                    "multiply",
                    "the second input needs the first's shape or only its channels (`[c]` or `1 x 1 x c`)",
                ));
            }
            Ok((first.clone(), 0, elements as u64))
        }
        _ => infer_one(first, op).map_err(|m| (m, None)),
    }
}

/// Past this, an element, parameter or FLOP count is refused: no network gpl can train comes
/// near it, and with every count below it the sums over layers cannot overflow.
const MAX_COUNT: usize = 1 << 48;

/// `a * b`, or an error when the product passes [`MAX_COUNT`] (huge sizes in a pipeline).
fn mul(a: usize, b: usize) -> Result<usize, String> {
    a.checked_mul(b).filter(|&p| p <= MAX_COUNT).ok_or_else(|| {
        format!("the sizes multiply past {MAX_COUNT}, more than any network gpl can train")
    })
}

fn infer_one(input: &Shape, op: &LayerOp) -> Result<(Shape, usize, u64), String> {
    let elements: usize = input.iter().try_fold(1, |acc, &d| mul(acc, d))?;
    match op {
        LayerOp::Conv2d { activation, .. } | LayerOp::Dense { activation, .. }
            if activation.needs_input() =>
        {
            let name = activation.keyword();
            Err(format!(
                "{name} needs its input in the backward pass, which a {} layer does not keep: write `{name}` as a layer of its own after it",
                op.kind()
            ))
        }
        LayerOp::Conv2d { filters, kernel, stride, padding, dilation, groups, .. } => {
            let (h, w, c) = image_shape(input, "conv")?;
            if *groups == 0 || c % groups != 0 || filters % groups != 0 {
                return Err(format!(
                    "groups {groups} must divide both the input channels ({c}) and the filters ({filters})"
                ));
            }
            if stride.contains(&0) || dilation.contains(&0) || kernel.contains(&0) {
                return Err("kernel, stride and dilation must be at least 1".into());
            }
            let eff = [
                mul(dilation[0], kernel[0] - 1)? + 1,
                mul(dilation[1], kernel[1] - 1)? + 1,
            ];
            let oh = spatial_out(h, eff[0], stride[0], *padding)
                .map_err(|m| format!("{}x{} conv on a {h}x{w} feature map: {m}", kernel[0], kernel[1]))?;
            let ow = spatial_out(w, eff[1], stride[1], *padding)
                .map_err(|m| format!("{}x{} conv on a {h}x{w} feature map: {m}", kernel[0], kernel[1]))?;
            let per_filter = mul(mul(kernel[0], kernel[1])?, c / groups)?;
            let params = mul(per_filter, *filters)? + filters;
            let flops = mul(2, mul(mul(mul(oh, ow)?, *filters)?, per_filter)?)? as u64;
            mul(mul(oh, ow)?, *filters)?;
            Ok((vec![oh, ow, *filters], params, flops))
        }
        LayerOp::Dense { units, .. } => match input.as_slice() {
            [features] => {
                let weights = mul(*features, *units)?;
                Ok((vec![*units], weights + units, mul(2, weights)? as u64))
            }
            _ => Err(format!(
                "dense needs a flat input but gets {} (add `flatten` or `global_avg_pool` before it)",
                fmt_shape(input)
            )),
        },
        LayerOp::MaxPool { size, stride, padding } | LayerOp::AvgPool { size, stride, padding } => {
            let (h, w, c) = image_shape(input, "pooling")?;
            if stride.contains(&0) || size.contains(&0) {
                return Err("pool size and stride must be at least 1".into());
            }
            let positions = mul(size[0], size[1])?;
            if matches!(op, LayerOp::MaxPool { .. }) && positions > MAX_POOL_WINDOW {
                return Err(format!(
                    "a {}x{} max pool has {positions} window positions; at most {} are supported \
                     (training stores the position of each maximum in one byte): use a smaller \
                     window, or `globalavgpool` for a pool over the whole map",
                    size[0],
                    size[1],
                    MAX_POOL_WINDOW
                ));
            }
            let oh = spatial_out(h, size[0], stride[0], *padding)
                .map_err(|m| format!("{}x{} pool on a {h}x{w} feature map: {m}", size[0], size[1]))?;
            let ow = spatial_out(w, size[1], stride[1], *padding)
                .map_err(|m| format!("{}x{} pool on a {h}x{w} feature map: {m}", size[0], size[1]))?;
            let flops = mul(mul(mul(mul(oh, ow)?, c)?, size[0])?, size[1])?;
            Ok((vec![oh, ow, c], 0, flops as u64))
        }
        LayerOp::GlobalAvgPool => {
            let (_, _, c) = image_shape(input, "global average pooling")?;
            Ok((vec![c], 0, elements as u64))
        }
        LayerOp::BatchNorm { .. } => {
            let channels = *input.last().ok_or("batchnorm needs a non-empty input")?;
            Ok((input.clone(), mul(2, channels)?, mul(4, elements)? as u64))
        }
        LayerOp::Dropout { rate } => {
            if !(0.0..1.0).contains(rate) {
                return Err(format!("dropout rate {rate} must be in [0, 1)"));
            }
            Ok((input.clone(), 0, elements as u64))
        }
        LayerOp::Flatten => Ok((vec![elements], 0, 0)),
        LayerOp::Activation(_) => Ok((input.clone(), 0, elements as u64)),
        LayerOp::Upsample { factor } => {
            let (h, w, c) = image_shape(input, "upsampling")?;
            if *factor == 0 {
                return Err("upsampling factor must be at least 1".into());
            }
            let (oh, ow) = (mul(h, *factor)?, mul(w, *factor)?);
            mul(mul(oh, ow)?, c)?;
            Ok((vec![oh, ow, c], 0, 0))
        }
        LayerOp::Add | LayerOp::Concat | LayerOp::Multiply | LayerOp::WeightedSum { .. } => {
            unreachable!("joins are inferred by `infer`")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conv(filters: usize, k: usize) -> LayerOp {
        LayerOp::Conv2d {
            filters,
            kernel: [k, k],
            stride: [1, 1],
            padding: Padding::Valid,
            dilation: [1, 1],
            groups: 1,
            activation: Activation::Relu,
            regularizer: Regularizer::default(),
        }
    }

    fn pool() -> LayerOp {
        LayerOp::MaxPool {
            size: [2, 2],
            stride: [2, 2],
            padding: Padding::Valid,
        }
    }

    #[test]
    fn design_net_shapes_params_and_flops() {
        // DESIGN.md's benchmark net: 69.3 MFLOP per image forward.
        let ops = vec![
            conv(32, 3),
            pool(),
            conv(64, 3),
            pool(),
            conv(128, 3),
            pool(),
            LayerOp::Flatten,
            LayerOp::Dense {
                units: 128,
                activation: Activation::Relu,
                regularizer: Regularizer::default(),
            },
            LayerOp::Dense {
                units: 10,
                activation: Activation::Softmax,
                regularizer: Regularizer::default(),
            },
        ];
        let ir = ModelIr::build(
            "net",
            vec![69, 69, 3],
            ops.into_iter().map(|o| (None, o)).collect(),
        )
        .unwrap();
        assert_eq!(ir.layers[6].output, vec![4608]);
        assert_eq!(ir.output(), &vec![10]);
        assert_eq!(ir.layers[0].name, "conv2d_1");
        assert_eq!(ir.layers[4].name, "conv2d_3");
        assert_eq!(ir.layers[0].params, 3 * 3 * 3 * 32 + 32);
        let mflop = ir
            .layers
            .iter()
            .filter(|l| matches!(l.op, LayerOp::Conv2d { .. } | LayerOp::Dense { .. }))
            .map(|l| l.flops)
            .sum::<u64>() as f64
            / 1e6;
        assert!((mflop - 69.3).abs() < 0.1, "{mflop}");
    }

    #[test]
    fn oversized_kernel_and_unflattened_dense_are_errors() {
        let err = ModelIr::build("m", vec![4, 4, 8], vec![(None, conv(8, 7))]).unwrap_err();
        assert_eq!(err.layer(), Some(0));
        assert!(err.to_string().contains("7x7 conv on a 4x4"), "{err}");
        let dense = LayerOp::Dense {
            units: 3,
            activation: Activation::Linear,
            regularizer: Regularizer::default(),
        };
        let err = ModelIr::build("m", vec![4, 4, 8], vec![(None, dense)]).unwrap_err();
        assert!(err.to_string().contains("flatten"));
    }

    fn spec(name: &str, op: LayerOp, from: &[&str]) -> LayerSpec {
        LayerSpec {
            name: Some(name.into()),
            op,
            from: from.iter().map(|s| s.to_string()).collect(),
            share: None,
        }
    }

    fn same_conv(filters: usize) -> LayerOp {
        match conv(filters, 3) {
            LayerOp::Conv2d {
                filters,
                kernel,
                stride,
                dilation,
                groups,
                activation,
                regularizer,
                ..
            } => LayerOp::Conv2d {
                filters,
                kernel,
                stride,
                padding: Padding::Same,
                dilation,
                groups,
                activation,
                regularizer,
            },
            _ => unreachable!(),
        }
    }

    #[test]
    fn residual_graph_builds_in_reading_order_and_keeps_chain_json() {
        // `join` is written before `b`, which it reads: the IR puts `b` first.
        let ir = ModelIr::build_graph(
            "res",
            vec![8, 8, 4],
            vec![
                spec("a", same_conv(4), &[]),
                spec("join", LayerOp::Add, &["b", "input"]),
                spec("b", same_conv(4), &["a"]),
                spec("cat", LayerOp::Concat, &["join", "a"]),
            ],
            vec![],
        )
        .unwrap();
        let names: Vec<&str> = ir.layers.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "join", "cat"]);
        assert_eq!(ir.layers[2].inputs, [Source::Layer(1), Source::Input]);
        assert_eq!(ir.layers[3].output, vec![8, 8, 8]);
        assert_eq!(ir.outputs, vec![3]);
        assert!(!ir.is_chain());
        // Frozen up to `cat` would need it on every path: it is (the only output).
        assert_eq!(ir.path_avoiding(3), None);
        // `a` is not: input → join → cat avoids it.
        assert_eq!(ir.path_avoiding(0), Some(vec![2, 3]));
        assert_eq!(ir.ancestors(2), vec![0, 1]);
        let json = serde_json::to_string(&ir).unwrap();
        assert!(json.contains(r#""from":["b","input"]"#), "{json}");
        let back: ModelIr = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ir);

        // A chain serialises without `from` or `outputs`, as before graphs.
        let chain = ModelIr::build(
            "c",
            vec![8, 8, 4],
            vec![(None, same_conv(2)), (None, pool())],
        )
        .unwrap();
        assert!(chain.is_chain());
        let json = serde_json::to_string(&chain).unwrap();
        assert!(
            !json.contains("from") && !json.contains("outputs"),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<ModelIr>(&json).unwrap(), chain);
    }

    #[test]
    fn graph_errors_name_the_layers() {
        let build = |specs: Vec<LayerSpec>, outputs: Vec<&str>| {
            ModelIr::build_graph(
                "m",
                vec![8, 8, 4],
                specs,
                outputs.into_iter().map(String::from).collect(),
            )
            .unwrap_err()
        };
        let err = build(vec![spec("a", same_conv(4), &["nope"])], vec![]);
        assert_eq!(
            err,
            GraphError::UnknownSource {
                layer: 0,
                name: "nope".into()
            }
        );
        let err = build(
            vec![
                spec("a", same_conv(4), &["c"]),
                spec("b", same_conv(4), &["a"]),
                spec("c", same_conv(4), &["b"]),
            ],
            vec![],
        );
        assert_eq!(
            err,
            GraphError::Cycle {
                layers: vec![0, 1, 2]
            }
        );
        let err = build(
            vec![
                spec("a", same_conv(4), &[]),
                spec("lost", same_conv(4), &["a"]),
                spec("b", same_conv(4), &["a"]),
            ],
            vec![],
        );
        assert_eq!(err, GraphError::Unused { layer: 1 });
        let err = build(
            vec![
                spec("a", same_conv(8), &[]),
                spec("sum", LayerOp::Add, &["a", "input"]),
            ],
            vec![],
        );
        let GraphError::Shape {
            layer: 1,
            message,
            other: None,
        } = &err
        else {
            panic!("{err:?}");
        };
        assert!(
            message.contains("`a` (8 x 8 x 8)") && message.contains("`input` (8 x 8 x 4)"),
            "{message}"
        );
        let err = build(
            vec![
                spec("a", pool(), &[]),
                spec("b", same_conv(2), &["input"]),
                spec("cat", LayerOp::Concat, &["a", "b"]),
            ],
            vec![],
        );
        let GraphError::Shape {
            layer: 2,
            message,
            other: Some(1),
        } = &err
        else {
            panic!("{err:?}");
        };
        assert!(
            message.contains("4 x 4 x 4") && message.contains("8 x 8 x 2"),
            "{message}"
        );
        let err = build(vec![spec("sum", LayerOp::Add, &[])], vec![]);
        assert!(err.to_string().contains("`from: [a, b]`"), "{err}");
        let err = build(vec![spec("a", same_conv(4), &[])], vec!["z"]);
        assert_eq!(err, GraphError::UnknownOutput { name: "z".into() });
    }

    #[test]
    fn two_outputs_and_broadcast_multiply() {
        let se = |units| LayerOp::Dense {
            units,
            activation: Activation::Sigmoid,
            regularizer: Regularizer::default(),
        };
        let ir = ModelIr::build_graph(
            "se",
            vec![6, 6, 4],
            vec![
                spec("trunk", same_conv(4), &[]),
                spec("squeeze", LayerOp::GlobalAvgPool, &[]),
                spec("excite", se(4), &[]),
                spec("scaled", LayerOp::Multiply, &["trunk", "excite"]),
                spec("head_a", LayerOp::GlobalAvgPool, &[]),
                spec("head_b", LayerOp::Flatten, &["trunk"]),
            ],
            vec!["head_a".into(), "head_b".into()],
        )
        .unwrap();
        assert_eq!(ir.outputs, vec![4, 5]);
        assert_eq!(ir.output(), &vec![4]);
        assert_eq!(ir.layers[3].output, vec![6, 6, 4]);
        let json = serde_json::to_string(&ir).unwrap();
        assert!(json.contains(r#""outputs":["head_a","head_b"]"#), "{json}");
        assert_eq!(serde_json::from_str::<ModelIr>(&json).unwrap(), ir);
        // A swish fused into a conv cannot be differentiated from its output.
        let fused = LayerOp::Dense {
            units: 2,
            activation: Activation::Swish,
            regularizer: Regularizer::default(),
        };
        let err = ModelIr::build("m", vec![3], vec![(None, fused)]).unwrap_err();
        assert!(err.to_string().contains("as a layer of its own"), "{err}");
    }

    #[test]
    fn same_padding_rounds_up() {
        let op = LayerOp::MaxPool {
            size: [2, 2],
            stride: [2, 2],
            padding: Padding::Same,
        };
        let ir = ModelIr::build("m", vec![5, 5, 1], vec![(None, op)]).unwrap();
        assert_eq!(ir.output(), &vec![3, 3, 1]);
    }

    #[test]
    fn max_pool_windows_fit_a_byte() {
        let op = |kind: &str, size: [usize; 2]| {
            let (stride, padding) = ([1, 1], Padding::Valid);
            if kind == "max" {
                LayerOp::MaxPool {
                    size,
                    stride,
                    padding,
                }
            } else {
                LayerOp::AvgPool {
                    size,
                    stride,
                    padding,
                }
            }
        };
        let build = |op| ModelIr::build("m", vec![20, 20, 1], vec![(None, op)]);
        assert_eq!(build(op("max", [16, 16])).unwrap().output(), &vec![5, 5, 1]);
        let err = build(op("max", [17, 16])).unwrap_err().to_string();
        assert!(
            err.contains("17x16 max pool has 272 window positions"),
            "{err}"
        );
        assert!(err.contains("at most 256"), "{err}");
        // Average pooling stores no argmax.
        assert_eq!(build(op("avg", [17, 16])).unwrap().output(), &vec![4, 5, 1]);
    }

    fn sharing(name: &str, op: LayerOp, from: &[&str], owner: &str) -> LayerSpec {
        LayerSpec {
            share: Some(owner.into()),
            ..spec(name, op, from)
        }
    }

    #[test]
    fn shared_layers_own_no_weights_and_serialise_by_name() {
        // Three levels of different sizes; p5's head names p4's, which shares p3's.
        let ir = ModelIr::build_graph(
            "heads",
            vec![8, 8, 4],
            vec![
                spec("p3", same_conv(4), &[]),
                spec("p4", pool(), &[]),
                spec("p5", pool(), &[]),
                spec("cls_p3", same_conv(6), &["p3"]),
                sharing("cls_p4", same_conv(6), &["p4"], "cls_p3"),
                sharing("cls_p5", same_conv(6), &["p5"], "cls_p4"),
            ],
            vec!["cls_p3".into(), "cls_p4".into(), "cls_p5".into()],
        )
        .unwrap();
        assert_eq!(ir.layers[4].shares, Some(3));
        assert_eq!(ir.layers[5].shares, Some(3), "resolved to the owner");
        assert_eq!(ir.layers[3].params, 3 * 3 * 4 * 6 + 6);
        assert_eq!((ir.layers[4].params, ir.layers[5].params), (0, 0));
        assert_eq!(ir.layers[5].output, vec![2, 2, 6]);
        assert_eq!(ir.total_params(), (3 * 3 * 4 * 4 + 4) + (3 * 3 * 4 * 6 + 6));
        let json = serde_json::to_string(&ir).unwrap();
        assert_eq!(json.matches(r#""share":"cls_p3""#).count(), 2, "{json}");
        let back: ModelIr = serde_json::from_str(&json).unwrap();
        assert_eq!(back, ir);
        let (specs, _) = ir.specs();
        assert_eq!(specs[5].share.as_deref(), Some("cls_p3"));
        // Layers that share nothing write no `share` key.
        let plain = serde_json::to_string(
            &ModelIr::build("c", vec![8, 8, 4], vec![(None, pool())]).unwrap(),
        )
        .unwrap();
        assert!(!plain.contains("share"), "{plain}");
        // A stored share must name an earlier layer.
        let bad = json.replacen(r#""share":"cls_p3""#, r#""share":"cls_p5""#, 1);
        let err = serde_json::from_str::<ModelIr>(&bad).unwrap_err();
        assert!(err.to_string().contains("not an earlier layer"), "{err}");
    }

    #[test]
    fn sharing_needs_an_earlier_layer_with_weights_of_one_shape() {
        let build = |head: LayerSpec| {
            ModelIr::build_graph(
                "m",
                vec![8, 8, 4],
                vec![
                    spec("p3", same_conv(4), &[]),
                    spec("wide", same_conv(8), &["input"]),
                    spec("cls_p3", same_conv(6), &["p3"]),
                    head,
                ],
                vec!["cls_p3".into(), "head".into(), "wide".into()],
            )
        };
        let message = |head| match build(head) {
            Err(GraphError::Share {
                layer: 3, message, ..
            }) => message,
            other => panic!("{other:?}"),
        };
        // Same kernel on a wider input: the weights differ.
        let m = message(sharing("head", same_conv(6), &["wide"], "cls_p3"));
        assert!(
            m.contains("3 x 3 x 8 x 6") && m.contains("3 x 3 x 4 x 6"),
            "{m}"
        );
        let m = message(sharing("head", same_conv(5), &["p3"], "cls_p3"));
        assert!(m.contains("3 x 3 x 4 x 5"), "{m}");
        let bn = LayerOp::BatchNorm {
            momentum: 0.99,
            epsilon: 1e-3,
        };
        let m = message(sharing("head", bn, &["p3"], "cls_p3"));
        assert!(m.contains("only conv and dense"), "{m}");
        let m = message(sharing("head", same_conv(6), &["p3"], "head"));
        assert!(m.contains("its own"), "{m}");
        let LayerOp::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            activation,
            ..
        } = same_conv(6)
        else {
            unreachable!()
        };
        let penalised = LayerOp::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            dilation,
            groups,
            activation,
            regularizer: Regularizer { l1: 0.0, l2: 0.1 },
        };
        let m = message(sharing("head", penalised, &["p3"], "cls_p3"));
        assert!(m.contains("penalty"), "{m}");
        // Strides may differ: only the weights must agree.
        let LayerOp::Conv2d {
            filters,
            kernel,
            padding,
            dilation,
            groups,
            activation,
            regularizer,
            ..
        } = same_conv(6)
        else {
            unreachable!()
        };
        let strided = LayerOp::Conv2d {
            filters,
            kernel,
            stride: [2, 2],
            padding,
            dilation,
            groups,
            activation,
            regularizer,
        };
        assert!(build(sharing("head", strided, &["p3"], "cls_p3")).is_ok());
        assert_eq!(
            build(sharing("head", same_conv(6), &["p3"], "cls")).unwrap_err(),
            GraphError::UnknownShare {
                layer: 3,
                name: "cls".into()
            }
        );
        // The shared layer must come first in reading order.
        let err = ModelIr::build_graph(
            "m",
            vec![8, 8, 4],
            vec![
                sharing("a", same_conv(4), &[], "b"),
                spec("b", same_conv(4), &["a"]),
            ],
            vec![],
        )
        .unwrap_err();
        assert!(
            matches!(&err, GraphError::Share { layer: 0, owner: 1, message, .. } if message.contains("does not come before")),
            "{err:?}"
        );
    }
}
