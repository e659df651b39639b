//! The evaluation stages: `evaluate` (metrics of trained models and ensembles on a split
//! part), `ensemble` (weighted soft voting, fixed or searched weights), `crossval_fold` (one
//! model's whole recipe trained on one fold), `crossval` (the fold table and the Wilcoxon
//! test) and `report` (report.html and metrics.yaml from every stage's artifacts).

use super::data::{read_balance, read_summary};
use super::train::{epoch_rows, fit_recipe, predictions, read_history, Recipe, PREDICTIONS_FILE};
use super::{stage_error, Artifacts, PUBLIC};
use crate::data::artifact::{load_json, save_json};
use crate::data::balance::{balance, materialize, BalanceSpec};
use crate::data::split::{holdout, kfold, HoldoutSpec};
use crate::eval::crossval::{summarize_crossval, CrossvalSummary, Metric, ModelFolds};
use crate::eval::ensemble::{
    normalize_weights, search_weights, soft_vote, SearchOptions, WeightSearch,
};
use crate::eval::{evaluate, ModelScores, ProbMatrix};
use crate::report::model::{
    DagNode, EnsembleReport, KeyFigure, ModelEvaluation, ReportModel, StageReport,
};
use crate::run::{StageContext, StageError, StageExecutor};
use crate::train::predictions::{read_predictions_csv, write_predictions_csv, PredictionRow};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const EVALUATION_FILE: &str = "evaluation.json";
pub const ENSEMBLE_FILE: &str = "ensemble.json";
pub const FOLD_FILE: &str = "fold.json";
pub const CROSSVAL_FILE: &str = "crossval.json";

/// Rows of a predictions file for one split part, in file order; an error when the part
/// has no rows (a dataset of a few images leaves a split part empty).
fn part_rows(
    rows: &[PredictionRow],
    part: &str,
) -> Result<(Vec<u32>, ProbMatrix, Vec<usize>), StageError> {
    let chosen: Vec<&PredictionRow> = rows.iter().filter(|r| r.split == part).collect();
    if chosen.is_empty() {
        return Err(StageError::failed(format!(
            "the `{part}` part has no images to evaluate on: the dataset is too small for its split; use more images or a larger `{part}` fraction"
        )));
    }
    let classes = chosen.first().map_or(0, |r| r.probabilities.len());
    let values: Vec<f64> = chosen
        .iter()
        .flat_map(|r| r.probabilities.iter().map(|&p| p as f64))
        .collect();
    let truth = chosen.iter().map(|r| r.truth).collect();
    let indices = chosen.iter().map(|r| r.index).collect();
    let probs = ProbMatrix::new(chosen.len(), classes, values).map_err(stage_error)?;
    Ok((truth, probs, indices))
}

fn read_predictions(dir: &Path) -> Result<Vec<PredictionRow>, StageError> {
    read_predictions_csv(&dir.join(PUBLIC).join(PREDICTIONS_FILE)).map_err(stage_error)
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluateConfig {
    /// Model names, in the order of the inputs after the dataset.
    pub models: Vec<String>,
    /// `galaxy10.test` for people, `test` for the predictions file.
    pub data: String,
    pub part: String,
    pub confusion: bool,
    pub roc: bool,
}

pub struct EvaluateStage;

impl StageExecutor for EvaluateStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: EvaluateConfig = super::config(ctx)?;
        let summary = read_summary(Artifacts::of(ctx, 0)?.dir)?;
        let mut evaluations = Vec::new();
        let mut text = String::new();
        for (i, model) in config.models.iter().enumerate() {
            let rows = read_predictions(Artifacts::of(ctx, i + 1)?.dir)?;
            let (truth, probs, _) = part_rows(&rows, &config.part)?;
            let evaluation = evaluate(&truth, &probs, &summary.class_names).map_err(stage_error)?;
            text.push_str(&format!(
                "{model} on {}\n{}\n",
                config.data,
                evaluation.report_text(2)
            ));
            if config.confusion {
                let png = crate::report::plots::confusion_heatmap(
                    &evaluation.confusion,
                    &summary.class_names,
                    model,
                )
                .map_err(stage_error)?;
                crate::train::write_atomic(
                    &ctx.public_dir().join(format!("confusion_{model}.png")),
                    &png,
                )
                .map_err(stage_error)?;
            }
            if config.roc {
                let png =
                    crate::report::plots::roc_curves(&evaluation.roc, &summary.class_names, model)
                        .map_err(stage_error)?;
                crate::train::write_atomic(
                    &ctx.public_dir().join(format!("roc_{model}.png")),
                    &png,
                )
                .map_err(stage_error)?;
            }
            evaluations.push(ModelEvaluation {
                model: model.clone(),
                dataset: config.data.clone(),
                evaluation,
            });
        }
        crate::train::write_atomic(
            &ctx.public_dir().join("classification_report.txt"),
            text.as_bytes(),
        )
        .map_err(stage_error)?;
        save_json(&evaluations, ctx.out_dir().join(EVALUATION_FILE)).map_err(stage_error)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnsembleWeightsConfig {
    Fixed { weights: Vec<f64> },
    Search { part: String, step: f64 },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleConfig {
    pub members: Vec<String>,
    pub weights: EnsembleWeightsConfig,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleArtifact {
    pub members: Vec<String>,
    pub weights: Vec<f64>,
    pub search: Option<WeightSearch>,
}

pub struct EnsembleStage;

impl StageExecutor for EnsembleStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: EnsembleConfig = super::config(ctx)?;
        let members: Vec<Vec<PredictionRow>> = (0..config.members.len())
            .map(|i| read_predictions(Artifacts::of(ctx, i)?.dir))
            .collect::<Result<_, _>>()?;
        let (weights, search) = match &config.weights {
            EnsembleWeightsConfig::Fixed { weights } => {
                (normalize_weights(weights).map_err(stage_error)?, None)
            }
            EnsembleWeightsConfig::Search { part, step } => {
                let parts: Vec<(Vec<u32>, ProbMatrix, Vec<usize>)> = members
                    .iter()
                    .map(|m| part_rows(m, part))
                    .collect::<Result<_, _>>()?;
                let probs: Vec<&ProbMatrix> = parts.iter().map(|p| &p.1).collect();
                let options = SearchOptions {
                    step: *step,
                    ..SearchOptions::default()
                };
                let found = search_weights(&probs, &parts[0].0, &options).map_err(stage_error)?;
                ctx.notice(format!(
                    "searched weights {:?} (validation accuracy {:.4})",
                    found
                        .weights
                        .iter()
                        .map(|w| (w * 1000.0).round() / 1000.0)
                        .collect::<Vec<_>>(),
                    found.accuracy
                ));
                (found.weights.clone(), Some(found))
            }
        };
        let mut rows = Vec::new();
        for part in ["val", "test"] {
            let parts: Vec<(Vec<u32>, ProbMatrix, Vec<usize>)> = members
                .iter()
                .map(|m| part_rows(m, part))
                .collect::<Result<_, _>>()?;
            if parts.iter().any(|p| p.2 != parts[0].2) {
                return Err(StageError::failed(format!(
                    "ensemble members predicted different {part} samples"
                )));
            }
            let probs: Vec<&ProbMatrix> = parts.iter().map(|p| &p.1).collect();
            let voted = soft_vote(&probs, &weights).map_err(stage_error)?;
            for (r, (&truth, &index)) in parts[0].0.iter().zip(&parts[0].2).enumerate() {
                rows.push(PredictionRow {
                    split: part.to_string(),
                    index,
                    truth,
                    probabilities: voted.row(r).iter().map(|&p| p as f32).collect(),
                });
            }
        }
        write_predictions_csv(&ctx.public_dir().join(PREDICTIONS_FILE), &rows)
            .map_err(stage_error)?;
        let artifact = EnsembleArtifact {
            members: config.members.clone(),
            weights,
            search,
        };
        save_json(&artifact, ctx.out_dir().join(ENSEMBLE_FILE)).map_err(stage_error)?;
        save_json(&artifact, ctx.public_dir().join(ENSEMBLE_FILE)).map_err(stage_error)
    }
}

/// One model's recipe trained and scored on one fold of the whole dataset.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldConfig {
    pub model: String,
    pub recipe: Recipe,
    /// The rebalancing the model's own data had, applied to this fold's training part.
    pub balance: Option<BalanceSpec>,
    pub folds: usize,
    pub fold: usize,
    pub seed: u64,
    /// Share of the fold's training part held out for the callbacks' validation metrics.
    pub val_fraction: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldArtifact {
    pub model: String,
    pub fold: usize,
    pub scores: ModelScores,
}

pub struct CrossvalFoldStage;

impl StageExecutor for CrossvalFoldStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: FoldConfig = super::config(ctx)?;
        let set = Artifacts::of(ctx, 0)?.images()?;
        let folds = kfold(&set.labels, config.folds, config.seed).map_err(stage_error)?;
        let fold = folds
            .get(config.fold)
            .ok_or_else(|| StageError::failed("fold index out of range"))?;
        // Validation for the callbacks comes out of the fold's training part, stratified.
        let fold_labels: Vec<u32> = fold.train.iter().map(|&i| set.labels[i]).collect();
        let inner = holdout(
            &fold_labels,
            &HoldoutSpec {
                train: 1.0 - config.val_fraction,
                val: config.val_fraction,
                test: 0.0,
                seed: config.seed,
            },
        )
        .map_err(stage_error)?;
        let train_idx: Vec<usize> = inner.train.iter().map(|&i| fold.train[i]).collect();
        let val_idx: Vec<usize> = inner.val.iter().map(|&i| fold.train[i]).collect();
        let (train, weights) = match &config.balance {
            Some(spec) => {
                let index = balance(&set.labels, set.class_names.len(), &train_idx, spec)
                    .map_err(stage_error)?;
                (materialize(&set, &index), index.class_weights)
            }
            None => (set.subset(&train_idx), None),
        };
        let val = set.subset(&val_idx);
        let mut network = fit_recipe(ctx, &config.recipe, &train, weights.as_deref(), &val)?;
        let test = set.subset(&fold.test);
        let rows = predictions(
            network.as_mut(),
            "test",
            &test,
            &fold.test,
            config.recipe.fit.batch_size,
        )?;
        write_predictions_csv(&ctx.public_dir().join(PREDICTIONS_FILE), &rows)
            .map_err(stage_error)?;
        let (truth, probs, _) = part_rows(&rows, "test")?;
        let scores = evaluate(&truth, &probs, &set.class_names)
            .map_err(stage_error)?
            .summary();
        let artifact = FoldArtifact {
            model: config.model,
            fold: config.fold,
            scores,
        };
        save_json(&artifact, ctx.out_dir().join(FOLD_FILE)).map_err(stage_error)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossvalConfig {
    pub models: Vec<String>,
    pub folds: usize,
    pub alpha: f64,
}

pub struct CrossvalStage;

impl StageExecutor for CrossvalStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: CrossvalConfig = super::config(ctx)?;
        let mut models: Vec<ModelFolds> = config
            .models
            .iter()
            .map(|m| ModelFolds {
                model: m.clone(),
                folds: Vec::new(),
            })
            .collect();
        for dir in ctx.input_dirs() {
            let fold: FoldArtifact = load_json(dir.join(FOLD_FILE)).map_err(stage_error)?;
            if let Some(m) = models.iter_mut().find(|m| m.model == fold.model) {
                m.folds.push(fold.scores);
            }
        }
        let summary =
            summarize_crossval(models, Metric::Accuracy, config.alpha).map_err(stage_error)?;
        for comparison in &summary.comparisons {
            ctx.notice(&comparison.verdict);
        }
        save_json(&summary, ctx.out_dir().join(CROSSVAL_FILE)).map_err(stage_error)?;
        save_json(&summary, ctx.public_dir().join(CROSSVAL_FILE)).map_err(stage_error)
    }
}

/// The report's view of the plan: each stage with its kind and inputs, in plan order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReportConfig {
    pub pipeline: String,
    /// Every stage of the plan, for the DAG picture.
    pub dag: Vec<DagNode>,
    /// The stages with a report section: the report stage's inputs, in the same order.
    pub sections: Vec<DagNode>,
}

pub struct ReportStage;

impl StageExecutor for ReportStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: ReportConfig = super::config(ctx)?;
        let mut sections = Vec::new();
        for (node, dir) in config.sections.iter().zip(ctx.input_dirs()) {
            if let Some(section) = stage_section(node, dir)? {
                sections.push(section);
            }
        }
        let model = ReportModel {
            pipeline: config.pipeline.clone(),
            dag: config.dag.clone(),
            stages: sections,
        };
        crate::report::write_report(ctx.public_dir(), &model).map_err(stage_error)?;
        Ok(())
    }
}

fn stage_section(node: &DagNode, dir: &Path) -> Result<Option<StageReport>, StageError> {
    let mut section = StageReport::new(&node.name, &node.kind);
    match node.kind.as_str() {
        super::DATASET => {
            let summary = read_summary(dir)?;
            section
                .key_figures
                .push(KeyFigure::text("source", &summary.source));
            section
                .key_figures
                .push(KeyFigure::number("images", summary.images as f64));
            section.key_figures.push(KeyFigure::number(
                "classes",
                summary.class_names.len() as f64,
            ));
            let counts: Vec<String> = summary.class_counts.iter().map(usize::to_string).collect();
            section
                .key_figures
                .push(KeyFigure::text("images per class", counts.join(", ")));
        }
        super::BALANCE => {
            let index = read_balance(dir)?;
            section.key_figures.push(KeyFigure::number(
                "training images",
                index.entries.len() as f64,
            ));
            let after: Vec<String> = index.counts_after.iter().map(usize::to_string).collect();
            section
                .key_figures
                .push(KeyFigure::text("images per class", after.join(", ")));
            if let Some(w) = &index.class_weights {
                let w: Vec<String> = w.iter().map(|x| format!("{x:.4}")).collect();
                section
                    .key_figures
                    .push(KeyFigure::text("class weights", w.join(", ")));
            }
        }
        super::TRAIN => {
            let history = read_history(dir)?;
            section
                .key_figures
                .push(KeyFigure::number("epochs run", history.len() as f64));
            if let Some(best) = history
                .epochs
                .iter()
                .filter_map(|e| e.val_accuracy)
                .reduce(f64::max)
            {
                section
                    .key_figures
                    .push(KeyFigure::number("best val_accuracy", best));
            }
            let seconds: f64 = history.epochs.iter().map(|e| e.seconds).sum();
            section
                .key_figures
                .push(KeyFigure::number("training seconds", seconds));
            section.history = epoch_rows(&history);
        }
        super::EVALUATE => {
            section.evaluations = load_json(dir.join(EVALUATION_FILE)).map_err(stage_error)?;
        }
        super::ENSEMBLE => {
            let artifact: EnsembleArtifact =
                load_json(dir.join(ENSEMBLE_FILE)).map_err(stage_error)?;
            section.ensemble = Some(EnsembleReport {
                members: artifact.members,
                weights: artifact.weights,
                search: artifact.search,
            });
        }
        super::CROSSVAL => {
            let summary: CrossvalSummary =
                load_json(dir.join(CROSSVAL_FILE)).map_err(stage_error)?;
            section.crossval = Some(summary);
        }
        _ => return Ok(None),
    }
    Ok(Some(section))
}
