//! The `ensemble` stage: weighted soft voting over trained models' predictions, with fixed
//! weights or weights searched on a validation part.

use super::train::PREDICTIONS_FILE;
use super::{
    part_rows, read_predictions, spec, stage_error, unsupported, Artifacts, Stage, StageKind,
};
use crate::check::{self, Program};
use crate::data::artifact::{load_json, save_json};
use crate::eval::ensemble::{
    normalize_weights, search_weights, soft_vote, SearchOptions, WeightSearch,
};
use crate::eval::ProbMatrix;
use crate::plan::StageSpec;
use crate::report::model::{EnsembleReport, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use crate::train::predictions::{write_predictions_csv, PredictionRow};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const ENSEMBLE_FILE: &str = "ensemble.json";

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
                    .map(|m| part_rows(m, Some(part), part))
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
                .map(|m| part_rows(m, Some(part), part))
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

impl Stage for EnsembleStage {
    fn kind(&self) -> StageKind {
        StageKind::Ensemble
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let artifact: EnsembleArtifact = load_json(dir.join(ENSEMBLE_FILE)).map_err(stage_error)?;
        section.ensemble = Some(EnsembleReport {
            members: artifact.members,
            weights: artifact.weights,
            search: artifact.search,
        });
        Ok(true)
    }
}

pub(super) fn compile(
    program: &Program,
    e: &check::Ensemble,
    label: Option<String>,
) -> Result<StageSpec, Box<check::Error>> {
    let check::Ensemble {
        name,
        members,
        weights,
        span,
    } = e;
    let weights = match weights {
        check::EnsembleWeights::Fixed { weights } => EnsembleWeightsConfig::Fixed {
            weights: weights.clone(),
        },
        check::EnsembleWeights::Search { on, step } => {
            let part = match on {
                check::DataRef::Split { dataset, part }
                    if *part != check::Part::Train
                        && Some(dataset.as_str()) == members_dataset(program, members) =>
                {
                    *part
                }
                _ => {
                    return Err(unsupported(
                        *span,
                        &format!("searching ensemble weights on `{on}`"),
                        "search on the val or test part of the members' own dataset, e.g. `weights search on galaxy10.val`",
                    ))
                }
            };
            EnsembleWeightsConfig::Search {
                part: part.as_str().to_string(),
                step: *step,
            }
        }
    };
    let config = EnsembleConfig {
        members: members.clone(),
        weights,
    };
    let inputs: Vec<&str> = members.iter().map(String::as_str).collect();
    Ok(spec(
        name.clone(),
        StageKind::Ensemble,
        &config,
        &inputs,
        label,
    ))
}

/// The dataset an ensemble's members all predicted, if they agree on one.
pub(super) fn members_dataset<'a>(program: &'a Program, members: &[String]) -> Option<&'a str> {
    // A member is a train stage or a search, whose best trial predicts with its train
    // block's data.
    let mut datasets = members.iter().map(|m| {
        program
            .train(m)
            .or_else(|| program.search(m).and_then(|s| program.train(&s.train)))
            .and_then(|t| super::train::predicted_dataset(program, t))
    });
    let first = datasets.next()??;
    datasets.all(|d| d == Some(first)).then_some(first)
}
