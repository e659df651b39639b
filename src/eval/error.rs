//! The evaluation library's error catalogue: every way bad predictions, labels or weights are
//! refused, each with a stable code and a help line.

use miette::Diagnostic;
use thiserror::Error;

#[derive(Debug, Error, Diagnostic, Clone, PartialEq)]
pub enum EvalError {
    #[error(
        "the probability matrix has {values} values, which is not {rows} rows × {classes} classes"
    )]
    #[diagnostic(
        code(gpl::eval::shape_mismatch),
        help("probabilities are stored row-major: one row per sample, one column per class")
    )]
    ShapeMismatch {
        values: usize,
        rows: usize,
        classes: usize,
    },

    #[error("there are {labels} true labels but {rows} rows of probabilities")]
    #[diagnostic(
        code(gpl::eval::length_mismatch),
        help("labels and predictions must come from the same samples, in the same order")
    )]
    LengthMismatch { labels: usize, rows: usize },

    #[error("nothing to evaluate: {what} is empty")]
    #[diagnostic(
        code(gpl::eval::empty),
        help("evaluate on a split with at least one sample")
    )]
    Empty { what: &'static str },

    #[error(
        "a classifier needs at least one class, got a probability matrix with {classes} columns"
    )]
    #[diagnostic(code(gpl::eval::no_classes))]
    NoClasses { classes: usize },

    #[error("true label {label} of sample {sample} is not a class index below {classes}")]
    #[diagnostic(
        code(gpl::eval::label_out_of_range),
        help("labels are 0-based class indices into the probability columns")
    )]
    LabelOutOfRange {
        sample: usize,
        label: u32,
        classes: usize,
    },

    #[error("{names} class names were given for {classes} classes")]
    #[diagnostic(
        code(gpl::eval::class_names),
        help("give one name per probability column")
    )]
    ClassNames { names: usize, classes: usize },

    #[error("the score of sample {row}, class {class} is {value}, not a finite number")]
    #[diagnostic(
        code(gpl::eval::non_finite),
        help("a NaN or infinite probability usually means the model diverged during training")
    )]
    NonFinite {
        row: usize,
        class: usize,
        value: f64,
    },

    #[error("the paired samples have different lengths ({left} and {right})")]
    #[diagnostic(
        code(gpl::eval::unpaired),
        help("a paired test compares the same folds: give one score per fold for each model")
    )]
    Unpaired { left: usize, right: usize },

    #[error("every paired difference is zero, so the signed-rank test has nothing to rank")]
    #[diagnostic(
        code(gpl::eval::all_ties),
        help("the two models scored identically on every fold; there is no difference to test")
    )]
    AllDifferencesZero,

    #[error("the exact Wilcoxon distribution for {n} non-zero differences is too large to build")]
    #[diagnostic(
        code(gpl::eval::exact_too_large),
        help("above {max} pairs use the normal approximation (method auto or asymptotic)")
    )]
    ExactTooLarge { n: usize, max: usize },

    #[error("a sample value is {value}, not a finite number")]
    #[diagnostic(code(gpl::eval::non_finite_sample))]
    NonFiniteSample { value: f64 },

    #[error("ensemble weights are invalid: {reason}")]
    #[diagnostic(
        code(gpl::eval::ensemble_weights),
        help("give one non-negative weight per member, with a positive sum; they are normalised to sum to 1")
    )]
    EnsembleWeights { reason: String },

    #[error("ensemble member {member} has {rows}×{classes} probabilities, the first member {rows0}×{classes0}")]
    #[diagnostic(
        code(gpl::eval::ensemble_shapes),
        help("members must predict the same samples over the same classes")
    )]
    EnsembleShapes {
        member: usize,
        rows: usize,
        classes: usize,
        rows0: usize,
        classes0: usize,
    },

    #[error("an ensemble needs at least one member")]
    #[diagnostic(code(gpl::eval::ensemble_empty))]
    EnsembleEmpty,

    #[error("invalid search option: {reason}")]
    #[diagnostic(code(gpl::eval::search_options))]
    SearchOptions { reason: String },

    #[error("k = {k} is not a valid top-k size for {classes} classes")]
    #[diagnostic(
        code(gpl::eval::top_k),
        help("k counts the best-scored classes, from 1")
    )]
    TopK { k: usize, classes: usize },

    #[error("invalid box evaluation input: {reason}")]
    #[diagnostic(
        code(gpl::eval::detection),
        help("boxes are (xmin, ymin, xmax, ymax) in pixels on images and classes counted from 0")
    )]
    Detection { reason: String },

    #[error("{}:{line}: {reason}", path.display())]
    #[diagnostic(
        code(gpl::eval::detections_csv),
        help("detections are CSV with the header image,class,score,xmin,ymin,xmax,ymax; image is a file name or stem of the truth, class one of its class names")
    )]
    DetectionsCsv {
        path: std::path::PathBuf,
        line: usize,
        reason: String,
    },
}
