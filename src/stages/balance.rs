//! The `balance` stage: down- and over-samples one part of a dataset (indices, augmentation
//! seeds for the added copies) and computes class weights.

use super::select::{DataLoader, DataSel};
use super::{augment_spec, spec, stage_error, unsupported, Stage, StageKind};
use crate::check::{self, Program};
use crate::data::artifact::{load_json, save_json};
use crate::data::balance::{balance, BalanceSpec, BalancedIndex, Resample, WeightsSpec};
use crate::plan::StageSpec;
use crate::report::model::{KeyFigure, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const BALANCE_FILE: &str = "balanced.json";

/// A balance stage's config: the resampling recipe and the images it draws from (a split
/// part, usually the training part, or a whole dataset).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BalanceConfig {
    pub spec: BalanceSpec,
    pub from: DataSel,
}

pub struct BalanceStage;

impl StageExecutor for BalanceStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: BalanceConfig = super::config(ctx)?;
        let mut loader = DataLoader::default();
        let from = loader.indices(ctx, &config.from)?;
        let set = loader.dataset(ctx, config.from.dataset())?;
        // Only the selected part is rebalanced: other parts' indices never reach it.
        let index = balance(&set.labels, set.class_names.len(), &from, &config.spec)
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

impl Stage for BalanceStage {
    fn kind(&self) -> StageKind {
        StageKind::Balance
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let index = read_balance(dir)?;
        section.key_figures.push(KeyFigure::number(
            "training images",
            index.entries.len() as f64,
        ));
        let after: Vec<String> = index.counts_after.iter().map(usize::to_string).collect();
        section
            .key_figures
            .push(KeyFigure::text("images per class", after.join(", ")));
        if let Some(w) = &index.class_weights {
            let w: Vec<String> = w.iter().map(|x| format!("{x:.4}")).collect();
            section
                .key_figures
                .push(KeyFigure::text("class weights", w.join(", ")));
        }
        Ok(true)
    }
}

pub fn read_balance(dir: &Path) -> Result<BalancedIndex, StageError> {
    load_json(dir.join(BALANCE_FILE)).map_err(stage_error)
}

pub(super) fn compile(
    program: &Program,
    b: &check::Balance,
    label: Option<String>,
) -> Result<StageSpec, Box<check::Error>> {
    oversample_preset(b)?;
    let from = DataSel::of(&b.from);
    if let DataSel::Balance { .. } = from {
        return Err(unsupported(
            b.span,
            "balancing the output of another balance block",
            "name a dataset part, e.g. `from galaxy10.train`",
        ));
    }
    let config = BalanceConfig {
        spec: balance_spec(program, b),
        from: from.clone(),
    };
    Ok(spec(
        b.name.clone(),
        StageKind::Balance,
        &config,
        &from.stages(),
        label,
    )
    .with_seed(b.seed))
}

/// The one augmentation preset a balance block's over-sampled copies use; a block whose
/// oversample statements name different presets (or some none) is refused: the balance
/// artifact holds one recipe for all its copies.
fn oversample_preset(b: &check::Balance) -> Result<Option<&str>, Box<check::Error>> {
    let mut presets = b.oversample.iter().map(|r| r.using.as_deref());
    let first = presets.next().flatten();
    if presets.any(|p| p != first) {
        return Err(unsupported(
            b.span,
            "over-sampling with different augmentation presets in one balance block",
            "use the same `using` preset on every oversample statement, or split the block",
        ));
    }
    Ok(first)
}

pub(super) fn balance_spec(program: &Program, b: &check::Balance) -> BalanceSpec {
    let check::Balance {
        name: _,
        span: _,
        // The stage's input, compiled by the caller.
        from: _,
        downsample,
        oversample,
        weights,
        seed,
    } = b;
    let resample = |r: &check::Resample| {
        let check::Resample {
            classes,
            // As written, for messages; `classes` are the training labels.
            original: _,
            to,
            // One preset for the whole block: `oversample_preset`.
            using: _,
        } = r;
        Resample {
            classes: classes.iter().map(|&c| c as u32).collect(),
            to: *to,
        }
    };
    let augment = oversample_preset(b)
        .ok()
        .flatten()
        .and_then(|name| program.augment(name))
        .map(augment_spec)
        .unwrap_or_default();
    BalanceSpec {
        downsample: downsample.iter().map(resample).collect(),
        oversample: oversample.iter().map(resample).collect(),
        augment,
        weights: match weights {
            None => WeightsSpec::None,
            Some(check::WeightsSpec::Balanced) => WeightsSpec::Balanced,
            Some(check::WeightsSpec::Explicit { weights }) => {
                WeightsSpec::Explicit(weights.clone())
            }
        },
        seed: *seed,
    }
}
