//! The checked program: every block resolved into typed settings with defaults filled in,
//! every trained model instantiated into an `nn::ir::ModelIr`. This is what the planner and
//! the stages read; nothing here refers back to the syntax tree except spans (for diagnostics).

use super::diagnostics::{SourceFile, Sources};
use crate::lang::{BlockKind, Span};
use crate::nn::ir::ModelIr;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Clone, Debug, Serialize)]
pub struct Program {
    /// The pipeline file that was loaded (imports are in `sources`). Absolute and resolved
    /// paths are not serialised, so the serialised program does not depend on where the
    /// repository lives (it can feed fingerprints).
    #[serde(skip)]
    pub root: PathBuf,
    /// Directory that relative data and weight paths are resolved against.
    #[serde(skip)]
    pub project_root: PathBuf,
    pub profile: Option<String>,
    /// Every block of the program and its imports, in load order (imports first).
    pub blocks: Vec<BlockRef>,
    /// Every stage block (and balance preset), checked, by name: one map for every kind.
    pub checked: BTreeMap<String, CheckedStage>,
    /// Definitions other blocks use.
    pub augments: Vec<Augment>,
    pub models: Vec<ModelDef>,
    /// Every default the checker filled in, for `gpl check --explain`.
    pub defaults: Vec<DefaultNote>,
    #[serde(skip)]
    pub sources: Sources,
}

impl Program {
    /// The span of a block's name, to point diagnostics at it.
    pub fn span_of(&self, name: &str) -> Option<Span> {
        self.blocks
            .iter()
            .find(|b| b.name == name && b.stage)
            .map(|b| b.span)
    }

    pub fn block(&self, name: &str) -> Option<&BlockRef> {
        self.blocks.iter().find(|b| b.name == name && b.stage)
    }

    /// Every source file the program read: the pipeline and each import (for watch and
    /// fingerprints). Built-in stdlib files have paths under `<stdlib>/`.
    pub fn source_files(&self) -> &[SourceFile] {
        self.sources.files()
    }

    pub fn augment(&self, name: &str) -> Option<&Augment> {
        self.augments.iter().find(|d| d.name == name)
    }

    /// The checked stage blocks in load order (imports first).
    pub fn checked_in_order(&self) -> impl Iterator<Item = &CheckedStage> + '_ {
        self.blocks
            .iter()
            .filter(|b| b.kind.is_stage())
            .filter_map(|b| self.checked.get(&b.name).filter(|c| c.kind() == b.kind))
    }
    /// The stages, in load order.
    pub fn stages(&self) -> impl Iterator<Item = &BlockRef> {
        self.blocks.iter().filter(|b| b.stage)
    }

    /// Renders a diagnostic-free note `file:line` for a span.
    pub fn location(&self, span: Span) -> String {
        format!(
            "{}:{}",
            self.sources.display_path(span.file),
            self.sources.line_of(span)
        )
    }
}

/// A checked stage block: the one type `Program::checked` maps names to.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "block", rename_all = "snake_case")]
pub enum CheckedStage {
    Dataset(Dataset),
    Balance(Balance),
    Train(Train),
    Ensemble(Ensemble),
    Evaluate(Evaluate),
    Crossval(Crossval),
    Explain(Explain),
    Search(Search),
    Detect(Detect),
    Chain(Chain),
}

/// Typed views of `Program::checked` (and of the checker's map while it fills it): every
/// block of one kind in load order, and one by name.
macro_rules! stage_views {
    ($($all:ident, $one:ident, $variant:ident;)*) => {
        impl CheckedStage {
            pub fn kind(&self) -> BlockKind {
                match self {
                    $(CheckedStage::$variant(_) => BlockKind::$variant,)*
                }
            }

            pub fn name(&self) -> &str {
                match self {
                    $(CheckedStage::$variant(x) => &x.name,)*
                }
            }
        }

        impl Program {
            $(
                pub fn $all(&self) -> impl Iterator<Item = &$variant> + '_ {
                    self.checked_in_order().filter_map(|c| match c {
                        CheckedStage::$variant(x) => Some(x),
                        _ => None,
                    })
                }

                pub fn $one(&self, name: &str) -> Option<&$variant> {
                    match self.checked.get(name) {
                        Some(CheckedStage::$variant(x)) => Some(x),
                        _ => None,
                    }
                }
            )*
        }

        /// Lookups by name in a map of checked stages.
        pub trait CheckedLookup {
            fn map(&self) -> &BTreeMap<String, CheckedStage>;
            $(
                fn $one(&self, name: &str) -> Option<&$variant> {
                    match self.map().get(name) {
                        Some(CheckedStage::$variant(x)) => Some(x),
                        _ => None,
                    }
                }
            )*
        }
    };
}

stage_views! {
    datasets, dataset, Dataset;
    balances, balance, Balance;
    trains, train, Train;
    ensembles, ensemble, Ensemble;
    evaluates, evaluate, Evaluate;
    crossvals, crossval, Crossval;
    explains, explain, Explain;
    searches, search, Search;
    detects, detect, Detect;
    chains, chain, Chain;
}

impl BlockKind {
    /// Stages become nodes of the plan; the others (model, augment, callbacks) are
    /// definitions other blocks use.
    pub fn is_stage(self) -> bool {
        !matches!(
            self,
            BlockKind::Model | BlockKind::Augment | BlockKind::Callbacks
        )
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct BlockRef {
    pub kind: BlockKind,
    pub name: String,
    /// False for blocks defined in imported files.
    pub in_root: bool,
    /// A node of the plan (false for definitions and balance presets).
    pub stage: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct DefaultNote {
    /// `train scratch`, `dataset galaxy10`, ...
    pub block: String,
    /// `optimizer.beta1`, `early_stopping.min_delta`, ...
    pub setting: String,
    pub value: String,
    /// Why this value (the Keras default, the split's val part, ...).
    pub reason: String,
}

// ---------------------------------------------------------------- data

#[derive(Clone, Debug, Serialize)]
pub struct Dataset {
    pub name: String,
    pub source: Source,
    /// Used when the source's file is absent (the run must say so).
    pub fallback: Option<Source>,
    /// Number of classes in the source labels (before drop/merge), when known at check time.
    pub source_classes: Option<usize>,
    /// Per-sample image shape `[h, w, c]`, when known at check time (after `resize`).
    pub image_shape: Option<Vec<usize>>,
    /// `resize H x W`: the run resizes every image to this size after loading.
    pub resize: Option<[usize; 2]>,
    /// Original labels removed from the data.
    pub drop: Vec<u32>,
    pub merges: Vec<Merge>,
    /// Original label -> training label (0..classes), `None` for dropped labels.
    pub label_map: Vec<Option<usize>>,
    /// Class count after drop and merge.
    pub classes: Option<usize>,
    pub class_names: Option<Vec<String>>,
    pub split: Option<Split>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Source {
    Hdf5 {
        path: String,
        resolved: PathBuf,
        images: String,
        labels: String,
    },
    Folder {
        path: String,
        resolved: PathBuf,
    },
    Synthetic {
        generator: SyntheticKind,
        count: usize,
        seed: u64,
        /// A field's side in pixels (`synthetic(fields, size: 424)`); `None` for the
        /// Galaxy10 generators and for fields at the default size.
        size: Option<usize>,
    },
    /// A Pascal VOC folder (labelImg): images with boxes, for detection.
    Voc {
        path: String,
        resolved: PathBuf,
    },
    /// One survey image; `hdu: None` is the first HDU holding a 2-D image.
    Fits {
        path: String,
        resolved: PathBuf,
        hdu: Option<usize>,
    },
}

impl Source {
    /// Whether the source gives images with boxes (detection) rather than one labelled galaxy
    /// per image.
    pub fn is_detection(&self) -> bool {
        matches!(
            self,
            Source::Synthetic {
                generator: SyntheticKind::Fields,
                ..
            } | Source::Voc { .. }
                | Source::Fits { .. }
        )
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyntheticKind {
    /// 69x69x3, the ten Galaxy10 (SDSS) classes.
    Galaxy10,
    /// 256x256x3, the ten Galaxy10 DECaLS classes.
    Galaxy10Decals,
    /// Wide fields with several galaxies and boxes (detection).
    Fields,
}

#[derive(Clone, Debug, Serialize)]
pub struct Merge {
    pub classes: Vec<u32>,
    /// The member the merged class is named after, when written (`into 1`).
    pub into: Option<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Split {
    pub train: f64,
    pub val: f64,
    pub test: f64,
    pub stratify: bool,
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Part {
    Train,
    Val,
    Test,
}

/// Where a block reads its images from.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataRef {
    /// All of a dataset (after drop/merge).
    Dataset { dataset: String },
    /// One part of a dataset's split.
    Split { dataset: String, part: Part },
    /// The output of a balance block.
    Balance { balance: String, dataset: String },
}

impl DataRef {
    /// The dataset the images come from in the end.
    pub fn dataset(&self) -> &str {
        match self {
            DataRef::Dataset { dataset }
            | DataRef::Split { dataset, .. }
            | DataRef::Balance { dataset, .. } => dataset,
        }
    }

    /// The stage name this reference depends on.
    pub fn stage(&self) -> &str {
        match self {
            DataRef::Balance { balance, .. } => balance,
            other => other.dataset(),
        }
    }
}

impl std::fmt::Display for DataRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DataRef::Dataset { dataset } => write!(f, "{dataset}"),
            DataRef::Split { dataset, part } => write!(f, "{dataset}.{}", part.as_str()),
            DataRef::Balance { balance, .. } => write!(f, "{balance}"),
        }
    }
}

impl Part {
    pub fn as_str(self) -> &'static str {
        match self {
            Part::Train => "train",
            Part::Val => "val",
            Part::Test => "test",
        }
    }
}

/// Keras ImageDataGenerator settings plus rot90, noise and brightness.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Augment {
    pub name: String,
    /// Degrees, uniform in ±rotation.
    pub rotation: f64,
    /// Fraction of the width when < 1, pixels otherwise (Keras).
    pub width_shift: f64,
    pub height_shift: f64,
    /// Degrees (Keras `shear_range`).
    pub shear: f64,
    /// Scale range for x and y, drawn independently.
    pub zoom: [f64; 2],
    pub horizontal_flip: bool,
    pub vertical_flip: bool,
    pub fill_mode: FillMode,
    pub cval: f64,
    /// Random multiples of 90 degrees.
    pub rot90: bool,
    /// Standard deviation of additive Gaussian noise, in pixel units (0..255).
    pub noise: f64,
    pub brightness: Option<[f64; 2]>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FillMode {
    Nearest,
    Constant,
    Reflect,
    Wrap,
}

#[derive(Clone, Debug, Serialize)]
pub struct Balance {
    pub name: String,
    pub from: DataRef,
    pub downsample: Vec<Resample>,
    pub oversample: Vec<Resample>,
    pub weights: Option<WeightsSpec>,
    pub seed: u64,
    #[serde(skip)]
    pub span: Span,
}

/// Classes resampled to a target count. `classes` are training labels (after drop/merge);
/// `original` the labels as written.
#[derive(Clone, Debug, Serialize)]
pub struct Resample {
    pub classes: Vec<usize>,
    pub original: Vec<u32>,
    pub to: usize,
    /// Augmentation preset applied to the added copies (oversampling only); `None` copies.
    pub using: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum WeightsSpec {
    /// N / (C * n_c) on the resampled data.
    Balanced,
    Explicit {
        weights: Vec<f64>,
    },
}

// ---------------------------------------------------------------- models and training

/// A model definition as written (instantiated per train).
#[derive(Clone, Debug, Serialize)]
pub struct ModelDef {
    pub name: String,
    pub params: Vec<String>,
    /// The IR when every parameter has a default (for `gpl check` summaries).
    pub default_ir: Option<ModelIr>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModelInstance {
    pub def: String,
    /// Parameter values after defaults, as canonical text.
    pub args: Vec<(String, String)>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Train {
    pub name: String,
    pub model: ModelInstance,
    /// Instantiated, with `trainable` set from `freeze` / `trainable from`.
    pub ir: ModelIr,
    pub data: DataRef,
    pub validation: Option<DataRef>,
    pub classes: Option<usize>,
    pub loss: Loss,
    pub optimizer: Optimizer,
    pub epochs: usize,
    pub batch: usize,
    pub seed: u64,
    /// On-the-fly augmentation preset for training batches.
    pub augment: Option<String>,
    pub callbacks: Vec<Callback>,
    pub init: Option<InitWeights>,
    pub freeze: Option<Freeze>,
    /// Set when the block trains a detector (it has `anchors`): the anchors and the loss
    /// settings that replace the classification loss.
    pub detector: Option<Box<crate::train::detection::DetectorConfig>>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct Loss {
    pub kind: LossKind,
    pub class_weights: Option<ClassWeights>,
    pub label_smoothing: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LossKind {
    /// Softmax cross-entropy over integer labels.
    Crossentropy,
    /// A detector's sigmoid focal loss on the class logits plus smooth-L1 on the box
    /// offsets (its α and γ are in `DetectorTraining`).
    Focal,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClassWeights {
    /// The weights a balance block computes.
    Balance {
        balance: String,
    },
    /// N / (C * n_c) on this train's data.
    Balanced,
    Explicit {
        weights: Vec<f64>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Optimizer {
    pub kind: OptimizerKind,
    pub lr: f64,
    pub momentum: f64,
    pub nesterov: bool,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// RMSprop's decay (Keras `rho`).
    pub rho: f64,
    pub eps: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OptimizerKind {
    Sgd,
    Adam,
    Adamw,
    Rmsprop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Min,
    Max,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Callback {
    EarlyStopping {
        monitor: String,
        mode: Mode,
        min_delta: f64,
        patience: usize,
        restore_best: bool,
        start_from_epoch: usize,
    },
    ReduceLr {
        monitor: String,
        mode: Mode,
        factor: f64,
        patience: usize,
        min_delta: f64,
        cooldown: usize,
        min_lr: f64,
    },
    Checkpoint {
        monitor: String,
        mode: Mode,
        save_best: bool,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct InitWeights {
    pub path: String,
    #[serde(skip)]
    pub resolved: PathBuf,
    pub format: WeightsFormat,
    /// `or random`: a missing file starts from random initialisation (with a notice).
    pub optional: bool,
    /// `init weights from NAME`: the model train block NAME saved (`path` is then empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightsFormat {
    Safetensors,
    KerasH5,
}

/// Layers before `first_trainable` are frozen.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Freeze {
    pub first_trainable: String,
    pub index: usize,
}

// ---------------------------------------------------------------- evaluation and the rest

/// A model-producing stage: a train or an ensemble.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Predictor {
    Train {
        name: String,
    },
    Ensemble {
        name: String,
    },
    /// `tiny.best`: the best trial of search `name`.
    SearchBest {
        name: String,
    },
}

impl Predictor {
    /// The stage whose output holds the model.
    pub fn name(&self) -> &str {
        match self {
            Predictor::Train { name }
            | Predictor::Ensemble { name }
            | Predictor::SearchBest { name } => name,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Evaluate {
    pub name: String,
    pub models: Vec<Predictor>,
    pub data: DataRef,
    pub report: bool,
    pub confusion: bool,
    pub roc: bool,
    pub predictions: bool,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct Ensemble {
    pub name: String,
    pub members: Vec<String>,
    pub weights: EnsembleWeights,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnsembleWeights {
    Fixed {
        weights: Vec<f64>,
    },
    /// Grid over the simplex with this step, maximising accuracy on `on`.
    Search {
        on: DataRef,
        step: f64,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct Crossval {
    pub name: String,
    pub data: DataRef,
    pub folds: usize,
    pub stratify: bool,
    pub seed: u64,
    pub compare: Vec<String>,
    pub test: StatTest,
    /// Tabulated per fold; the first is the one tested.
    pub metrics: Vec<CvMetric>,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StatTest {
    Wilcoxon,
    PairedT,
    /// The fold table only.
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CvMetric {
    Accuracy,
    Precision,
    Recall,
    F1,
    Auc,
}

#[derive(Clone, Debug, Serialize)]
pub struct Explain {
    pub name: String,
    pub model: String,
    pub data: DataRef,
    /// One per method statement, in the order written.
    pub maps: Vec<MapRequest>,
    pub activations: Option<ActivationView>,
    pub filters: Option<FilterView>,
    /// Cascading randomisation of every map method (deletion curves are always drawn).
    pub sanity: bool,
    pub seed: u64,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct MapRequest {
    /// The method with its options; a class-activation method carries its layer's index.
    pub method: crate::explain::Method,
    /// The layer a class-activation method weights (the last conv layer unless written).
    pub layer: Option<String>,
    pub samples: crate::explain::samples::SampleChoice,
}

#[derive(Clone, Debug, Serialize)]
pub struct ActivationView {
    /// (index, name) of each layer shown.
    pub layers: Vec<(usize, String)>,
    pub samples: crate::explain::samples::SampleChoice,
}

#[derive(Clone, Debug, Serialize)]
pub struct FilterView {
    pub layer: String,
    pub index: usize,
    /// The first `count` channels.
    pub count: usize,
    pub ascent: crate::explain::filters::Ascent,
}

#[derive(Clone, Debug, Serialize)]
pub struct Search {
    pub name: String,
    pub model: String,
    /// The train block whose data, loss, optimizer and callbacks every trial reuses.
    pub train: String,
    /// Model arguments fixed for every trial.
    pub fixed: Vec<(String, String)>,
    pub space: Vec<Dimension>,
    pub strategy: Strategy,
    pub objective: Objective,
    /// `subject to params <= 100k, mflops <= 20`: every trial's model meets all of them.
    pub constraints: Vec<Constraint>,
    /// The model at the space's lower corner: its layers' names and kinds are every trial's
    /// (what an explain block of `SEARCH.best` is checked against).
    #[serde(skip)]
    pub corner: crate::nn::ir::ModelIr,
    #[serde(skip)]
    pub span: Span,
}

/// A bound on the size of a search's model, known before training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Constraint {
    pub quantity: Quantity,
    pub op: crate::lang::ast::CmpOp,
    pub bound: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quantity {
    /// Parameters, trainable or not.
    Params,
    /// Millions of floating-point operations of one image's forward pass, a multiply-add
    /// counting two (the summary's FLOPs column over a million).
    Mflops,
}

impl Constraint {
    /// The model's value of the constrained quantity.
    pub fn measure(&self, model: &crate::nn::ir::ModelIr) -> f64 {
        match self.quantity {
            Quantity::Params => model.total_params() as f64,
            Quantity::Mflops => model.total_flops() as f64 / 1e6,
        }
    }

    pub fn holds(&self, model: &crate::nn::ir::ModelIr) -> bool {
        self.op.holds(self.measure(model), self.bound)
    }

    /// `params <= 100000`.
    pub fn show(&self) -> String {
        let q = match self.quantity {
            Quantity::Params => "params",
            Quantity::Mflops => "mflops",
        };
        format!("{q} {} {}", self.op.symbol(), self.bound)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Dimension {
    pub name: String,
    pub domain: Domain,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Domain {
    Int {
        lo: i64,
        hi: i64,
    },
    Float {
        lo: f64,
        hi: f64,
        /// Sampled and modelled on a log scale (`lr in 1e-4..1e-1 log`). Left out of the
        /// serialised form when false, so a linear range keeps its cache key.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        log: bool,
    },
    Choice {
        values: Vec<f64>,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct Strategy {
    pub kind: StrategyKind,
    pub trials: usize,
    /// Random trials before the model-based ones (bayes).
    pub init: usize,
    pub seed: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    Bayes,
    Random,
    Grid,
}

#[derive(Clone, Debug, Serialize)]
pub struct Objective {
    pub mode: Mode,
    pub metric: String,
}

/// `chain NAME { detect D(min_score: 0.5); crop 69 x 69; classify M; output "catalog.csv" }`.
#[derive(Clone, Debug, Serialize)]
pub struct Chain {
    pub name: String,
    pub detector: String,
    pub min_score: f64,
    /// Detections whose semi-major axis `a` (pixels) is below this are left out: stars and
    /// noise are PSF-sized, galaxies larger (0: keep all).
    pub min_size: f64,
    /// The stamp cut around each detection, in the field's pixels; resampled to the
    /// classifier's input. Defaults to the classifier's input size.
    pub crop: Option<[usize; 2]>,
    pub classify: Option<Predictor>,
    /// The catalogue's file name in the chain's output folder (`.csv`; a `.fits` table is
    /// written beside it).
    pub output: String,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, Serialize)]
pub struct Detect {
    pub name: String,
    pub data: DataRef,
    pub method: DetectMethod,
    #[serde(skip)]
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DetectMethod {
    /// The classical detector (SExtractor / SEP).
    Extract(ExtractSettings),
    /// A detector trained by train block `train` (one with `anchors`), read out with
    /// class-wise NMS at `iou`, scores from `min_score`, at most `top_k` boxes per image.
    Learned {
        train: String,
        iou: f64,
        min_score: f64,
        top_k: usize,
    },
}

/// `extract(...)`'s settings; the defaults are SEP's and DESIGN's. The detect stage's config
/// holds them as they are.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct ExtractSettings {
    /// Detection threshold in units of the background RMS.
    pub thresh: f64,
    pub minarea: usize,
    /// Deblending levels.
    pub deblend: usize,
    /// Minimum flux fraction of a deblended branch.
    pub contrast: f64,
    pub clean: bool,
    /// Matched filtering with SEP's default 3 x 3 kernel.
    pub filter: bool,
    /// Background mesh box, pixels.
    pub mesh: usize,
    /// Background median filter, boxes.
    pub smooth: usize,
}

impl Default for ExtractSettings {
    fn default() -> Self {
        ExtractSettings {
            thresh: 1.5,
            minarea: 5,
            deblend: 32,
            contrast: 0.005,
            clean: true,
            filter: true,
            mesh: 64,
            smooth: 3,
        }
    }
}
