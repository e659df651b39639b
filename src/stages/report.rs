//! The `report` stage: report.html and metrics.yaml from every stage that has a section,
//! each section filled by its kind's `Stage::report`.

use super::{spec, stage_error, Stage, StageKind, REPORT_STAGE};
use crate::plan::StageSpec;
use crate::report::model::{DagNode, ReportModel, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use serde::{Deserialize, Serialize};
use std::path::Path;

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

/// The comparison of the pipeline's detectors, for Python and spreadsheets.
const DETECTORS_CSV: &str = "detectors_compared.csv";

impl StageExecutor for ReportStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: ReportConfig = super::config(ctx)?;
        let mut sections = Vec::new();
        let mut detectors = Vec::new();
        for (node, dir) in config.sections.iter().zip(ctx.input_dirs()) {
            if let Some(section) = stage_section(node, dir)? {
                sections.push(section);
            }
            if node.kind == StageKind::Detect.as_str() {
                if let Some(scores) = super::detect::read_scores(dir) {
                    detectors.push((node.name.clone(), scores, sections.len()));
                }
            }
        }
        if let Some(&(_, _, after)) = detectors.last() {
            // The detectors side by side, after the last of them: in the run's output, as
            // CSV, and as a section of the report.
            let rows: Vec<_> = detectors.into_iter().map(|(n, s, _)| (n, s)).collect();
            let table = super::detect::comparison_table(&rows);
            ctx.notice(format!("detectors compared\n{}", table.to_text()));
            crate::train::write_atomic(
                &ctx.public_dir().join(DETECTORS_CSV),
                table.to_csv().as_bytes(),
            )
            .map_err(stage_error)?;
            let mut section = StageReport::new("detectors compared", "comparison");
            section.tables.push(table);
            sections.insert(after, section);
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

impl Stage for ReportStage {
    fn kind(&self) -> StageKind {
        StageKind::Report
    }

    fn in_report(&self) -> bool {
        false
    }
}

fn stage_section(node: &DagNode, dir: &Path) -> Result<Option<StageReport>, StageError> {
    let Some(stage) = StageKind::parse(&node.kind).map(super::stage) else {
        return Ok(None);
    };
    let mut section = StageReport::new(&node.name, &node.kind);
    Ok(stage.report(dir, &mut section)?.then_some(section))
}

/// The report reads every stage whose kind has a section.
pub(super) fn compile(pipeline: &str, specs: &[StageSpec]) -> StageSpec {
    let node = |s: &StageSpec| DagNode {
        name: s.id.to_string(),
        kind: s.kind.clone(),
        inputs: s.inputs.iter().map(|i| i.to_string()).collect(),
        cached: false,
    };
    let sections: Vec<&StageSpec> = specs
        .iter()
        .filter(|s| StageKind::parse(&s.kind).is_some_and(|k| super::stage(k).in_report()))
        .collect();
    let config = ReportConfig {
        pipeline: pipeline.to_string(),
        dag: specs.iter().map(node).collect(),
        sections: sections.iter().map(|s| node(s)).collect(),
    };
    let inputs: Vec<&str> = sections.iter().map(|s| s.id.as_str()).collect();
    spec(
        REPORT_STAGE.to_string(),
        StageKind::Report,
        &config,
        &inputs,
        None,
    )
}
