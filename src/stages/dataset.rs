//! The `dataset` stage: load the HDF5 file or folder named in the pipeline (or synthesize the
//! fallback when the file is absent, and say so), name and drop and merge classes, and store
//! the images as one compact file for every later stage.

use super::{spec, stage_error, unsupported, Stage, StageKind};
use crate::check::{self, Program};
use crate::data::artifact::{load_image_set, load_json, save_image_set, save_json};
use crate::data::split::{apply_classes, ClassSpec, MergeSpec};
use crate::data::synth::{synthesize, SynthConfig, SynthKind};
use crate::data::synth_fields::{render_fields, FieldsConfig};
use crate::data::ImageSet;
use crate::plan::StageSpec;
use crate::report::model::{KeyFigure, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const IMAGES_FILE: &str = "images.gplimg";
pub const DATASET_FILE: &str = "dataset.json";
pub const SKY_FILE: &str = "sky.json";

/// What a `fits(...)` dataset stage records: the image the detect stage reads (through
/// `detect::catalog::load_image` or, tile by tile, `detect::tile::detect_tiled_fits`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SkyImage {
    /// As the pipeline writes it, relative to the project folder: `StageContext::resolve`
    /// gives the file.
    pub path: PathBuf,
    /// The HDU holding the image (resolved when the pipeline left it out).
    pub hdu: usize,
    pub width: usize,
    pub height: usize,
    /// Whether the header has a celestial TAN WCS (so a catalog gets RA and Dec).
    pub has_wcs: bool,
}

/// Where a dataset's images come from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SourceConfig {
    /// `path` relative to the project root.
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
    /// A struct variant: `SynthConfig` has a `kind` field of its own.
    Synthetic { config: SynthConfig },
    /// Synthetic detection fields: images with boxes, saved as a `FieldSet`.
    Fields { config: FieldsConfig },
    /// A Pascal VOC folder: a `FieldSet` (detection fields).
    Voc { path: PathBuf },
    /// One survey image, read by the detect stage; this stage records and validates it.
    Fits { path: PathBuf, hdu: Option<usize> },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetConfig {
    pub source: SourceConfig,
    /// Used, with a notice, when the source's file is absent.
    pub fallback: Option<SynthConfig>,
    /// Names the pipeline gave the source's classes (`classes ["Disk", ...]`), replacing the
    /// source's own before drop and merge.
    #[serde(default)]
    pub class_names: Option<Vec<String>>,
    pub classes: ClassSpec,
    /// `resize H x W`: every image resized after loading. Left out of the config (and so of
    /// the fingerprint) when absent, so datasets without it keep their cache entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resize: Option<[usize; 2]>,
}

/// What a dataset stage tells people and the report about its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetSummary {
    /// `hdf5 data/Galaxy10.h5`, `synthetic galaxy10 (seed 1)`, ...
    pub source: String,
    pub synthetic: bool,
    pub images: usize,
    pub shape: [usize; 3],
    pub class_names: Vec<String>,
    pub class_counts: Vec<usize>,
    /// `old -> new` lines for dropped and merged classes.
    pub mapping: Vec<String>,
}

pub struct DatasetStage;

impl StageExecutor for DatasetStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: DatasetConfig = super::config(ctx)?;
        match &config.source {
            SourceConfig::Fields { config } => return write_fields(ctx, config),
            SourceConfig::Voc { path } => return voc_fields(ctx, path),
            SourceConfig::Fits { path, hdu } => return fits_sky(ctx, path, *hdu),
            SourceConfig::Hdf5 { .. }
            | SourceConfig::Folder { .. }
            | SourceConfig::Synthetic { .. } => {}
        }
        let (raw, source, synthetic) = load_source(ctx, &config)?;
        let mut raw = match config.resize {
            Some([height, width]) => raw.resized(height, width).map_err(stage_error)?,
            None => raw,
        };
        ctx.check_cancelled()?;
        if let Some(names) = &config.class_names {
            if names.len() != raw.class_names.len() {
                return Err(StageError::failed(format!(
                    "the pipeline names {} classes but {source} has {}",
                    names.len(),
                    raw.class_names.len()
                )));
            }
            raw.class_names = names.clone();
        }
        let (set, mapping, _) = apply_classes(&raw, &config.classes).map_err(stage_error)?;
        let summary = DatasetSummary {
            source,
            synthetic,
            images: set.len(),
            shape: [set.height, set.width, set.channels],
            class_counts: set.class_counts(),
            class_names: set.class_names.clone(),
            mapping: mapping.report(&raw.class_names),
        };
        save_image_set(&set, ctx.out_dir().join(IMAGES_FILE)).map_err(stage_error)?;
        save_json(&summary, ctx.out_dir().join(DATASET_FILE)).map_err(stage_error)?;
        save_json(&summary, ctx.public_dir().join(DATASET_FILE)).map_err(stage_error)?;
        Ok(())
    }
}

/// A VOC folder as a field set (`images.gplimg` and `objects.json`), and its summary: the
/// detection classes with their object counts.
fn voc_fields(ctx: &StageContext, path: &Path) -> Result<(), StageError> {
    let fields = crate::data::voc::load_field_set(&ctx.resolve(path)).map_err(stage_error)?;
    ctx.check_cancelled()?;
    let mut class_counts = vec![0; fields.classes().len()];
    for o in fields.objects.iter().flatten() {
        class_counts[o.class] += 1;
    }
    let images = &fields.images;
    let summary = DatasetSummary {
        source: format!("voc {}", path.display()),
        synthetic: false,
        images: fields.len(),
        shape: [images.height, images.width, images.channels],
        class_names: fields.classes().to_vec(),
        class_counts,
        mapping: Vec::new(),
    };
    fields.save(ctx.out_dir()).map_err(stage_error)?;
    save_json(&summary, ctx.out_dir().join(DATASET_FILE)).map_err(stage_error)?;
    save_json(&summary, ctx.public_dir().join(DATASET_FILE)).map_err(stage_error)
}

/// Opens the FITS image's header (a bad file or HDU fails here, naming the file) and records
/// it in `sky.json`; the pixels are read by the stage that detects in them.
fn fits_sky(ctx: &StageContext, path: &Path, hdu: Option<usize>) -> Result<(), StageError> {
    let reader = crate::data::fits::open_fits(&ctx.resolve(path), hdu).map_err(stage_error)?;
    let sky = SkyImage {
        path: path.to_path_buf(),
        hdu: reader.hdu,
        width: reader.width,
        height: reader.height,
        has_wcs: reader.wcs.is_some(),
    };
    let summary = DatasetSummary {
        source: format!("fits {} (HDU {})", path.display(), reader.hdu),
        synthetic: false,
        images: 1,
        shape: [reader.height, reader.width, 1],
        class_names: Vec::new(),
        class_counts: Vec::new(),
        mapping: Vec::new(),
    };
    save_json(&sky, ctx.out_dir().join(SKY_FILE)).map_err(stage_error)?;
    save_json(&sky, ctx.public_dir().join(SKY_FILE)).map_err(stage_error)?;
    save_json(&summary, ctx.out_dir().join(DATASET_FILE)).map_err(stage_error)?;
    save_json(&summary, ctx.public_dir().join(DATASET_FILE)).map_err(stage_error)
}

impl Stage for DatasetStage {
    fn kind(&self) -> StageKind {
        StageKind::Dataset
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let summary = read_summary(dir)?;
        section
            .key_figures
            .push(KeyFigure::text("source", &summary.source));
        section
            .key_figures
            .push(KeyFigure::number("images", summary.images as f64));
        section.key_figures.push(KeyFigure::number(
            "classes",
            summary.class_names.len() as f64,
        ));
        let counts: Vec<String> = summary.class_counts.iter().map(usize::to_string).collect();
        section
            .key_figures
            .push(KeyFigure::text("images per class", counts.join(", ")));
        if let Ok(png) = std::fs::read(dir.join(super::PUBLIC).join(FIELD_PREVIEW)) {
            section.figures.push(crate::report::model::StageFigure {
                title: "the first field and its boxes, labelled with the galaxies' classes".into(),
                file: FIELD_PREVIEW.into(),
                png,
            });
        }
        Ok(true)
    }
}

/// Renders synthetic fields and writes them as a field set, with the dataset summary (the
/// class count is the boxes') and a preview of the first field with its boxes.
fn write_fields(ctx: &StageContext, config: &FieldsConfig) -> Result<(), StageError> {
    let set = render_fields(config).map_err(stage_error)?;
    ctx.check_cancelled()?;
    let boxes: usize = set.objects.iter().map(Vec::len).sum();
    let summary = DatasetSummary {
        source: format!(
            "synthetic fields ({} images of {} px, seed {})",
            config.count, config.size, config.seed
        ),
        synthetic: true,
        images: set.len(),
        shape: [set.images.height, set.images.width, set.images.channels],
        class_names: set.classes().to_vec(),
        class_counts: vec![boxes],
        mapping: Vec::new(),
    };
    set.save(ctx.out_dir()).map_err(stage_error)?;
    save_json(&summary, ctx.out_dir().join(DATASET_FILE)).map_err(stage_error)?;
    save_json(&summary, ctx.public_dir().join(DATASET_FILE)).map_err(stage_error)?;
    if !set.is_empty() {
        let labelled: Vec<crate::report::boxes::LabelledBox> = set.objects[0]
            .iter()
            .map(|o| {
                let class = o
                    .truth
                    .as_ref()
                    .and_then(|t| crate::data::synth::SDSS_CLASSES.get(t.galaxy10 as usize))
                    .map_or(String::new(), |c| c.to_string());
                (o.xmin, o.ymin, o.xmax, o.ymax, class)
            })
            .collect();
        let png = crate::report::boxes::boxes_png(
            set.image(0),
            set.images.height,
            set.images.width,
            &labelled,
        )
        .map_err(stage_error)?;
        crate::train::write_atomic(&ctx.public_dir().join(FIELD_PREVIEW), &png)
            .map_err(stage_error)?;
    }
    Ok(())
}

/// The first synthetic field with its true boxes, in the dataset's folder and report.
pub const FIELD_PREVIEW: &str = "field_boxes.png";

fn load_source(
    ctx: &StageContext,
    config: &DatasetConfig,
) -> Result<(ImageSet, String, bool), StageError> {
    let file = match &config.source {
        SourceConfig::Hdf5 { path, .. } | SourceConfig::Folder { path, .. } => Some(path),
        SourceConfig::Synthetic { .. } => None,
        SourceConfig::Fields { .. } | SourceConfig::Voc { .. } | SourceConfig::Fits { .. } => {
            return Err(StageError::failed(
                "bug: a detection source reached the image-set loader",
            ))
        }
    };
    if let (Some(path), Some(fallback)) = (file, &config.fallback) {
        if !ctx.resolve(path).exists() {
            ctx.notice(format!(
                "{} not found: using a synthetic Galaxy10 ({} images, seed {}) instead. The real \
                 file comes from astroNN (https://astronn.readthedocs.io/en/latest/galaxy10sdss.html); \
                 put it at {} to use it.",
                path.display(),
                fallback.count,
                fallback.seed,
                path.display()
            ));
            return Ok((
                synthesize(fallback).map_err(stage_error)?,
                describe_synth(fallback),
                true,
            ));
        }
    }
    match &config.source {
        SourceConfig::Hdf5 {
            path,
            images,
            labels,
        } => {
            let set = crate::data::hdf5::load_galaxy10(ctx.resolve(path), images, labels)
                .map_err(stage_error)?;
            Ok((set, format!("hdf5 {}", path.display()), false))
        }
        SourceConfig::Folder {
            path,
            height,
            width,
        } => {
            let set = crate::data::folder::load_folder(ctx.resolve(path), *height, *width)
                .map_err(stage_error)?;
            Ok((set, format!("folder {}", path.display()), false))
        }
        SourceConfig::Synthetic { config } => Ok((
            synthesize(config).map_err(stage_error)?,
            describe_synth(config),
            true,
        )),
        // Refused above.
        SourceConfig::Fields { .. } | SourceConfig::Voc { .. } | SourceConfig::Fits { .. } => Err(
            StageError::failed("bug: a detection source reached the image-set loader"),
        ),
    }
}

fn describe_synth(config: &SynthConfig) -> String {
    format!(
        "synthetic {:?} ({} images, seed {})",
        config.kind, config.count, config.seed
    )
    .to_lowercase()
}

/// Reads the artifacts of data stages from their cache entries.
pub fn read_images(dir: &Path) -> Result<ImageSet, StageError> {
    load_image_set(dir.join(IMAGES_FILE)).map_err(stage_error)
}

/// A `voc(...)` dataset's images and boxes.
pub fn read_fields(dir: &Path) -> Result<crate::data::fields::FieldSet, StageError> {
    crate::data::fields::FieldSet::load(dir).map_err(stage_error)
}

/// A `fits(...)` dataset's image.
pub fn read_sky(dir: &Path) -> Result<SkyImage, StageError> {
    load_json(dir.join(SKY_FILE)).map_err(stage_error)
}

pub fn read_summary(dir: &Path) -> Result<DatasetSummary, StageError> {
    load_json(dir.join(DATASET_FILE)).map_err(stage_error)
}

/// The dataset block's stage.
pub(super) fn compile(
    program: &Program,
    d: &check::Dataset,
    label: Option<String>,
) -> Result<StageSpec, Box<check::Error>> {
    let check::Dataset {
        name,
        source,
        fallback,
        // Derived at check time from the source, drop and merge; the run recomputes them.
        source_classes: _,
        image_shape,
        drop,
        merges,
        label_map: _,
        classes: _,
        class_names,
        resize,
        // Compiled into its own stage by the caller.
        split: _,
        span,
    } = d;
    // Fields are images with boxes: class drops, merges, names and resizing are settings of
    // single-galaxy images, so they are refused rather than dropped.
    if source.is_detection()
        && (!drop.is_empty() || !merges.is_empty() || class_names.is_some() || resize.is_some())
    {
        return Err(unsupported(
            *span,
            "class drops, merges, names or `resize` on a dataset of detection fields",
            "fields keep their boxes' classes and their size; remove those statements",
        ));
    }
    let source_cfg = source_config(source, image_shape.as_deref());
    let fallback_cfg = match fallback.as_ref().map(|f| source_config(f, None)) {
        Some(SourceConfig::Synthetic { config }) => Some(config),
        // The checker accepts only synthetic fallbacks.
        _ => None,
    };
    let config = DatasetConfig {
        source: source_cfg,
        fallback: fallback_cfg,
        class_names: class_names.clone(),
        resize: *resize,
        classes: ClassSpec {
            drop: drop.clone(),
            merge: merges
                .iter()
                .map(|check::Merge { classes, into }| MergeSpec {
                    classes: classes.clone(),
                    name: None,
                    into: *into,
                })
                .collect(),
        },
    };
    let mut s = spec(name.clone(), StageKind::Dataset, &config, &[], label);
    // A data file is content-hashed when present; its appearance changes the stage's files.
    if let check::Source::Hdf5 { path, .. }
    | check::Source::Folder { path, .. }
    | check::Source::Voc { path, .. }
    | check::Source::Fits { path, .. } = source
    {
        if program.project_root.join(path).exists() {
            s.files = vec![PathBuf::from(path)];
        }
    }
    Ok(s)
}

/// The stage config of a source.
fn source_config(source: &check::Source, shape: Option<&[usize]>) -> SourceConfig {
    match source {
        check::Source::Hdf5 {
            path,
            resolved: _,
            images,
            labels,
        } => SourceConfig::Hdf5 {
            path: path.into(),
            images: images.clone(),
            labels: labels.clone(),
        },
        check::Source::Folder { path, resolved: _ } => {
            let (height, width) = shape.map_or((69, 69), |s| (s[0], s[1]));
            SourceConfig::Folder {
                path: path.into(),
                height,
                width,
            }
        }
        check::Source::Synthetic {
            generator,
            count,
            seed,
            size,
        } => {
            let mut config = SynthConfig::galaxy10(*count, *seed);
            config.kind = match generator {
                check::SyntheticKind::Galaxy10 => SynthKind::Galaxy10,
                check::SyntheticKind::Galaxy10Decals => SynthKind::Galaxy10Decals,
                check::SyntheticKind::Fields => {
                    let mut config = FieldsConfig::new(*count, *seed);
                    if let Some(size) = size {
                        config.size = *size;
                    }
                    return SourceConfig::Fields { config };
                }
            };
            SourceConfig::Synthetic { config }
        }
        check::Source::Voc { path, resolved: _ } => SourceConfig::Voc { path: path.into() },
        check::Source::Fits {
            path,
            resolved: _,
            hdu,
        } => SourceConfig::Fits {
            path: path.into(),
            hdu: *hdu,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_source_survives_the_spec_round_trip() {
        let sources = [
            SourceConfig::Hdf5 {
                path: "data/Galaxy10.h5".into(),
                images: "images".into(),
                labels: "ans".into(),
            },
            SourceConfig::Folder {
                path: "data/folders".into(),
                height: 69,
                width: 69,
            },
            SourceConfig::Synthetic {
                config: SynthConfig::galaxy10(100, 3),
            },
            SourceConfig::Voc {
                path: "data/fields".into(),
            },
            SourceConfig::Fits {
                path: "data/sky.fits".into(),
                hdu: Some(1),
            },
        ];
        for source in sources {
            let config = DatasetConfig {
                source,
                fallback: Some(SynthConfig::galaxy10(10, 1)),
                class_names: None,
                classes: ClassSpec::default(),
                resize: Some([32, 32]),
            };
            let value = serde_json::to_value(&config).unwrap();
            assert_eq!(
                serde_json::from_value::<DatasetConfig>(value).unwrap(),
                config
            );
        }
    }
}
