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
        let input = Artifacts::of(ctx, 0)?;
        // A detection dataset (a VOC folder's field set) is split by image like any other;
        // its table counts objects, not images, per class.
        let fields = input
            .dir
            .join(crate::data::fields::OBJECTS_FILE)
            .exists()
            .then(|| super::dataset::read_fields(input.dir))
            .transpose()?;
        let images;
        let (labels, class_names) = match &fields {
            Some(f) => (&f.images.labels, f.classes()),
            None => {
                images = input.images()?;
                (&images.labels, images.class_names.as_slice())
            }
        };
        let split = holdout(labels, &spec).map_err(stage_error)?;
        save_json(&split, ctx.out_dir().join(SPLIT_FILE)).map_err(stage_error)?;
        let classes = class_names.len();
        let counts_of = |indices: &[usize]| match &fields {
            Some(f) => {
                let mut counts = vec![0usize; classes];
                for o in indices.iter().flat_map(|&i| &f.objects[i]) {
                    counts[o.class] += 1;
                }
                counts
            }
            None => class_counts(labels, indices, classes),
        };
        let mut table = String::from("part,images");
        for name in class_names {
            table.push(',');
            table.push_str(&name.replace(',', ";"));
            if fields.is_some() {
                table.push_str(" objects");
            }
        }
        table.push('\n');
        for (part, indices) in [
            ("train", &split.train),
            ("val", &split.val),
            ("test", &split.test),
        ] {
            let counts = counts_of(indices);
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
