//! Where a dataset stage's images come from: an HDF5 file, an image folder, or the synthetic
//! Galaxy10, with the synthetic set standing in (and a notice saying so) when the file is absent.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::synth::{synthesize, SynthConfig};
use super::{folder, hdf5, DataError, ImageSet};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SourceSpec {
    Hdf5 {
        path: PathBuf,
        images: String,
        labels: String,
    },
    Folder {
        path: PathBuf,
        height: usize,
        width: usize,
    },
    Synthetic(SynthConfig),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetSpec {
    pub source: SourceSpec,
    /// Used when the source file or folder does not exist.
    #[serde(default)]
    pub fallback: Option<SynthConfig>,
}

pub struct Loaded {
    pub set: ImageSet,
    /// Set when the fallback stood in for a missing source.
    pub notice: Option<String>,
}

pub fn load_source(source: &SourceSpec) -> Result<ImageSet, DataError> {
    match source {
        SourceSpec::Hdf5 {
            path,
            images,
            labels,
        } => hdf5::load_galaxy10(path, images, labels),
        SourceSpec::Folder {
            path,
            height,
            width,
        } => folder::load_folder(path, *height, *width),
        SourceSpec::Synthetic(config) => synthesize(config),
    }
}

/// Loads the source; if its file is missing and a fallback is given, synthesizes instead and
/// says where the real data comes from. Any other error (a damaged file) is reported as is.
pub fn load_dataset(spec: &DatasetSpec) -> Result<Loaded, DataError> {
    match (load_source(&spec.source), &spec.fallback) {
        (Err(DataError::MissingFile { path }), Some(fallback)) => {
            let set = synthesize(fallback)?;
            let notice = format!(
                "{} not found: using a synthetic Galaxy10 ({} images, seed {}). The real Galaxy10.h5 \
                 (SDSS, 21,785 images) and Galaxy10_DECals.h5 come from astroNN: \
                 https://astronn.readthedocs.io/en/latest/galaxy10.html",
                path.display(),
                fallback.count,
                fallback.seed
            );
            Ok(Loaded {
                set,
                notice: Some(notice),
            })
        }
        (result, _) => Ok(Loaded {
            set: result?,
            notice: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_falls_back_with_a_notice_but_damage_does_not() {
        let spec = DatasetSpec {
            source: SourceSpec::Hdf5 {
                path: "/nonexistent/Galaxy10.h5".into(),
                images: "images".into(),
                labels: "ans".into(),
            },
            fallback: Some(SynthConfig::galaxy10(5, 1)),
        };
        let loaded = load_dataset(&spec).unwrap();
        assert_eq!(loaded.set.len(), 5);
        assert!(loaded.notice.unwrap().contains("astroNN"));
        let dir = tempfile::tempdir().unwrap();
        let bad = dir.path().join("bad.h5");
        std::fs::write(&bad, "not hdf5").unwrap();
        let spec = DatasetSpec {
            source: SourceSpec::Hdf5 {
                path: bad,
                images: "images".into(),
                labels: "ans".into(),
            },
            ..spec
        };
        assert!(matches!(
            load_dataset(&spec),
            Err(DataError::NotHdf5 { .. })
        ));
        let none = DatasetSpec {
            source: SourceSpec::Folder {
                path: "/nonexistent".into(),
                height: 4,
                width: 4,
            },
            fallback: None,
        };
        assert!(matches!(
            load_dataset(&none),
            Err(DataError::MissingFile { .. })
        ));
    }
}
