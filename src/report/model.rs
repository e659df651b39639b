//! `ReportModel`: everything the report shows, as plain data the `report` stage fills from the
//! other stages' artifacts. The HTML, the figures and metrics.yaml are all rendered from it.

use serde::{Deserialize, Serialize};

use crate::eval::crossval::CrossvalSummary;
use crate::eval::ensemble::WeightSearch;
use crate::eval::{Evaluation, ModelScores};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportModel {
    /// The pipeline's name (the report's title).
    pub pipeline: String,
    /// The stage graph, in a topological order.
    pub dag: Vec<DagNode>,
    /// One section per stage, in the order they should appear.
    pub stages: Vec<StageReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DagNode {
    pub name: String,
    /// The stage kind: dataset, split, train, evaluate, ensemble, crossval, ...
    pub kind: String,
    /// Names of the stages this one reads.
    #[serde(default)]
    pub inputs: Vec<String>,
    /// Loaded from the cache rather than executed in this run.
    #[serde(default)]
    pub cached: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    pub name: String,
    pub kind: String,
    /// Headline numbers or facts (samples, parameters, epochs run, wall time, ...).
    #[serde(default)]
    pub key_figures: Vec<KeyFigure>,
    /// Per-epoch history of a training stage.
    #[serde(default)]
    pub history: Vec<EpochRow>,
    /// Models evaluated by this stage (an evaluate stage, or an ensemble's own evaluation).
    #[serde(default)]
    pub evaluations: Vec<ModelEvaluation>,
    #[serde(default)]
    pub crossval: Option<CrossvalSummary>,
    #[serde(default)]
    pub ensemble: Option<EnsembleReport>,
    #[serde(default)]
    pub explain: Option<ExplainReport>,
    #[serde(default)]
    pub search: Option<SearchReport>,
    /// Tables a stage kind fills without a block of its own in the page (detect, chain).
    #[serde(default)]
    pub tables: Vec<ReportTable>,
    /// Figures a stage wrote to its folder, shown after its tables.
    #[serde(default)]
    pub figures: Vec<StageFigure>,
}

/// A titled table of text cells.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportTable {
    pub title: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// A sentence under the table (how the numbers were made).
    #[serde(default)]
    pub note: Option<String>,
}

impl ReportTable {
    /// The table as aligned text for a terminal: the first column to the left, the others
    /// to the right, the note under it.
    pub fn to_text(&self) -> String {
        let columns = self.header.len();
        let width: Vec<usize> = (0..columns)
            .map(|c| {
                std::iter::once(&self.header)
                    .chain(&self.rows)
                    .filter_map(|r| r.get(c))
                    .map(|cell| cell.chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |row: &[String]| {
            let cells: Vec<String> = row
                .iter()
                .enumerate()
                .map(|(c, cell)| match c {
                    0 => format!("{cell:<w$}", w = width[0]),
                    _ => format!("{cell:>w$}", w = width[c]),
                })
                .collect();
            cells.join("  ").trim_end().to_string()
        };
        let mut out = vec![self.title.clone(), line(&self.header)];
        out.extend(self.rows.iter().map(|r| line(r)));
        if let Some(note) = &self.note {
            out.push(note.clone());
        }
        out.join("\n")
    }

    /// The table as CSV (cells quoted where they hold a comma or a quote).
    pub fn to_csv(&self) -> String {
        let cell = |c: &String| {
            if c.contains([',', '"', '\n']) {
                format!("\"{}\"", c.replace('"', "\"\""))
            } else {
                c.clone()
            }
        };
        std::iter::once(&self.header)
            .chain(&self.rows)
            .map(|r| r.iter().map(cell).collect::<Vec<_>>().join(",") + "\n")
            .collect()
    }
}

impl StageReport {
    /// A section with only a name and a kind; fill the rest field by field.
    pub fn new(name: impl Into<String>, kind: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            kind: kind.into(),
            key_figures: Vec::new(),
            history: Vec::new(),
            evaluations: Vec::new(),
            crossval: None,
            ensemble: None,
            explain: None,
            search: None,
            tables: Vec::new(),
            figures: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyFigure {
    pub label: String,
    pub value: FigureValue,
}

impl KeyFigure {
    pub fn number(label: impl Into<String>, value: f64) -> Self {
        Self {
            label: label.into(),
            value: FigureValue::Number(value),
        }
    }

    pub fn text(label: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            label: label.into(),
            value: FigureValue::Text(value.into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FigureValue {
    Number(f64),
    Text(String),
}

/// One row of a Keras-style training history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    /// 1-based.
    pub epoch: usize,
    pub loss: f64,
    #[serde(default)]
    pub accuracy: Option<f64>,
    #[serde(default)]
    pub val_loss: Option<f64>,
    #[serde(default)]
    pub val_accuracy: Option<f64>,
    /// Learning rate used during the epoch.
    #[serde(default)]
    pub lr: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelEvaluation {
    pub model: String,
    /// What it was evaluated on, e.g. "galaxy10.test".
    pub dataset: String,
    pub evaluation: Evaluation,
    /// Absent for an ensemble, which has no single saved model.
    #[serde(default)]
    pub size: Option<ModelSize>,
}

/// How big and how fast a saved model is, for the comparison table.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ModelSize {
    pub params: usize,
    /// Floating-point operations of one image's forward pass, in millions (a multiply-add
    /// counts two).
    pub mflops: f64,
    /// Inference speed measured on this machine when the stage ran (see the evaluate stage):
    /// a timing, so it varies from run to run.
    pub images_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnsembleReport {
    pub members: Vec<String>,
    /// Normalised weights, one per member.
    pub weights: Vec<f64>,
    /// Present when the weights were searched on validation predictions.
    #[serde(default)]
    pub search: Option<WeightSearch>,
}

/// One row of the comparison table: a model evaluated on a dataset by a stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ComparisonRow {
    pub model: String,
    pub dataset: String,
    pub stage: String,
    pub scores: ModelScores,
    pub size: Option<ModelSize>,
}

impl ReportModel {
    /// Every evaluated model across the stages, in stage order.
    pub fn comparison_rows(&self) -> Vec<ComparisonRow> {
        self.stages
            .iter()
            .flat_map(|stage| {
                stage.evaluations.iter().map(move |e| ComparisonRow {
                    model: e.model.clone(),
                    dataset: e.dataset.clone(),
                    stage: stage.name.clone(),
                    scores: e.evaluation.summary(),
                    size: e.size,
                })
            })
            .collect()
    }
}

/// An explain stage's section: its figures (PNG files it wrote) and the sanity checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct ExplainReport {
    pub model: String,
    pub data: String,
    pub figures: Vec<StageFigure>,
    /// Cascading randomisation per map method (empty when `sanity false`).
    pub sanity: Vec<SanityRow>,
    /// Deletion curve per map method.
    pub deletion: Vec<DeletionRow>,
}

/// A figure a stage wrote to its folder (explain, search), shown in its report section.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageFigure {
    pub title: String,
    /// The PNG's file name in the stage's folder.
    pub file: String,
    /// The PNG itself, read back from the stage's folder when the report is built.
    #[serde(skip)]
    pub png: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SanityRow {
    pub method: String,
    /// Layers re-initialised so far at each step, top first.
    pub layers: Vec<String>,
    /// Mean Spearman correlation of trained vs randomised maps at each step.
    pub spearman: Vec<Option<f64>>,
    /// Set when the maps stay similar after the whole network is randomised, in plain words.
    pub warning: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeletionRow {
    pub method: String,
    /// Mean target probability at each removed fraction 0, 1/steps, …, 1.
    pub curve: Vec<f64>,
    /// Mean area under the curve (lower: the map finds what the model uses).
    pub auc: f64,
}

/// A search stage's section: every trial and the best-so-far curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SearchReport {
    pub dims: Vec<String>,
    /// (trial, values, objective, params, MFLOPs, status), in trial order.
    #[allow(clippy::type_complexity)]
    pub trials: Vec<(usize, Vec<f64>, Option<f64>, usize, f64, String)>,
    pub best: Option<usize>,
    pub metric: String,
    pub figures: Vec<StageFigure>,
}
