//! The data stages: `dataset` (load the HDF5 file or folder, or synthesize the fallback, then
//! drop and merge classes), `split` (stratified hold-out indices) and `balance` (indices,
//! augmentation seeds and class weights). Artifacts are compact: one image file per dataset,
//! JSON indices for the rest.

use super::{stage_error, Artifacts};
use crate::data::artifact::{load_image_set, load_json, save_image_set, save_json};
use crate::data::balance::{balance, BalanceSpec, BalancedIndex};
use crate::data::split::{apply_classes, class_counts, holdout, ClassSpec, HoldoutSpec, Split};
use crate::data::synth::{synthesize, SynthConfig};
use crate::data::ImageSet;
use crate::run::{StageContext, StageError, StageExecutor};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const IMAGES_FILE: &str = "images.gplimg";
pub const DATASET_FILE: &str = "dataset.json";
pub const SPLIT_FILE: &str = "split.json";
pub const BALANCE_FILE: &str = "balanced.json";

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
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DatasetConfig {
    pub source: SourceConfig,
    /// Used, with a notice, when the source's file is absent.
    pub fallback: Option<SynthConfig>,
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
        let (raw, source, synthetic) = load_source(ctx, &config)?;
        let raw = match config.resize {
            Some([height, width]) => raw.resized(height, width).map_err(stage_error)?,
            None => raw,
        };
        ctx.check_cancelled()?;
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

fn load_source(
    ctx: &StageContext,
    config: &DatasetConfig,
) -> Result<(ImageSet, String, bool), StageError> {
    let file = match &config.source {
        SourceConfig::Hdf5 { path, .. } | SourceConfig::Folder { path, .. } => Some(path),
        SourceConfig::Synthetic { .. } => None,
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
    }
}

fn describe_synth(config: &SynthConfig) -> String {
    format!(
        "synthetic {:?} ({} images, seed {})",
        config.kind, config.count, config.seed
    )
    .to_lowercase()
}

pub struct SplitStage;

impl StageExecutor for SplitStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let spec: HoldoutSpec = super::config(ctx)?;
        let set = Artifacts::of(ctx, 0)?.images()?;
        let split = holdout(&set.labels, &spec).map_err(stage_error)?;
        save_json(&split, ctx.out_dir().join(SPLIT_FILE)).map_err(stage_error)?;
        let classes = set.class_names.len();
        let mut table = String::from("part,images");
        for name in &set.class_names {
            table.push(',');
            table.push_str(&name.replace(',', ";"));
        }
        table.push('\n');
        for (part, indices) in [
            ("train", &split.train),
            ("val", &split.val),
            ("test", &split.test),
        ] {
            let counts = class_counts(&set.labels, indices, classes);
            let cells: Vec<String> = counts.iter().map(usize::to_string).collect();
            table.push_str(&format!("{part},{},{}\n", indices.len(), cells.join(",")));
        }
        crate::train::write_atomic(&ctx.public_dir().join("split.csv"), table.as_bytes())
            .map_err(stage_error)?;
        Ok(())
    }
}

/// A balance stage's config: the resampling recipe and which split part it draws from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalanceConfig {
    pub spec: BalanceSpec,
}

pub struct BalanceStage;

impl StageExecutor for BalanceStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: BalanceConfig = super::config(ctx)?;
        let set = Artifacts::of(ctx, 0)?.images()?;
        let split = read_split(Artifacts::of(ctx, 1)?.dir)?;
        // Only the training part is ever rebalanced: validation and test indices never reach it.
        let index = balance(
            &set.labels,
            set.class_names.len(),
            &split.train,
            &config.spec,
        )
        .map_err(stage_error)?;
        save_json(&index, ctx.out_dir().join(BALANCE_FILE)).map_err(stage_error)?;
        let mut table = String::from("class,name,before,after,weight\n");
        for (c, name) in set.class_names.iter().enumerate() {
            let weight = index
                .class_weights
                .as_ref()
                .map_or(String::new(), |w| format!("{:.4}", w[c]));
            table.push_str(&format!(
                "{c},{},{},{},{weight}\n",
                name.replace(',', ";"),
                index.counts_before[c],
                index.counts_after[c]
            ));
        }
        crate::train::write_atomic(&ctx.public_dir().join("balance.csv"), table.as_bytes())
            .map_err(stage_error)?;
        Ok(())
    }
}

/// Reads the artifacts of data stages from their cache entries.
pub fn read_images(dir: &Path) -> Result<ImageSet, StageError> {
    load_image_set(dir.join(IMAGES_FILE)).map_err(stage_error)
}

pub fn read_split(dir: &Path) -> Result<Split, StageError> {
    load_json(dir.join(SPLIT_FILE)).map_err(stage_error)
}

pub fn read_balance(dir: &Path) -> Result<BalancedIndex, StageError> {
    load_json(dir.join(BALANCE_FILE)).map_err(stage_error)
}

pub fn read_summary(dir: &Path) -> Result<DatasetSummary, StageError> {
    load_json(dir.join(DATASET_FILE)).map_err(stage_error)
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
        ];
        for source in sources {
            let config = DatasetConfig {
                source,
                fallback: Some(SynthConfig::galaxy10(10, 1)),
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
