//! Reports: PNG figures drawn with plotters in an embedded font (no system fonts), the
//! self-contained report.html, and metrics.yaml, all rendered from a `ReportModel` that the
//! `report` stage fills from the other stages' artifacts.

pub mod boxes;
pub mod contact_sheet;
mod error;
mod files;
mod fonts;
pub mod heatmaps;
pub mod html;
pub mod metrics_yaml;
pub mod model;
pub mod plots;
pub mod pr_curves;
pub mod search_plots;

pub use error::ReportError;
pub use html::{render_report, write_report, ReportFiles};
pub use metrics_yaml::write_metrics_yaml;
pub use model::{
    DagNode, EnsembleReport, EpochRow, KeyFigure, ModelEvaluation, ReportModel, StageReport,
};
