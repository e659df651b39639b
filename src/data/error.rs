//! The data layer's one error catalogue: every failure names the file and dataset it concerns.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DataError {
    #[error("{path}: no such file")]
    #[diagnostic(
        code(gpl::data::missing_file),
        help("Galaxy10.h5 comes from astroNN (https://astronn.readthedocs.io/en/latest/galaxy10sdss.html); or use `gpl data synth` for a synthetic stand-in")
    )]
    MissingFile { path: PathBuf },

    #[error("{path}: not an HDF5 file (no HDF5 signature)")]
    #[diagnostic(
        code(gpl::data::not_hdf5),
        help("check the path; Galaxy10 files are HDF5 (.h5)")
    )]
    NotHdf5 { path: PathBuf },

    #[error("{path}: truncated or damaged HDF5 file ({detail})")]
    #[diagnostic(
        code(gpl::data::truncated),
        help("the download or copy was probably interrupted; fetch the file again")
    )]
    Truncated { path: PathBuf, detail: String },

    #[error("{path}: no dataset `{dataset}` (datasets: {available})")]
    #[diagnostic(code(gpl::data::missing_dataset), help("name the dataset that holds the images or labels, e.g. images: \"images\", labels: \"ans\""))]
    MissingDataset {
        path: PathBuf,
        dataset: String,
        available: String,
    },

    #[error("{path}: dataset `{dataset}` has shape {found:?}, expected {expected}")]
    #[diagnostic(
        code(gpl::data::wrong_rank),
        help("images must be N×H×W×C (or N×H×W), labels N")
    )]
    WrongRank {
        path: PathBuf,
        dataset: String,
        expected: String,
        found: Vec<usize>,
    },

    #[error("{path}: dataset `{dataset}` has type {found}, expected {expected}")]
    #[diagnostic(
        code(gpl::data::wrong_dtype),
        help("images: uint8 or float in [0,1] or [0,255]; labels: any integer type")
    )]
    WrongDtype {
        path: PathBuf,
        dataset: String,
        expected: String,
        found: String,
    },

    #[error("{path}: dataset `{dataset}` has pixel value {value} at flat index {index}, outside [0, 255]")]
    #[diagnostic(
        code(gpl::data::pixel_out_of_range),
        help("float images must lie in [0, 1] or [0, 255] and contain no NaN")
    )]
    PixelOutOfRange {
        path: PathBuf,
        dataset: String,
        index: usize,
        value: f64,
    },

    #[error(
        "{path}: dataset `{dataset}` has label {value} at index {index}, outside 0..{classes}"
    )]
    #[diagnostic(
        code(gpl::data::label_out_of_range),
        help("Galaxy10 labels are class ids 0..9")
    )]
    LabelOutOfRange {
        path: PathBuf,
        dataset: String,
        index: usize,
        value: i64,
        classes: usize,
    },

    #[error("{path}: `{images}` holds {n_images} images but `{labels}` holds {n_labels} labels")]
    #[diagnostic(
        code(gpl::data::count_mismatch),
        help("images and labels must have the same first dimension")
    )]
    CountMismatch {
        path: PathBuf,
        images: String,
        labels: String,
        n_images: usize,
        n_labels: usize,
    },

    #[error("{path}: HDF5 error: {detail}")]
    #[diagnostic(code(gpl::data::hdf5))]
    Hdf5 { path: PathBuf, detail: String },

    #[error("{path}: {source}")]
    #[diagnostic(code(gpl::data::io))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("{path}: cannot decode image: {detail}")]
    #[diagnostic(code(gpl::data::bad_image), help("supported formats: PNG, JPEG, TIFF"))]
    BadImage { path: PathBuf, detail: String },

    #[error("{path}: no class folders with images found")]
    #[diagnostic(
        code(gpl::data::empty_folder),
        help("an image folder holds one sub-folder per class, each with PNG/JPEG/TIFF files")
    )]
    EmptyFolder { path: PathBuf },

    #[error("class {class} does not exist (classes are 0..{classes})")]
    #[diagnostic(code(gpl::data::unknown_class))]
    UnknownClass { class: u32, classes: usize },

    #[error("invalid {what}: {detail}")]
    #[diagnostic(code(gpl::data::invalid_config))]
    InvalidConfig { what: &'static str, detail: String },

    #[error("{path}: not a valid gpl artifact: {detail}")]
    #[diagnostic(
        code(gpl::data::bad_artifact),
        help("the cache entry is damaged; `gpl clean` and run again")
    )]
    BadArtifact { path: PathBuf, detail: String },

    #[error("{location}: {reason}")]
    #[diagnostic(
        code(gpl::data::voc),
        help("a VOC folder holds one labelImg XML per image, the image beside it; boxes are pixels with 0 ≤ xmin < xmax ≤ width and 0 ≤ ymin < ymax ≤ height")
    )]
    Voc {
        /// `file:line`, or the file alone when the problem is the file as a whole.
        location: String,
        reason: String,
    },
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            return DataError::MissingFile { path: path.into() };
        }
        DataError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        DataError::InvalidConfig {
            what,
            detail: detail.into(),
        }
    }
}
