//! Evaluation: classification metrics with scikit-learn's semantics, one-vs-rest ROC/AUC,
//! the Wilcoxon signed-rank test as SciPy computes it, cross-validation summaries, and
//! weighted soft-voting ensembles. Pure functions over labels and probability matrices; the
//! `evaluate`, `crossval` and `ensemble` stages wrap them. `detection` holds COCO's box metrics
//! as pycocotools computes them.

pub mod classification;
pub mod crossval;
pub mod detection;
pub mod detection_csv;
pub mod ensemble;
mod error;
mod probs;
pub mod roc;
mod special;
pub mod stats;

pub use classification::{evaluate, Evaluation, ModelScores};
pub use error::EvalError;
pub use probs::ProbMatrix;
