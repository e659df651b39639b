//! `Network`: a model IR compiled into a `Model` (layers and parameters) and its luminal
//! graphs, one per (batch size, mode), compiled the first time that pair runs and
//! executed for every later batch (see `nn::graph`). Parameters, running statistics and
//! optimizer state live in the model and persist across executions and graphs.

use super::error::EngineError;
use super::graph::{compile, Compiled, LossKind, Mode};
use super::ir::ModelIr;
use super::model::{Head, Model, Param};
use super::ops::activation;
use super::optim::OptimizerConfig;
use crate::nn::learner::{Batch, Learner, NamedTensors, StepStats, Target, Tensor};
use std::cell::{Ref, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

/// Largest batch `predict` runs at once; longer inputs are processed in chunks of this size.
const PREDICT_CHUNK: usize = 64;

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
    model: Rc<RefCell<Model>>,
    optimizer: OptimizerConfig,
    graphs: HashMap<(usize, Mode), Compiled>,
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
        let mut model = Model::build(ir, seed)?;
        let slots = optimizer.slots().len();
        for p in model.params.iter_mut().filter(|p| p.trainable) {
            p.slots = (0..slots).map(|_| vec![0.0; p.value.len()]).collect();
        }
        Ok(Network {
            ir: ir.clone(),
            model: Rc::new(RefCell::new(model)),
            optimizer,
            graphs: HashMap::new(),
        })
    }

    pub fn ir(&self) -> &ModelIr {
        &self.ir
    }
    pub fn seed(&self) -> u64 {
        self.model.borrow().seed
    }
    pub fn optimizer(&self) -> OptimizerConfig {
        self.optimizer
    }
    /// Optimizer steps taken so far.
    pub fn step(&self) -> u64 {
        self.model.borrow().step
    }
    pub fn params(&self) -> Ref<'_, [Param]> {
        Ref::map(self.model.borrow(), |m| m.params.as_slice())
    }
    /// Gradient of the last training step for parameter `name` (None for running statistics).
    pub fn gradient(&self, name: &str) -> Option<Vec<f32>> {
        self.model
            .borrow()
            .params
            .iter()
            .find(|p| p.name == name && p.trainable)
            .map(|p| p.grad.clone())
    }
    /// Replaces one parameter's values (weight import); the shape must match.
    pub fn set_param(&mut self, name: &str, value: &[f32]) -> Result<(), EngineError> {
        let mut model = self.model.borrow_mut();
        let p = model
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

    /// The first output's class count (what `predict` returns per image).
    fn classes(&self) -> usize {
        self.model.borrow().head().classes
    }

    /// The model's outputs by layer name, in order.
    pub fn output_names(&self) -> Vec<String> {
        self.ir
            .outputs
            .iter()
            .map(|&o| self.ir.layers[o].name.clone())
            .collect()
    }

    /// The graph of (`n`, `mode`), compiled on first use.
    fn graph(&mut self, n: usize, mode: Mode) -> &mut Compiled {
        let (model, input_len) = (&self.model, self.input_len());
        self.graphs
            .entry((n, mode))
            .or_insert_with(|| compile(model, input_len, n, mode))
    }

    /// Whether graphs fuse each convolution with the batchnorm after it (on unless turned
    /// off; the results are the same bits either way, the fused graphs make fewer passes over
    /// memory). Graphs already compiled are dropped.
    pub fn set_fusion(&mut self, on: bool) {
        self.model.borrow_mut().fusion = on;
        self.graphs.clear();
    }

    /// Number of luminal nodes in the graph of (`n`, train or inference), once compiled.
    pub fn graph_nodes(&self, n: usize, train: bool) -> Option<usize> {
        let mode = if train { Mode::Train } else { Mode::Infer };
        self.graphs
            .get(&(n, mode))
            .map(|g| g.graph.graph.node_count())
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

    /// Forward and backward without an optimizer update: returns the loss (the sum of every
    /// output's loss, each of the kind its target names, with penalties) and leaves every
    /// gradient readable through `gradient()`. `train_batch` is this plus the update.
    /// Accuracy counts the first output when its target is class labels.
    pub fn compute_gradients(&mut self, batch: &Batch) -> Result<StepStats, EngineError> {
        let n = batch.len();
        self.check_images(batch.images, n)?;
        let heads = self.model.borrow().heads.clone();
        let names = self.output_names();
        if batch.targets.len() != heads.len() {
            return Err(EngineError::Batch {
                what: "targets (one per model output)",
                expected: heads.len(),
                got: batch.targets.len(),
            });
        }
        for ((target, head), name) in batch.targets.iter().zip(&heads).zip(&names) {
            check_target(target, head, name, n)?;
        }
        let model = self.model.clone();
        let g = self.graph(n, Mode::Train);
        g.input.borrow_mut().copy_from_slice(batch.images);
        for (t, target) in g.targets.iter().zip(&batch.targets) {
            t.weights.borrow_mut().copy_from_slice(batch.weights);
            let refill = |to: &RefCell<Vec<i32>>, from: &[i32]| {
                let mut to = to.borrow_mut();
                to.clear();
                to.extend_from_slice(from);
            };
            t.kind.set(match *target {
                Target::Classes {
                    labels,
                    label_smoothing,
                } => {
                    t.labels.borrow_mut().copy_from_slice(labels);
                    LossKind::Classes {
                        smoothing: label_smoothing,
                    }
                }
                Target::Anchors {
                    labels,
                    classes,
                    alpha,
                    gamma,
                } => {
                    refill(&t.anchor_labels, labels);
                    LossKind::Focal {
                        classes,
                        alpha,
                        gamma,
                    }
                }
                Target::Boxes {
                    values,
                    labels,
                    beta,
                } => {
                    refill(&t.anchor_labels, labels);
                    let mut boxes = t.boxes.borrow_mut();
                    boxes.clear();
                    boxes.extend_from_slice(values);
                    LossKind::Boxes { beta }
                }
            });
        }
        g.graph.execute();
        g.steps += 1;
        let mut model = model.borrow_mut();
        let total = g.targets.iter().map(|t| t.loss.get()).sum::<f64>() + model.penalty();
        if !total.is_finite() {
            return Err(EngineError::NonFiniteLoss { loss: total });
        }
        let correct = match batch.labels() {
            Some(labels) => {
                let first = &g.targets[0];
                first
                    .probs
                    .borrow()
                    .chunks(first.classes)
                    .zip(labels)
                    .filter(|(p, &l)| activation::argmax(p) == l as usize)
                    .count()
            }
            None => 0,
        };
        model.sum_shared_gradients();
        model.penalty_backward();
        // Running statistics move only once the step is known to be finite.
        for (i, scratch) in g.ctx.scratch.iter().enumerate() {
            model.update_running_stats(i, &scratch.borrow());
        }
        Ok(StepStats {
            loss: total,
            correct,
        })
    }

    /// Each output's loss in the last training step with batch `n` (without penalties).
    pub fn output_losses(&self, n: usize) -> Option<Vec<f64>> {
        let g = self.graphs.get(&(n, Mode::Train))?;
        Some(g.targets.iter().map(|t| t.loss.get()).collect())
    }

    /// Times every layer's forward and backward kernels from now on (see `profile`).
    pub fn set_profiling(&mut self, on: bool) {
        self.model.borrow_mut().profiling = on;
        for g in self.graphs.values_mut() {
            g.ctx
                .times
                .borrow_mut()
                .iter_mut()
                .for_each(|t| *t = [0.0; 2]);
            g.steps = 0;
        }
    }

    /// Mean seconds per training step (`train`) or inference batch of each layer, (name,
    /// forward, backward), for the most profiled batch size. In inference a fused convolution
    /// and batchnorm count as the convolution; in training each keeps its own share.
    pub fn profile(&self, train: bool) -> Vec<(String, f64, f64)> {
        let mode = if train { Mode::Train } else { Mode::Infer };
        let Some(g) = self
            .graphs
            .iter()
            .filter(|((_, m), _)| *m == mode)
            .map(|(_, g)| g)
            .max_by_key(|g| g.steps)
        else {
            return Vec::new();
        };
        let steps = g.steps.max(1) as f64;
        self.ir
            .layers
            .iter()
            .zip(g.ctx.times.borrow().iter())
            .map(|(l, t)| (l.name.clone(), t[0] / steps, t[1] / steps))
            .collect()
    }

    /// The last training step's first output (logits when the softmax is fused), `[n, classes]`.
    pub fn train_outputs(&self, n: usize) -> Option<Vec<f32>> {
        self.train_output(n, 0)
    }

    /// Output `k` of the last training step (logits when its softmax is fused).
    pub fn train_output(&self, n: usize, k: usize) -> Option<Vec<f32>> {
        let g = self.graphs.get(&(n, Mode::Train))?;
        let head = *self.model.borrow().heads.get(k)?;
        let out = g.outputs[head.layer].borrow().clone();
        Some(out)
    }

    /// Applies the optimizer to the gradients of the last `compute_gradients`.
    pub fn apply_gradients(&mut self, lr: f32) {
        let mut model = self.model.borrow_mut();
        model.step += 1;
        let (optimizer, step) = (self.optimizer, model.step);
        for p in model.params.iter_mut().filter(|p| p.trainable) {
            optimizer.update(step, lr, &mut p.value, &p.grad, &mut p.slots);
        }
    }

    /// The first output before its fused softmax for `n` images (inference mode), `[n, classes]`.
    pub fn logits(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>, EngineError> {
        Ok(self.all_logits(images, n)?.swap_remove(0))
    }

    /// The first output as the model defines it for `n` images (inference mode): class
    /// probabilities when its softmax is fused, `[n, classes]`.
    pub fn probabilities(&mut self, images: &[f32], n: usize) -> Result<Vec<f32>, EngineError> {
        let mut out = self.logits(images, n)?;
        let (fused, classes) = {
            let head = self.model.borrow().head();
            (head.fused_softmax, head.classes)
        };
        if fused {
            for row in out.chunks_mut(classes) {
                activation::softmax_row(row);
            }
        }
        Ok(out)
    }

    /// Every output as the model defines it for `n` images (inference mode), in output order:
    /// `all_logits` with the softmax applied to the outputs whose softmax is fused.
    pub fn all_outputs(&mut self, images: &[f32], n: usize) -> Result<Vec<Vec<f32>>, EngineError> {
        let mut out = self.all_logits(images, n)?;
        let heads = self.model.borrow().heads.clone();
        for (values, head) in out.iter_mut().zip(&heads) {
            if head.fused_softmax {
                for row in values.chunks_mut(head.classes) {
                    activation::softmax_row(row);
                }
            }
        }
        Ok(out)
    }

    /// Every output before its fused softmax for `n` images (inference mode), in output
    /// order, each `[n, classes_k]`.
    pub fn all_logits(&mut self, images: &[f32], n: usize) -> Result<Vec<Vec<f32>>, EngineError> {
        self.check_images(images, n)?;
        let heads = self.model.borrow().heads.clone();
        let mut out: Vec<Vec<f32>> = heads
            .iter()
            .map(|h| Vec::with_capacity(n * h.classes))
            .collect();
        let chunk = n.clamp(1, PREDICT_CHUNK);
        let per = self.input_len();
        let g = self.graph(chunk, Mode::Infer);
        for start in (0..n).step_by(chunk) {
            let end = (start + chunk).min(n);
            {
                // A short last chunk is zero-padded: inference treats samples independently.
                let mut input = g.input.borrow_mut();
                let part = &images[start * per..end * per];
                input[..part.len()].copy_from_slice(part);
                input[part.len()..].fill(0.0);
            }
            g.graph.execute();
            g.steps += 1;
            for (o, head) in out.iter_mut().zip(&heads) {
                let logits = g.outputs[head.layer].borrow();
                o.extend_from_slice(&logits[..(end - start) * head.classes]);
            }
        }
        Ok(out)
    }

    /// Gradient of `objective = Σ output_grad · logits` of the first output (inference mode) w.r.t. the output of
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
        let head = self.model.borrow().head();
        self.objective_gradients(images, n, head.layer, output_grad, layer)
    }

    /// Gradient of `Σ seed · output(objective)` w.r.t. the output of layer `wrt` (or the input
    /// images when None), in inference mode: the first output's logits for attribution maps,
    /// any layer's output for filter visualisation (a seed selecting one channel).
    pub fn objective_gradients(
        &mut self,
        images: &[f32],
        n: usize,
        objective: usize,
        seed: &[f32],
        wrt: Option<usize>,
    ) -> Result<ActivationGradients, EngineError> {
        self.check_images(images, n)?;
        let classes = self.classes();
        let layers = self.ir.layers.len();
        for l in std::iter::once(objective).chain(wrt) {
            if l >= layers {
                return Err(EngineError::Shape {
                    layer: format!("#{l}"),
                    message: format!("the model has {layers} layers"),
                });
            }
        }
        let seed_len: usize = n * self.ir.layers[objective].output.iter().product::<usize>();
        if seed.len() != seed_len {
            return Err(EngineError::Batch {
                what: "objective seed",
                expected: seed_len,
                got: seed.len(),
            });
        }
        let shape = match wrt {
            Some(l) => self.ir.layers[l].output.clone(),
            None => self.ir.input.clone(),
        };
        let head = self.model.borrow().head();
        let g = self.graph(n, Mode::Explain { objective, wrt });
        g.input.borrow_mut().copy_from_slice(images);
        let buffer = g.seed.as_ref().expect("explanation graphs have a seed");
        buffer.borrow_mut().copy_from_slice(seed);
        g.graph.execute();
        g.steps += 1;
        let activations = match wrt {
            Some(l) => g.outputs[l].borrow().clone(),
            None => images.to_vec(),
        };
        let Some(captured) = g.captured.as_ref() else {
            return Err(EngineError::Shape {
                layer: wrt.map_or("input".into(), |l| self.ir.layers[l].name.clone()),
                message: "the objective does not depend on this layer".into(),
            });
        };
        let gradients = captured.borrow().clone();
        let full: Vec<usize> = std::iter::once(n).chain(shape).collect();
        let logits = Tensor {
            shape: vec![n, classes],
            data: g.outputs[head.layer].borrow().clone(),
        };
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
        let k = self.classes();
        let mut seed = vec![0.0; classes.len() * k];
        for (i, &c) in classes.iter().enumerate() {
            if c as usize >= k {
                return Err(EngineError::Label {
                    label: c,
                    classes: k,
                });
            }
            seed[i * k + c as usize] = 1.0;
        }
        self.forward_backward_input(images, classes.len(), &seed, layer)
    }

    /// Memory a step with batch `n` holds (its graph must have run once).
    pub fn memory(&self, n: usize, train: bool) -> MemoryReport {
        let model = self.model.borrow();
        let floats = |f: &dyn Fn(&Param) -> usize| model.params.iter().map(f).sum::<usize>() * 4;
        let mode = if train { Mode::Train } else { Mode::Infer };
        MemoryReport {
            parameters: floats(&|p| p.value.len()),
            gradients: floats(&|p| p.grad.len()),
            optimizer: floats(&|p| p.slots.iter().map(Vec::len).sum()),
            workspace: self
                .graphs
                .get(&(n, mode))
                .map(|g| g.ctx.bytes())
                .unwrap_or(0),
        }
    }

    /// Everything `load_state` needs for a bit-exact resume.
    pub fn named_state(&self) -> NamedTensors {
        let model = self.model.borrow();
        let mut out = NamedTensors::new();
        for p in &model.params {
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
        let step = model.step;
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
        let mut model = self.model.borrow_mut();
        for p in &model.params {
            let t = state
                .get(&p.name)
                .ok_or_else(|| EngineError::MissingTensor {
                    name: p.name.clone(),
                })?;
            check(&p.name, &p.shape, t)?;
        }
        let slots = self.optimizer.slots();
        for p in model.params.iter_mut() {
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
        model.step = match state.get("optimizer/iterations") {
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

/// Checks one output's target against the output and the batch size `n`.
fn check_target(target: &Target, head: &Head, name: &str, n: usize) -> Result<(), EngineError> {
    let refuse = |given: String, reason: String| EngineError::Targets {
        output: name.to_string(),
        given,
        reason,
    };
    let length = |what: &'static str, expected: usize, got: usize| {
        if expected == got {
            Ok(())
        } else {
            Err(EngineError::Batch {
                what,
                expected,
                got,
            })
        }
    };
    // The loss reads the output before a fused softmax, so only class targets may have one.
    let logits_only = |loss: &str| {
        if head.fused_softmax {
            Err(refuse(
                target.kind().to_string(),
                format!("the output ends in softmax, and the {loss} loss wants raw values (logits): give `{name}` a linear activation"),
            ))
        } else {
            Ok(())
        }
    };
    // Box targets only tell positives (≥ 1) from the rest, so any class id is theirs to name.
    let anchor_labels = |labels: &[i32], classes: Option<usize>| {
        let max = classes.map_or(i32::MAX, |c| c as i32);
        match labels.iter().find(|&&l| l < -1 || l > max) {
            Some(&l) => Err(refuse(
                format!("anchor label {l}"),
                match classes {
                    Some(c) => format!("anchor labels are −1 (ignored), 0 (background) or 1..={c} (class + 1) for {c} classes"),
                    None => "anchor labels are −1 (ignored), 0 (background) or a class + 1".into(),
                },
            )),
            None => Ok(()),
        }
    };
    match *target {
        Target::Classes {
            labels,
            label_smoothing,
        } => {
            length("labels", n, labels.len())?;
            if let Some(&label) = labels.iter().find(|&&l| l as usize >= head.classes) {
                return Err(EngineError::Label {
                    label,
                    classes: head.classes,
                });
            }
            if !(0.0..=1.0).contains(&label_smoothing) {
                return Err(refuse(
                    format!("label smoothing {label_smoothing}"),
                    "label smoothing must be in [0, 1]".into(),
                ));
            }
        }
        Target::Anchors {
            labels,
            classes,
            alpha,
            gamma,
        } => {
            logits_only("focal")?;
            if classes == 0 || !head.classes.is_multiple_of(classes) {
                return Err(refuse(
                    format!("{classes} classes per anchor"),
                    format!(
                        "the output has {} values per image, not a multiple of the classes",
                        head.classes
                    ),
                ));
            }
            length("anchor labels", n * head.classes / classes, labels.len())?;
            anchor_labels(labels, Some(classes))?;
            if !((0.0..=1.0).contains(&alpha) && gamma >= 0.0 && gamma.is_finite()) {
                return Err(refuse(
                    format!("focal α {alpha}, γ {gamma}"),
                    "α must be in [0, 1] and γ a finite value ≥ 0".into(),
                ));
            }
        }
        Target::Boxes {
            values,
            labels,
            beta,
        } => {
            logits_only("box")?;
            if !head.classes.is_multiple_of(4) {
                return Err(refuse(
                    "boxes".into(),
                    format!(
                        "the output has {} values per image, not 4 per anchor",
                        head.classes
                    ),
                ));
            }
            length("box values", n * head.classes, values.len())?;
            length("anchor labels", n * head.classes / 4, labels.len())?;
            anchor_labels(labels, None)?;
            if !(beta >= 0.0 && beta.is_finite()) {
                return Err(refuse(
                    format!("smooth-L1 β {beta}"),
                    "β must be a finite value ≥ 0".into(),
                ));
            }
        }
    }
    Ok(())
}

impl Learner for Network {
    fn classes(&self) -> usize {
        Network::classes(self)
    }

    fn train_batch(&mut self, batch: &Batch, lr: f32) -> miette::Result<StepStats> {
        let stats = self.compute_gradients(batch)?;
        self.apply_gradients(lr);
        Ok(stats)
    }

    fn predict(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<f32>> {
        Ok(self.probabilities(images, n)?)
    }

    fn outputs(&mut self, images: &[f32], n: usize) -> miette::Result<Vec<Vec<f32>>> {
        Ok(self.all_outputs(images, n)?)
    }

    fn state(&self) -> NamedTensors {
        self.named_state()
    }

    fn load_state(&mut self, state: &NamedTensors) -> miette::Result<()> {
        Ok(self.load_named_state(state)?)
    }
}
