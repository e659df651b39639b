//! The `evaluate` stage: metrics, confusion matrices and ROC curves of trained models and
//! ensembles on any data. A model scored on its own dataset's val or test part reuses its
//! predictions; on anything else the saved model runs on the images.

use super::dataset::read_summary;
use super::ensemble::members_dataset;
use super::select::{input_stages, DataLoader, DataSel};
use super::train::predictions;
use super::{part_rows, read_predictions, spec, stage_error, unsupported, Stage, StageKind};
use crate::check::{self, Part, Program};
use crate::data::artifact::{load_json, save_json};
use crate::eval::evaluate;
use crate::plan::{StageId, StageSpec};
use crate::report::model::{ModelEvaluation, ModelSize, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use crate::train::predictions::write_predictions_csv;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const EVALUATION_FILE: &str = "evaluation.json";

/// Where an evaluated model's probabilities come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EvalSource {
    /// The model's own `predictions.csv` already covers the images: its dataset's val or
    /// test part.
    Predictions { part: Part },
    /// Any other images: the saved model runs on them.
    Infer,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvalModel {
    pub name: String,
    pub source: EvalSource,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvaluateConfig {
    pub models: Vec<EvalModel>,
    pub data: DataSel,
    /// `classification_report.txt` (scikit-learn's layout).
    pub report: bool,
    pub confusion: bool,
    pub roc: bool,
    /// `predictions_<model>.csv` of the evaluated images.
    pub predictions: bool,
    /// Batch size for models that run on the images.
    pub batch: usize,
    /// `nn::ENGINE_EPOCH` when a model runs on the images (the engine computes the scores).
    pub engine_epoch: Option<u32>,
}

impl EvaluateConfig {
    pub fn inputs(&self) -> Vec<String> {
        let mut inputs = input_stages([&self.data]);
        inputs.extend(self.models.iter().map(|m| m.name.clone()));
        inputs
    }
}

pub struct EvaluateStage;

impl StageExecutor for EvaluateStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: EvaluateConfig = super::config(ctx)?;
        let described = config.data.describe();
        let summary = read_summary(ctx.input_dir(&StageId::from(config.data.dataset()))?)?;
        // The images, selected once for every model that runs on them or is timed on them.
        let saved = |name: &str| -> Result<bool, StageError> {
            Ok(ctx
                .input_dir(&StageId::from(name))?
                .join(super::PUBLIC)
                .join(super::train::MODEL_FILE)
                .is_file())
        };
        let mut needs_images = false;
        for m in &config.models {
            needs_images |= m.source == EvalSource::Infer || saved(&m.name)?;
        }
        let inferred = match needs_images {
            true => Some(DataLoader::default().select(ctx, &config.data)?),
            false => None,
        };
        let mut evaluations = Vec::new();
        let mut text = String::new();
        for model in &config.models {
            let dir = ctx.input_dir(&StageId::from(model.name.as_str()))?;
            // Loaded once: timed for the comparison table, then run on the images if need be.
            let mut network = match saved(&model.name)? {
                true => Some(super::train::load_model(dir)?),
                false => None,
            };
            let size = match (&inferred, network.as_mut()) {
                (Some(chosen), Some(network)) => {
                    Some(model_size(network, &chosen.images, config.batch)?)
                }
                _ => None,
            };
            let rows = match &model.source {
                EvalSource::Predictions { part } => read_predictions(dir)?
                    .into_iter()
                    .filter(|r| r.split == part.as_str())
                    .collect(),
                EvalSource::Infer => {
                    // Selected above whenever any model runs on the images.
                    let chosen = inferred
                        .as_ref()
                        .ok_or_else(|| StageError::failed("no images were selected"))?;
                    let mut network = match network.take() {
                        Some(network) => network,
                        None => super::train::load_model(dir)?,
                    };
                    predictions(
                        &mut network,
                        &described,
                        &chosen.images,
                        &chosen.indices,
                        config.batch,
                    )?
                }
            };
            let (truth, probs, _) = part_rows(&rows, None, config.data.part_name())?;
            let evaluation = evaluate(&truth, &probs, &summary.class_names).map_err(stage_error)?;
            let name = &model.name;
            if config.report {
                text.push_str(&format!(
                    "{name} on {described}\n{}\n",
                    evaluation.report_text(2)
                ));
            }
            if config.predictions {
                write_predictions_csv(
                    &ctx.public_dir().join(format!("predictions_{name}.csv")),
                    &rows,
                )
                .map_err(stage_error)?;
            }
            if config.confusion {
                let png = crate::report::plots::confusion_heatmap(
                    &evaluation.confusion,
                    &summary.class_names,
                    name,
                )
                .map_err(stage_error)?;
                crate::train::write_atomic(
                    &ctx.public_dir().join(format!("confusion_{name}.png")),
                    &png,
                )
                .map_err(stage_error)?;
            }
            if config.roc {
                let png =
                    crate::report::plots::roc_curves(&evaluation.roc, &summary.class_names, name)
                        .map_err(stage_error)?;
                crate::train::write_atomic(&ctx.public_dir().join(format!("roc_{name}.png")), &png)
                    .map_err(stage_error)?;
            }
            evaluations.push(ModelEvaluation {
                model: name.clone(),
                dataset: described.clone(),
                evaluation,
                size,
            });
        }
        if config.report {
            crate::train::write_atomic(
                &ctx.public_dir().join("classification_report.txt"),
                text.as_bytes(),
            )
            .map_err(stage_error)?;
        }
        save_json(&evaluations, ctx.out_dir().join(EVALUATION_FILE)).map_err(stage_error)
    }
}

/// Images timed per model for the comparison table's speed column.
const SPEED_IMAGES: usize = 128;

/// A saved model's parameters and MFLOPs (from its IR) and its inference speed: one warm-up
/// batch, then up to [`SPEED_IMAGES`] of the evaluated images at the train block's batch size.
fn model_size(
    network: &mut crate::nn::network::Network,
    images: &crate::data::ImageSet,
    batch: usize,
) -> Result<ModelSize, StageError> {
    let n = images.len().min(SPEED_IMAGES);
    let timed = images.subset(&(0..n).collect::<Vec<_>>());
    let warm = images.subset(&(0..n.min(batch)).collect::<Vec<_>>());
    crate::train::predictions::predict_set(network, &warm, batch).map_err(stage_error)?;
    let start = std::time::Instant::now();
    crate::train::predictions::predict_set(network, &timed, batch).map_err(stage_error)?;
    let seconds = start.elapsed().as_secs_f64();
    let ir = network.ir();
    Ok(ModelSize {
        params: ir.total_params(),
        mflops: ir.total_flops() as f64 / 1e6,
        images_per_second: if seconds > 0.0 {
            n as f64 / seconds
        } else {
            0.0
        },
    })
}

impl Stage for EvaluateStage {
    fn kind(&self) -> StageKind {
        StageKind::Evaluate
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        section.evaluations = load_json(dir.join(EVALUATION_FILE)).map_err(stage_error)?;
        Ok(true)
    }
}

/// The dataset whose val and test predictions a model (train or ensemble) carries.
fn predictions_dataset<'a>(program: &'a Program, model: &check::Predictor) -> Option<&'a str> {
    match model {
        check::Predictor::Train { name } => program
            .train(name)
            .and_then(|t| super::train::predicted_dataset(program, t)),
        check::Predictor::Ensemble { name } => program
            .ensemble(name)
            .and_then(|e| members_dataset(program, &e.members)),
        // A search keeps no predictions: its best model runs on the images.
        check::Predictor::SearchBest { .. } => None,
    }
}

pub(super) fn compile(
    program: &Program,
    e: &check::Evaluate,
    label: Option<String>,
) -> Result<StageSpec, Box<check::Error>> {
    let check::Evaluate {
        name,
        models,
        data,
        report,
        confusion,
        roc,
        predictions,
        span,
    } = e;
    let classes = program.dataset(data.dataset()).and_then(|d| d.classes);
    let mut batch = 32;
    let mut evaluated = Vec::new();
    for model in models {
        let own = predictions_dataset(program, model);
        let source = match data {
            check::DataRef::Split { dataset, part }
                if *part != check::Part::Train && own == Some(dataset.as_str()) =>
            {
                EvalSource::Predictions { part: *part }
            }
            _ => {
                match model {
                    check::Predictor::Train { name: model_name }
                    | check::Predictor::SearchBest { name: model_name } => {
                        // A search's trials use its train block's recipe, classes included.
                        let t = match model {
                            check::Predictor::SearchBest { name } => {
                                program.search(name).and_then(|s| program.train(&s.train))
                            }
                            _ => program.train(model_name),
                        };
                        if let (Some(units), Some(classes)) = (t.and_then(|t| t.classes), classes) {
                            if units != classes {
                                return Err(Box::new(check::Error::ClassCount {
                                model: model_name.clone(),
                                units,
                                dataset: data.dataset().to_string(),
                                classes,
                                span: *span,
                                help: Some(format!(
                                    "`{model_name}` was trained on {units} classes; evaluate it on data with the same classes"
                                )),
                            }));
                            }
                        }
                        if let Some(t) = t {
                            batch = t.batch;
                        }
                        EvalSource::Infer
                    }
                    check::Predictor::Ensemble { name: ensemble } => return Err(unsupported(
                        *span,
                        &format!("evaluating ensemble `{ensemble}` on `{data}`"),
                        "an ensemble is scored on the val or test part of its members' own dataset",
                    )),
                }
            }
        };
        evaluated.push(EvalModel {
            name: model.name().to_string(),
            source,
        });
    }
    let engine_epoch = evaluated
        .iter()
        .any(|m| m.source == EvalSource::Infer)
        .then_some(crate::nn::ENGINE_EPOCH);
    let config = EvaluateConfig {
        models: evaluated,
        data: DataSel::of(data),
        report: *report,
        confusion: *confusion,
        roc: *roc,
        predictions: *predictions,
        batch,
        engine_epoch,
    };
    let inputs = config.inputs();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(spec(
        name.clone(),
        StageKind::Evaluate,
        &config,
        &inputs,
        label,
    ))
}
