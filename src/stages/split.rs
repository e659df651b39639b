//! The `split` stage: a dataset's hold-out train / val / test indices (stratified when the
//! pipeline says so), and a per-class table of the parts.

use super::select::split_id;
use super::{spec, stage_error, Artifacts, Stage, StageKind};
use crate::check;
use crate::data::artifact::{load_json, save_json};
use crate::data::split::{class_counts, holdout, HoldoutSpec, Split};
use crate::plan::StageSpec;
use crate::run::{StageContext, StageError, StageExecutor};
use std::path::Path;

pub const SPLIT_FILE: &str = "split.json";

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

impl Stage for SplitStage {
    fn kind(&self) -> StageKind {
        StageKind::Split
    }

    fn in_report(&self) -> bool {
        false
    }
}

pub fn read_split(dir: &Path) -> Result<Split, StageError> {
    load_json(dir.join(SPLIT_FILE)).map_err(stage_error)
}

/// The split statement of a dataset block, as its own stage.
pub(super) fn compile(dataset: &str, split: &check::Split, label: Option<String>) -> StageSpec {
    let check::Split {
        train,
        val,
        test,
        stratify,
        seed,
    } = *split;
    let holdout = HoldoutSpec {
        train,
        val,
        test,
        stratify,
        seed,
    };
    spec(
        split_id(dataset),
        StageKind::Split,
        &holdout,
        &[dataset],
        label,
    )
    .with_seed(seed)
}
