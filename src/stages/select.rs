//! Which images a stage reads, as a stage config: a whole dataset, one part of its split, or a
//! balance block's output. Every stage that reads data (balance, train, evaluate, crossval)
//! resolves a checked `DataRef` through here, so `data d.test` means the test part everywhere
//! and a stage never falls back to a part it was not given.

use super::balance::read_balance;
use super::dataset::read_images;
use super::split::read_split;
use crate::check::{self, Part};
use crate::data::balance::materialize;
use crate::data::split::Split;
use crate::data::ImageSet;
use crate::plan::StageId;
use crate::run::{StageContext, StageError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DataSel {
    /// Every image of the dataset (after drop and merge).
    Whole { dataset: String },
    /// One part of the dataset's hold-out split.
    Part {
        dataset: String,
        split: String,
        part: Part,
    },
    /// A balance stage's resampled training set.
    Balance { dataset: String, balance: String },
}

/// The name of a dataset's split stage.
pub fn split_id(dataset: &str) -> String {
    format!("{dataset}.split")
}

impl DataSel {
    pub fn of(data: &check::DataRef) -> DataSel {
        match data {
            check::DataRef::Dataset { dataset } => DataSel::Whole {
                dataset: dataset.clone(),
            },
            check::DataRef::Split { dataset, part } => DataSel::Part {
                dataset: dataset.clone(),
                split: split_id(dataset),
                part: *part,
            },
            check::DataRef::Balance { balance, dataset } => DataSel::Balance {
                dataset: dataset.clone(),
                balance: balance.clone(),
            },
        }
    }

    pub fn dataset(&self) -> &str {
        match self {
            DataSel::Whole { dataset }
            | DataSel::Part { dataset, .. }
            | DataSel::Balance { dataset, .. } => dataset,
        }
    }

    /// The stages whose outputs this selection reads.
    pub fn stages(&self) -> Vec<&str> {
        match self {
            DataSel::Whole { dataset } => vec![dataset],
            DataSel::Part { dataset, split, .. } => vec![dataset, split],
            DataSel::Balance { dataset, balance } => vec![dataset, balance],
        }
    }

    /// The split part's name (`test`), or what stands for it in messages.
    pub fn part_name(&self) -> &str {
        match self {
            DataSel::Part { part, .. } => part.as_str(),
            DataSel::Whole { .. } => "whole dataset",
            DataSel::Balance { balance, .. } => balance,
        }
    }

    /// `galaxy10.test`, `galaxy10`, `partial`: how the pipeline wrote it.
    pub fn describe(&self) -> String {
        match self {
            DataSel::Whole { dataset } => dataset.clone(),
            DataSel::Part { dataset, part, .. } => format!("{dataset}.{}", part.as_str()),
            DataSel::Balance { balance, .. } => balance.clone(),
        }
    }
}

/// Selected images with where they came from.
pub struct Selection {
    pub images: ImageSet,
    /// Each image's index in its dataset (repeats for over-sampled copies).
    pub indices: Vec<usize>,
    /// Class weights a balance stage computed, when it was asked for them.
    pub class_weights: Option<Vec<f64>>,
}

/// Loads datasets and splits once per stage, however many selections read them.
#[derive(Default)]
pub struct DataLoader {
    sets: BTreeMap<String, ImageSet>,
    splits: BTreeMap<String, Split>,
}

impl DataLoader {
    pub fn dataset(&mut self, ctx: &StageContext, name: &str) -> Result<&ImageSet, StageError> {
        if !self.sets.contains_key(name) {
            let set = read_images(ctx.input_dir(&StageId::from(name))?)?;
            self.sets.insert(name.to_string(), set);
        }
        Ok(&self.sets[name])
    }

    /// The indices a selection covers, without copying pixels.
    pub fn indices(&mut self, ctx: &StageContext, sel: &DataSel) -> Result<Vec<usize>, StageError> {
        Ok(match sel {
            DataSel::Whole { dataset } => (0..self.dataset(ctx, dataset)?.len()).collect(),
            DataSel::Part { split, part, .. } => {
                if !self.splits.contains_key(split) {
                    let read = read_split(ctx.input_dir(&StageId::from(split.as_str()))?)?;
                    self.splits.insert(split.clone(), read);
                }
                let split = &self.splits[split];
                match part {
                    Part::Train => split.train.clone(),
                    Part::Val => split.val.clone(),
                    Part::Test => split.test.clone(),
                }
            }
            DataSel::Balance { balance, .. } => {
                let index = read_balance(ctx.input_dir(&StageId::from(balance.as_str()))?)?;
                index.entries.iter().map(|e| e.index as usize).collect()
            }
        })
    }

    pub fn select(&mut self, ctx: &StageContext, sel: &DataSel) -> Result<Selection, StageError> {
        if let DataSel::Balance { dataset, balance } = sel {
            let index = read_balance(ctx.input_dir(&StageId::from(balance.as_str()))?)?;
            let set = self.dataset(ctx, dataset)?;
            return Ok(Selection {
                images: materialize(set, &index),
                indices: index.entries.iter().map(|e| e.index as usize).collect(),
                class_weights: index.class_weights,
            });
        }
        let indices = self.indices(ctx, sel)?;
        let set = self.dataset(ctx, sel.dataset())?;
        Ok(Selection {
            images: set.subset(&indices),
            indices,
            class_weights: None,
        })
    }
}

/// The distinct stage names a list of selections reads, in first-use order.
pub fn input_stages<'a>(sels: impl IntoIterator<Item = &'a DataSel>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for sel in sels {
        for s in sel.stages() {
            if !out.iter().any(|o| o == s) {
                out.push(s.to_string());
            }
        }
    }
    out
}
