//! The epoch loop: shuffled, weighted, optionally augmented batches prepared on a
//! background thread while the learner computes; validation after each epoch; Keras
//! callbacks; a checkpoint after every completed epoch; resume; cancellation.
//!
//! Determinism: the shuffle of epoch `e` and the augmentation of sample `i` in epoch `e`
//! come from seeds derived from (`seed`, `e`, `i`) alone, never from a running generator,
//! so a resumed run needs no generator position and prepares the very same batches.
//! The learner keeps its own randomness (dropout) in its `state()`.

use crate::data::ImageSet;
use crate::nn::learner::{Batch, Learner, NamedTensors, Target};
use crate::train::callbacks::{Callback, CallbackSpec, CallbackState, EpochLogs};
use crate::train::error::{Result, TrainError};
use crate::train::history::{EpochRecord, History};
use crate::train::weights::{load_safetensors, save_safetensors, Metadata};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Instant;

/// Everything that changes what training computes (so it belongs in the stage fingerprint).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FitConfig {
    pub epochs: usize,
    pub batch_size: usize,
    pub seed: u64,
    /// Reshuffle the training set every epoch (Keras `fit(shuffle=True)`).
    pub shuffle: bool,
    /// The learning rate the optimizer starts with.
    pub learning_rate: f32,
    /// Run in order after each epoch, as Keras runs its callback list.
    pub callbacks: Vec<CallbackSpec>,
    /// Keras `CategoricalCrossentropy(label_smoothing)`: targets y·(1−ε) + ε/K, for the
    /// training loss and the validation loss alike.
    pub label_smoothing: f32,
}

impl Default for FitConfig {
    /// Keras `fit` defaults (batch 32, shuffle) and Adam's default rate.
    fn default() -> Self {
        FitConfig {
            epochs: 1,
            batch_size: 32,
            seed: 0,
            shuffle: true,
            learning_rate: 1e-3,
            callbacks: Vec::new(),
            label_smoothing: 0.0,
        }
    }
}

/// Image augmentation, supplied by the caller (gpl's `data::augment`).
pub trait Augment: Sync {
    /// Writes an augmented copy of `image` (`[height, width, channels]` f32 in [0, 1]) into
    /// `out` (same length). Every random choice must come from `seed`.
    fn augment(&self, image: &[f32], shape: [usize; 3], seed: u64, out: &mut [f32]);
}

impl<F: Fn(&[f32], [usize; 3], u64, &mut [f32]) + Sync> Augment for F {
    fn augment(&self, image: &[f32], shape: [usize; 3], seed: u64, out: &mut [f32]) {
        self(image, shape, seed, out)
    }
}

/// A `.gpl` augment recipe, through the uint8 path Keras takes.
impl Augment for crate::data::augment::AugmentSpec {
    fn augment(&self, image: &[f32], shape: [usize; 3], seed: u64, out: &mut [f32]) {
        crate::data::augment::augment_unit_f32(self, image, shape, seed, out)
    }
}

/// The training set as the loop reads it.
pub struct TrainData<'a> {
    pub images: &'a ImageSet,
    /// Loss weight per class id (Keras `class_weight`); every sample weighs 1 without it.
    pub class_weights: Option<&'a [f32]>,
    pub augment: Option<&'a dyn Augment>,
    /// A detector's anchor targets, which replace the class labels (and `augment`: the
    /// detection samples augment their boxes with their pixels).
    pub detection: Option<&'a dyn DetectionTargets>,
}

/// A detector's training samples and validation, supplied by the caller: per sample the
/// network's input and every anchor's targets, and after each epoch the validation logs.
pub trait DetectionTargets: Sync {
    /// Anchors per image.
    fn anchors(&self) -> usize;
    /// The focal loss's classes, α and γ, and the box loss's smooth-L1 β.
    fn loss(&self) -> DetectionLoss;
    /// Writes training sample `index`'s input (`[0, 1]` floats, the set's image shape), its
    /// anchor labels (-1 ignored, 0 background, c + 1 class c) and box targets (4 per
    /// anchor). `seed` is the sample's augmentation seed for this epoch.
    fn sample(
        &self,
        index: usize,
        seed: u64,
        image: &mut [f32],
        labels: &mut [i32],
        boxes: &mut [f32],
    );
    /// Whether `validate` has a validation set to score.
    fn has_validation(&self) -> bool;
    /// The validation logs of the learner as it is now (`val_loss`, `val_map50`), or
    /// nothing without a validation set.
    fn validate(&self, learner: &mut dyn Learner) -> Result<Option<DetectionLogs>>;
}

/// The loss settings a detection batch carries.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectionLoss {
    pub classes: usize,
    pub alpha: f32,
    pub gamma: f32,
    pub beta: f32,
}

/// A detector's validation numbers after an epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DetectionLogs {
    pub val_loss: f64,
    pub val_map50: f64,
}

/// What the loop reports while it runs, for progress bars.
#[derive(Clone, Debug, PartialEq)]
pub enum EpochProgress {
    /// Training continues from a checkpoint after this many completed epochs.
    Resumed { completed_epochs: usize },
    /// A batch finished; `epoch` and `batch` are 1-based; `loss` is the epoch's running mean.
    Batch {
        epoch: usize,
        batch: usize,
        batches: usize,
        loss: f64,
    },
    /// An epoch finished and (with a checkpoint directory) its checkpoint is on disk.
    Epoch(EpochRecord),
}

/// What a run needs besides its config; none of it changes the result.
#[derive(Default)]
pub struct FitContext<'a> {
    /// Where a checkpoint is kept after every epoch; an existing one is resumed.
    pub checkpoint_dir: Option<&'a Path>,
    /// Checked between batches; when set, `fit` returns `TrainError::Cancelled`.
    pub cancel: Option<&'a AtomicBool>,
    pub progress: Option<&'a mut dyn FnMut(EpochProgress)>,
    /// Batches prepared ahead of the learner (at least 1; 0 means the default of 2).
    pub prefetch_batches: usize,
}

/// The weights a ModelCheckpoint(save_best_only) callback kept.
#[derive(Clone, Debug, PartialEq)]
pub struct SavedModel {
    /// 1-based epoch.
    pub epoch: usize,
    pub state: NamedTensors,
}

#[derive(Clone, Debug, PartialEq)]
pub struct FitOutcome {
    pub history: History,
    /// 1-based epoch at which a callback stopped training early.
    pub stopped_at: Option<usize>,
    /// 1-based epoch whose weights EarlyStopping(restore_best_weights) put back at the end.
    pub restored_from: Option<usize>,
    /// The learning rate after the last epoch.
    pub final_lr: f32,
    /// The last model ModelCheckpoint saved (the first such callback's), if any.
    pub checkpoint_model: Option<SavedModel>,
}

/// The seed for epoch `epoch`'s shuffle (0-based epoch).
pub fn epoch_seed(seed: u64, epoch: usize) -> u64 {
    splitmix64(seed ^ splitmix64(epoch as u64 ^ 0x5348_5546_464c_4500))
}

/// The augmentation seed of training sample `index` (its position in the training set,
/// not in the shuffled order) in 0-based `epoch`.
pub fn sample_seed(seed: u64, epoch: usize, index: usize) -> u64 {
    splitmix64(epoch_seed(seed, epoch) ^ splitmix64(index as u64 ^ 0x4155_474d_454e_5400))
}

fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The order in which epoch `epoch` visits the training samples.
pub fn epoch_order(len: usize, seed: u64, epoch: usize, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len).collect();
    if shuffle {
        order.shuffle(&mut ChaCha8Rng::seed_from_u64(epoch_seed(seed, epoch)));
    }
    order
}

/// One prepared batch; its buffers go back to the producer for reuse.
#[derive(Default)]
struct Prepared {
    images: Vec<f32>,
    labels: Vec<u32>,
    weights: Vec<f32>,
    /// A detector's targets: per anchor a label, and four box values.
    anchor_labels: Vec<i32>,
    box_targets: Vec<f32>,
}

fn prepare_batch(
    data: &TrainData,
    indices: &[usize],
    seed: u64,
    epoch: usize,
    mut into: Prepared,
) -> Prepared {
    let set = data.images;
    let sample_len = set.image_len();
    let shape = [set.height, set.width, set.channels];
    into.images.resize(indices.len() * sample_len, 0.0);
    into.labels.clear();
    into.weights.clear();
    if let Some(det) = data.detection {
        let anchors = det.anchors();
        into.anchor_labels.resize(indices.len() * anchors, 0);
        into.box_targets.resize(indices.len() * anchors * 4, 0.0);
        let rows = into
            .images
            .chunks_mut(sample_len)
            .zip(into.anchor_labels.chunks_mut(anchors))
            .zip(into.box_targets.chunks_mut(anchors * 4));
        for (((image, labels), boxes), &i) in rows.zip(indices) {
            det.sample(i, sample_seed(seed, epoch, i), image, labels, boxes);
            into.labels.push(0);
            into.weights.push(1.0);
        }
        return into;
    }
    for &i in indices {
        let label = set.labels[i];
        into.labels.push(label);
        into.weights.push(
            data.class_weights
                .map_or(1.0, |w| w.get(label as usize).copied().unwrap_or(1.0)),
        );
    }
    // On the producer's own thread, not in rayon's pool: pool tasks would sit between the
    // engine's per-core parts and stall a step (measured in `gpl bench engine`, docs).
    let mut scratch = vec![
        0.0f32;
        if data.augment.is_some() {
            sample_len
        } else {
            0
        }
    ];
    for (out, &i) in into.images.chunks_mut(sample_len).zip(indices) {
        let pixels = set.image(i);
        match data.augment {
            Some(augment) => {
                for (s, &p) in scratch.iter_mut().zip(pixels) {
                    *s = p as f32 / 255.0;
                }
                augment.augment(&scratch, shape, sample_seed(seed, epoch, i), out);
            }
            None => {
                for (o, &p) in out.iter_mut().zip(pixels) {
                    *o = p as f32 / 255.0;
                }
            }
        }
    }
    into
}

/// Keras's categorical crossentropy on probabilities: renormalise, clip to
/// [1e-7, 1 - 1e-7], take −Σ_k y_k ln p_k with the label smoothed to y·(1−ε) + ε/K.
fn crossentropy(probabilities: &[f32], label: usize, smoothing: f32) -> f64 {
    const EPSILON: f64 = 1e-7;
    let sum: f64 = probabilities.iter().map(|&p| p as f64).sum();
    let nll = |k: usize| {
        let p = probabilities.get(k).map_or(0.0, |&p| p as f64) / sum;
        -p.clamp(EPSILON, 1.0 - EPSILON).ln()
    };
    if smoothing == 0.0 {
        return nll(label);
    }
    let (eps, classes) = (smoothing as f64, probabilities.len());
    (0..classes)
        .map(|k| {
            let one_hot = if k == label { 1.0 } else { 0.0 };
            (one_hot * (1.0 - eps) + eps / classes as f64) * nll(k)
        })
        .sum()
}

/// Validation loss (unweighted, plus the learner's penalties, as Keras computes
/// `val_loss`) and accuracy.
fn evaluate(
    learner: &mut dyn Learner,
    set: &ImageSet,
    batch_size: usize,
    smoothing: f32,
) -> Result<(f64, f64)> {
    let probs = crate::train::predictions::predict_set(learner, set, batch_size)?;
    let classes = learner.classes();
    let mut loss = 0.0;
    let mut correct = 0usize;
    for (row, &label) in probs.chunks_exact(classes).zip(&set.labels) {
        loss += crossentropy(row, label as usize, smoothing);
        correct += usize::from(crate::nn::ops::activation::argmax(row) == label as usize);
    }
    let n = set.len().max(1) as f64;
    Ok((loss / n + learner.regularization_loss(), correct as f64 / n))
}

/// The loop state a checkpoint stores beside the learner's tensors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct LoopState {
    format: u32,
    /// Digest of the config and the data shapes the checkpoint was made with.
    fingerprint: String,
    completed_epochs: usize,
    #[serde(with = "crate::train::float_serde::f32_exact")]
    lr: f32,
    /// A callback ended training (the run only has its end-of-training work left).
    stopped: bool,
    /// `History::to_csv`, which reads back bit-exactly (JSON numbers might not).
    history_csv: String,
    callbacks: Vec<CallbackState>,
    /// 0-based epochs whose learner states callbacks hold (best weights, saved models).
    held_epochs: Vec<usize>,
}

const LOOP_FILE: &str = "loop.json";

fn state_file(epoch: usize) -> String {
    // 1-based: the state after that many completed epochs.
    format!("epoch-{:04}.safetensors", epoch + 1)
}

fn fingerprint(
    config: &FitConfig,
    train: &TrainData,
    val: Option<&ImageSet>,
    classes: usize,
) -> String {
    let shape = |s: &ImageSet| format!("{}x{}x{}x{}", s.len(), s.height, s.width, s.channels);
    let text = format!(
        "{}|{}|{}|{}|{:?}|{}",
        serde_json::to_string(config).unwrap_or_default(),
        shape(train.images),
        val.map(shape).unwrap_or_default(),
        classes,
        train.class_weights,
        train.augment.is_some()
    );
    blake3::hash(text.as_bytes()).to_hex()[..16].to_string()
}

fn check_config(
    config: &FitConfig,
    train: &TrainData,
    val: Option<&ImageSet>,
    classes: usize,
) -> Result<()> {
    let invalid = |message: String| Err(TrainError::InvalidConfig { message });
    if config.batch_size == 0 {
        return invalid("batch size must be at least 1".into());
    }
    if config.learning_rate.is_nan()
        || config.learning_rate <= 0.0
        || config.learning_rate.is_infinite()
    {
        return invalid(format!(
            "learning rate {} must be positive",
            config.learning_rate
        ));
    }
    if !(0.0..=1.0).contains(&config.label_smoothing) {
        return invalid(format!(
            "label smoothing {} must be in [0, 1]",
            config.label_smoothing
        ));
    }
    if train.images.is_empty() {
        return invalid("the training set is empty".into());
    }
    if let Some(label) = train
        .images
        .labels
        .iter()
        .chain(val.map_or(&[][..], |v| v.labels.as_slice()))
        .find(|&&l| l as usize >= classes)
    {
        return invalid(format!(
            "label {label} is outside the model's {classes} classes"
        ));
    }
    if let Some(weights) = train.class_weights {
        if weights.len() != classes || weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return invalid(format!(
                "{} class weights for {classes} classes (each finite and >= 0 is needed)",
                weights.len()
            ));
        }
    }
    if let Some(v) = val {
        if v.image_len() != train.images.image_len() {
            return invalid("validation images differ in size from training images".into());
        }
    }
    let mut available = vec!["loss"];
    match train.detection {
        Some(det) if det.has_validation() => available.extend(["val_loss", "val_map50"]),
        Some(_) => {}
        None => {
            available.push("accuracy");
            if val.is_some_and(|v| !v.is_empty()) {
                available.extend(["val_loss", "val_accuracy"]);
            }
        }
    }
    for spec in &config.callbacks {
        if !available.contains(&spec.monitor()) {
            return Err(TrainError::UnknownMonitor {
                monitor: spec.monitor().into(),
                available: available.join(", "),
            });
        }
        if let CallbackSpec::ReduceLrOnPlateau(c) = spec {
            if c.factor.is_nan() || c.factor >= 1.0 {
                return invalid(format!(
                    "ReduceLROnPlateau factor {} must be below 1",
                    c.factor
                ));
            }
        }
    }
    Ok(())
}

/// Runs the configured epochs (or what is left of them after a checkpoint) on `learner`.
///
/// With a checkpoint directory, every completed epoch leaves the learner state and the
/// loop state there, and a later call with the same directory continues from it: the
/// finished run is bit-identical to one that was never interrupted (history seconds aside).
pub fn fit(
    learner: &mut dyn Learner,
    config: &FitConfig,
    train: &TrainData,
    val: Option<&ImageSet>,
    mut ctx: FitContext,
) -> Result<FitOutcome> {
    let classes = learner.classes();
    check_config(config, train, val, classes)?;
    let val = val.filter(|v| !v.is_empty());
    let fingerprint = fingerprint(config, train, val, classes);
    let mut callbacks: Vec<Callback> = config.callbacks.iter().map(Callback::new).collect();
    let mut history = History::default();
    let mut lr = config.learning_rate;
    let mut stopped = false;
    // Learner states that callbacks hold, by 0-based epoch.
    let mut held: BTreeMap<usize, Arc<NamedTensors>> = BTreeMap::new();

    if let Some(dir) = ctx.checkpoint_dir {
        if let Some(saved) = read_checkpoint(dir, &fingerprint)? {
            if saved.callbacks.len() != callbacks.len() {
                return Err(TrainError::BadCheckpoint {
                    dir: dir.into(),
                    message: "callback count differs".into(),
                });
            }
            for (callback, state) in callbacks.iter_mut().zip(&saved.callbacks) {
                if !callback.set_state(state) {
                    return Err(TrainError::BadCheckpoint {
                        dir: dir.into(),
                        message: "callback kinds differ".into(),
                    });
                }
            }
            if saved.completed_epochs > 0 {
                let latest = load_state_file(dir, saved.completed_epochs - 1)?;
                learner.load_state(&latest).map_err(TrainError::learner)?;
            }
            for &epoch in &saved.held_epochs {
                held.insert(epoch, Arc::new(load_state_file(dir, epoch)?));
            }
            history = History::from_csv(&saved.history_csv, &dir.join(LOOP_FILE))?;
            if history.len() != saved.completed_epochs {
                return Err(TrainError::BadCheckpoint {
                    dir: dir.into(),
                    message: "history and epoch count differ".into(),
                });
            }
            lr = saved.lr;
            stopped = saved.stopped;
            if let Some(progress) = ctx.progress.as_mut() {
                progress(EpochProgress::Resumed {
                    completed_epochs: saved.completed_epochs,
                });
            }
        }
    }

    let sample_len = train.images.image_len();
    let batches = train.images.len().div_ceil(config.batch_size);
    let prefetch = if ctx.prefetch_batches == 0 {
        2
    } else {
        ctx.prefetch_batches
    };
    let start_epoch = history.len();
    let mut stopped_at = None;
    for epoch in start_epoch..config.epochs {
        if stopped {
            break;
        }
        let started = Instant::now();
        let order = epoch_order(train.images.len(), config.seed, epoch, config.shuffle);
        let mut loss_sum = 0.0f64;
        let mut correct = 0usize;
        let last_good_epoch = epoch;
        // The producer prepares batches while the learner trains on earlier ones.
        std::thread::scope(|scope| -> Result<()> {
            let (batch_tx, batch_rx) = mpsc::sync_channel::<Prepared>(prefetch);
            let (recycle_tx, recycle_rx) = mpsc::channel::<Prepared>();
            let order = &order;
            scope.spawn(move || {
                for indices in order.chunks(config.batch_size) {
                    let buffers = recycle_rx.try_recv().unwrap_or_default();
                    let prepared = prepare_batch(train, indices, config.seed, epoch, buffers);
                    if batch_tx.send(prepared).is_err() {
                        break; // the loop stopped early (error or cancel)
                    }
                }
            });
            for (batch_index, prepared) in batch_rx.iter().enumerate() {
                if ctx.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
                    return Err(TrainError::Cancelled { epoch: epoch + 1 });
                }
                let n = prepared.labels.len();
                debug_assert_eq!(prepared.images.len(), n * sample_len);
                let targets = match train.detection {
                    Some(det) => {
                        let loss = det.loss();
                        vec![
                            Target::Anchors {
                                labels: &prepared.anchor_labels,
                                classes: loss.classes,
                                alpha: loss.alpha,
                                gamma: loss.gamma,
                            },
                            Target::Boxes {
                                values: &prepared.box_targets,
                                labels: &prepared.anchor_labels,
                                beta: loss.beta,
                            },
                        ]
                    }
                    None => vec![Target::Classes {
                        labels: &prepared.labels,
                        label_smoothing: config.label_smoothing,
                    }],
                };
                let batch = Batch {
                    images: &prepared.images,
                    targets,
                    weights: &prepared.weights,
                };
                // The engine refuses a non-finite loss before updating; name where it happened.
                let stats =
                    learner
                        .train_batch(&batch, lr)
                        .map_err(|report| {
                            match report.downcast_ref::<crate::nn::EngineError>() {
                                Some(crate::nn::EngineError::NonFiniteLoss { loss }) => {
                                    TrainError::NonFiniteLoss {
                                        epoch: epoch + 1,
                                        batch: batch_index + 1,
                                        value: *loss,
                                        last_good_epoch,
                                    }
                                }
                                _ => TrainError::learner(report),
                            }
                        })?;
                if !stats.loss.is_finite() {
                    return Err(TrainError::NonFiniteLoss {
                        epoch: epoch + 1,
                        batch: batch_index + 1,
                        value: stats.loss,
                        last_good_epoch,
                    });
                }
                loss_sum += stats.loss * n as f64;
                correct += stats.correct;
                if let Some(progress) = ctx.progress.as_mut() {
                    let seen = (batch_index * config.batch_size + n) as f64;
                    progress(EpochProgress::Batch {
                        epoch: epoch + 1,
                        batch: batch_index + 1,
                        batches,
                        loss: loss_sum / seen,
                    });
                }
                // The receiver may be gone once the producer finished; the buffer is then dropped.
                let _ = recycle_tx.send(prepared);
            }
            Ok(())
        })?;
        if ctx.cancel.is_some_and(|c| c.load(Ordering::Relaxed)) {
            return Err(TrainError::Cancelled { epoch: epoch + 1 });
        }

        let n = train.images.len() as f64;
        // A detector has no accuracy; its record says NaN and its logs leave it out.
        let accuracy = match train.detection {
            Some(_) => f64::NAN,
            None => correct as f64 / n,
        };
        let mut logs = EpochLogs::from([("loss".to_string(), loss_sum / n)]);
        if train.detection.is_none() {
            logs.insert("accuracy".into(), accuracy);
        }
        let mut val_map50 = None;
        let (val_loss, val_accuracy) = match (train.detection, val) {
            (Some(det), _) => match det.validate(learner)? {
                Some(d) => {
                    logs.insert("val_loss".into(), d.val_loss);
                    logs.insert("val_map50".into(), d.val_map50);
                    val_map50 = Some(d.val_map50);
                    (Some(d.val_loss), None)
                }
                None => (None, None),
            },
            (None, Some(v)) => {
                let (l, a) = evaluate(learner, v, config.batch_size, config.label_smoothing)?;
                logs.insert("val_loss".into(), l);
                logs.insert("val_accuracy".into(), a);
                (Some(l), Some(a))
            }
            (None, None) => (None, None),
        };
        let record = EpochRecord {
            epoch: epoch + 1,
            loss: logs["loss"],
            accuracy,
            val_loss,
            val_accuracy,
            lr,
            seconds: started.elapsed().as_secs_f64(),
            val_map50,
        };
        history.epochs.push(record.clone());

        // Callbacks in list order, each deciding from this epoch's logs, as Keras runs them.
        let mut current_state: Option<Arc<NamedTensors>> = None;
        let mut snapshot = |learner: &dyn Learner| {
            current_state
                .get_or_insert_with(|| Arc::new(learner.state()))
                .clone()
        };
        for callback in callbacks.iter_mut() {
            match callback {
                Callback::EarlyStopping(es) => {
                    let decision = es.on_epoch_end(epoch, logs.get(&es.config.monitor).copied());
                    if decision.snapshot_weights {
                        held.insert(epoch, snapshot(&*learner));
                    }
                    if decision.stop_training {
                        stopped = true;
                        stopped_at = Some(epoch + 1);
                    }
                }
                Callback::ReduceLrOnPlateau(rlr) => {
                    if let Some(new_lr) =
                        rlr.on_epoch_end(logs.get(&rlr.config.monitor).copied(), lr)
                    {
                        lr = new_lr;
                    }
                }
                Callback::ModelCheckpoint(mc) => {
                    if mc.on_epoch_end(epoch, logs.get(&mc.config.monitor).copied()) {
                        held.insert(epoch, snapshot(&*learner));
                    }
                }
            }
        }
        let referenced = referenced_epochs(&callbacks);
        held.retain(|epoch, _| referenced.contains(epoch));

        if let Some(dir) = ctx.checkpoint_dir {
            let state = snapshot(&*learner);
            let loop_state = LoopState {
                format: 1,
                fingerprint: fingerprint.clone(),
                completed_epochs: epoch + 1,
                lr,
                stopped,
                history_csv: history.to_csv(),
                callbacks: callbacks.iter().map(Callback::state).collect(),
                held_epochs: referenced.iter().copied().collect(),
            };
            write_checkpoint(dir, epoch, &state, &loop_state)?;
        }
        if let Some(progress) = ctx.progress.as_mut() {
            progress(EpochProgress::Epoch(record));
        }
    }
    if stopped && stopped_at.is_none() {
        // Resumed after a callback had already stopped training.
        stopped_at = callbacks.iter().find_map(|c| match c {
            Callback::EarlyStopping(es) if es.state.stopped_epoch > 0 => {
                Some(es.state.stopped_epoch + 1)
            }
            _ => None,
        });
    }

    // Keras 3 `on_train_end`: every EarlyStopping with restore_best_weights puts its best
    // weights back, whatever ended training; the last one in the list wins.
    let mut restored_from = None;
    for callback in &callbacks {
        if let Callback::EarlyStopping(es) = callback {
            if let Some(epoch) = es.on_train_end() {
                let state = held.get(&epoch).ok_or_else(|| TrainError::BadCheckpoint {
                    dir: ctx
                        .checkpoint_dir
                        .map(Path::to_path_buf)
                        .unwrap_or_default(),
                    message: format!("the best weights of epoch {} are missing", epoch + 1),
                })?;
                learner.load_state(state).map_err(TrainError::learner)?;
                restored_from = Some(epoch + 1);
            }
        }
    }
    let checkpoint_model = callbacks.iter().find_map(|c| match c {
        Callback::ModelCheckpoint(mc) => mc.state.saved_epoch.and_then(|e| {
            held.get(&e).map(|s| SavedModel {
                epoch: e + 1,
                state: (**s).clone(),
            })
        }),
        _ => None,
    });
    Ok(FitOutcome {
        history,
        stopped_at,
        restored_from,
        final_lr: lr,
        checkpoint_model,
    })
}

fn referenced_epochs(callbacks: &[Callback]) -> BTreeSet<usize> {
    callbacks
        .iter()
        .filter_map(|c| match c {
            Callback::EarlyStopping(es) => es.state.best_weights_epoch,
            Callback::ModelCheckpoint(mc) => mc.state.saved_epoch,
            Callback::ReduceLrOnPlateau(_) => None,
        })
        .collect()
}

fn load_state_file(dir: &Path, epoch: usize) -> Result<NamedTensors> {
    Ok(load_safetensors(&dir.join(state_file(epoch)))?.0)
}

fn read_checkpoint(dir: &Path, fingerprint: &str) -> Result<Option<LoopState>> {
    let path = dir.join(LOOP_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(TrainError::io("read", &path, e)),
    };
    let state: LoopState = serde_json::from_str(&text).map_err(|e| TrainError::BadCheckpoint {
        dir: dir.into(),
        message: format!("{LOOP_FILE}: {e}"),
    })?;
    if state.fingerprint != fingerprint {
        return Err(TrainError::CheckpointMismatch {
            dir: dir.into(),
            expected: fingerprint.into(),
            found: state.fingerprint,
        });
    }
    Ok(Some(state))
}

/// Writes the epoch's learner state, then commits the loop state (the rename of
/// `loop.json` is the commit point), then deletes state files nothing refers to.
fn write_checkpoint(
    dir: &Path,
    epoch: usize,
    state: &NamedTensors,
    loop_state: &LoopState,
) -> Result<()> {
    let metadata = Metadata::from([("epoch".to_string(), (epoch + 1).to_string())]);
    save_safetensors(&dir.join(state_file(epoch)), state, &metadata)?;
    let json = serde_json::to_string_pretty(loop_state).map_err(|e| TrainError::BadCheckpoint {
        dir: dir.into(),
        message: e.to_string(),
    })?;
    crate::train::write_atomic(&dir.join(LOOP_FILE), json.as_bytes())?;
    let keep: BTreeSet<String> = loop_state
        .held_epochs
        .iter()
        .map(|&e| state_file(e))
        .chain([state_file(epoch)])
        .collect();
    let entries = std::fs::read_dir(dir).map_err(|e| TrainError::io("list", dir, e))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("epoch-") && name.ends_with(".safetensors") && !keep.contains(&name) {
            let _ = std::fs::remove_file(entry.path()); // a leftover file only costs disk space
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orders_and_seeds_depend_only_on_seed_and_epoch() {
        assert_eq!(epoch_order(50, 7, 3, true), epoch_order(50, 7, 3, true));
        assert_ne!(epoch_order(50, 7, 3, true), epoch_order(50, 7, 4, true));
        assert_eq!(epoch_order(5, 7, 3, false), vec![0, 1, 2, 3, 4]);
        let mut sorted = epoch_order(50, 7, 3, true);
        sorted.sort_unstable();
        assert_eq!(sorted, (0..50).collect::<Vec<_>>());
        assert_ne!(sample_seed(1, 0, 0), sample_seed(1, 0, 1));
        assert_ne!(sample_seed(1, 0, 0), sample_seed(1, 1, 0));
    }

    #[test]
    fn crossentropy_clips_like_keras() {
        assert!((crossentropy(&[0.5, 0.5], 0, 0.0) - std::f64::consts::LN_2).abs() < 1e-12);
        assert!((crossentropy(&[0.0, 1.0], 0, 0.0) - 1e-7f64.ln().abs()).abs() < 1e-9);
        // Renormalised first: [2, 2] reads as [0.5, 0.5].
        assert!((crossentropy(&[2.0, 2.0], 1, 0.0) - std::f64::consts::LN_2).abs() < 1e-12);
        // Smoothed: y = [0.95, 0.05] against p = [0.8, 0.2].
        let want = -(0.95 * 0.8f64.ln() + 0.05 * 0.2f64.ln());
        assert!((crossentropy(&[0.8, 0.2], 0, 0.1) - want).abs() < 1e-7);
    }
}
