//! Finding objects in images. `extract` is the classical detector astronomers use
//! (SExtractor's algorithm, as SEP implements it): background, filtering, thresholding,
//! labelling, deblending, measurement.

pub mod anchors;
pub mod boxes;
pub mod catalog;
pub mod extract;
pub mod fields;
pub mod nms;
pub mod tile;

/// The detector's diagnostics.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DetectError {
    #[error("extract: {setting} = {value} is not allowed: expected {expected}")]
    #[diagnostic(code(gpl::detect::bad_setting))]
    BadSetting {
        setting: String,
        value: String,
        expected: String,
    },

    #[error("extract: unusable image: {detail}")]
    #[diagnostic(code(gpl::detect::bad_image))]
    BadImage { detail: String },
}
