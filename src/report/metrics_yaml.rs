//! metrics.yaml: every number of the report, per stage, for scripts and diffs. Stages are keyed
//! by name (sorted, so the file is deterministic). ROC curve points are left out — they are
//! thousands of numbers that belong to the figures and the stage artifacts; the AUCs stay.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::files::write_atomic;
use super::model::{EnsembleReport, EpochRow, FigureValue, ReportModel};
use super::ReportError;
use crate::eval::classification::{AverageMetrics, ClassMetrics, TopK};
use crate::eval::crossval::CrossvalSummary;

#[derive(Debug, Serialize)]
pub struct MetricsDocument {
    pub pipeline: String,
    pub stages: BTreeMap<String, StageMetrics>,
}

#[derive(Debug, Serialize)]
pub struct StageMetrics {
    pub kind: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub key_figures: BTreeMap<String, FigureValue>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<EpochRow>,
    /// Keyed by "model on dataset".
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub evaluations: BTreeMap<String, EvaluationMetrics>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crossval: Option<CrossvalSummary>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ensemble: Option<EnsembleReport>,
}

#[derive(Debug, Serialize)]
pub struct EvaluationMetrics {
    pub model: String,
    pub dataset: String,
    pub samples: usize,
    pub accuracy: f64,
    pub macro_avg: AverageMetrics,
    pub weighted_avg: AverageMetrics,
    pub per_class: Vec<ClassMetrics>,
    pub top_k: Vec<TopK>,
    pub log_loss: f64,
    pub confusion: Vec<Vec<u64>>,
    pub confusion_normalized: Vec<Vec<f64>>,
    /// Per class name; null where the class is absent from the true labels.
    pub auc: BTreeMap<String, Option<f64>>,
    pub macro_auc: Option<f64>,
    pub micro_auc: Option<f64>,
}

/// Collects the numbers of every stage.
pub fn metrics_document(model: &ReportModel) -> MetricsDocument {
    let stages = model
        .stages
        .iter()
        .map(|stage| {
            let evaluations = stage
                .evaluations
                .iter()
                .map(|e| {
                    let ev = &e.evaluation;
                    let auc = ev
                        .class_names
                        .iter()
                        .cloned()
                        .zip(ev.roc.auc.iter().copied())
                        .collect();
                    let numbers = EvaluationMetrics {
                        model: e.model.clone(),
                        dataset: e.dataset.clone(),
                        samples: ev.samples,
                        accuracy: ev.accuracy,
                        macro_avg: ev.macro_avg.clone(),
                        weighted_avg: ev.weighted_avg.clone(),
                        per_class: ev.per_class.clone(),
                        top_k: ev.top_k.clone(),
                        log_loss: ev.log_loss,
                        confusion: ev.confusion.counts.clone(),
                        confusion_normalized: ev.confusion.normalized.clone(),
                        auc,
                        macro_auc: ev.roc.macro_auc,
                        micro_auc: ev.roc.micro_auc,
                    };
                    (format!("{} on {}", e.model, e.dataset), numbers)
                })
                .collect();
            let metrics = StageMetrics {
                kind: stage.kind.clone(),
                key_figures: stage
                    .key_figures
                    .iter()
                    .map(|f| (f.label.clone(), f.value.clone()))
                    .collect(),
                history: stage.history.clone(),
                evaluations,
                crossval: stage.crossval.clone(),
                ensemble: stage.ensemble.clone(),
            };
            (stage.name.clone(), metrics)
        })
        .collect();
    MetricsDocument {
        pipeline: model.pipeline.clone(),
        stages,
    }
}

pub fn to_yaml(model: &ReportModel) -> Result<String, ReportError> {
    serde_yaml::to_string(&metrics_document(model)).map_err(|e| ReportError::Yaml {
        reason: e.to_string(),
    })
}

/// Writes metrics.yaml atomically.
pub fn write_metrics_yaml(path: &Path, model: &ReportModel) -> Result<(), ReportError> {
    write_atomic(path, to_yaml(model)?.as_bytes())
}
