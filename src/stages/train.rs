//! The `train` stage and the training recipe it shares with cross-validation folds: build the
//! network from its IR, load initial weights (or say plainly that it starts from random),
//! fit with Keras callbacks (checkpointed every epoch in the stage's scratch folder, so a
//! killed run resumes), then write the model, history and predictions.

use super::data::{read_balance, read_split};
use super::{stage_error, Artifacts};
use crate::data::augment::AugmentSpec;
use crate::data::balance::materialize;
use crate::data::ImageSet;
use crate::nn::frozen::FrozenPrefix;
use crate::nn::ir::ModelIr;
use crate::nn::optim::OptimizerConfig;
use crate::nn::Network;
use crate::report::model::EpochRow;
use crate::run::{StageContext, StageError, StageExecutor};
use crate::train::fit::{fit, EpochProgress, FitConfig, FitContext, TrainData};
use crate::train::history::History;
use crate::train::learner::Learner;
use crate::train::predictions::{
    predict_set, prediction_rows, write_predictions_csv, PredictionRow,
};
use crate::train::weights::{load_keras_h5, load_safetensors, save_safetensors, ExpectedShapes};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

pub const MODEL_FILE: &str = "model.safetensors";
pub const HISTORY_FILE: &str = "history.csv";
pub const PREDICTIONS_FILE: &str = "predictions.csv";

/// How the loss weighs classes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ClassWeightConfig {
    None,
    /// The weights the balance input computed.
    FromBalance,
    /// N / (C · n_c) on the training data as given.
    Balanced,
    Explicit {
        weights: Vec<f64>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InitConfig {
    /// Relative to the project root.
    pub path: PathBuf,
    pub keras_h5: bool,
    /// A missing file starts from random initialisation, with a notice.
    pub optional: bool,
}

/// Everything that decides a trained model, apart from its data.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Recipe {
    /// `nn::ENGINE_EPOCH`: every stage that runs the engine builds it from a recipe, so a
    /// numerics change re-runs them all.
    pub engine_epoch: u32,
    pub model: ModelIr,
    pub optimizer: OptimizerConfig,
    pub fit: FitConfig,
    pub class_weights: ClassWeightConfig,
    /// On-the-fly augmentation of training batches.
    pub augment: Option<AugmentSpec>,
    pub init: Option<InitConfig>,
}

/// Where a train stage's data come from: the dataset and split inputs always, a balance
/// input when the data is a balance block's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    pub recipe: Recipe,
    pub balanced: bool,
}

pub struct TrainStage;

impl StageExecutor for TrainStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: TrainConfig = super::config(ctx)?;
        let set = Artifacts::of(ctx, 0)?.images()?;
        let split = read_split(Artifacts::of(ctx, 1)?.dir)?;
        let (train, balance_weights) = if config.balanced {
            let index = read_balance(Artifacts::of(ctx, 2)?.dir)?;
            (materialize(&set, &index), index.class_weights)
        } else {
            (set.subset(&split.train), None)
        };
        let val = set.subset(&split.val);
        let mut network = fit_recipe(
            ctx,
            &config.recipe,
            &train,
            balance_weights.as_deref(),
            &val,
        )?;
        let mut rows = predictions(
            network.as_mut(),
            "val",
            &val,
            &split.val,
            config.recipe.fit.batch_size,
        )?;
        let test = set.subset(&split.test);
        rows.extend(predictions(
            network.as_mut(),
            "test",
            &test,
            &split.test,
            config.recipe.fit.batch_size,
        )?);
        write_predictions_csv(&ctx.public_dir().join(PREDICTIONS_FILE), &rows)
            .map_err(stage_error)?;
        save_model(ctx, network.as_ref(), &config.recipe.model)
    }
}

/// Builds, initialises and fits a network; checkpoints go to the stage's scratch folder.
/// A frozen base whose input is not augmented runs once per image, not once per epoch.
pub fn fit_recipe(
    ctx: &StageContext,
    recipe: &Recipe,
    train: &ImageSet,
    balance_weights: Option<&[f64]>,
    val: &ImageSet,
) -> Result<Box<dyn Learner>, StageError> {
    let split = FrozenPrefix::split_point(&recipe.model).filter(|_| recipe.augment.is_none());
    let mut network: Box<dyn Learner> = match split {
        Some(at) => {
            let first_trainable = &recipe.model.layers[at].name;
            ctx.notice(format!(
                "layers before {first_trainable} are frozen: their outputs are computed once per image"
            ));
            Box::new(
                FrozenPrefix::new(&recipe.model, at, recipe.fit.seed, recipe.optimizer)
                    .map_err(stage_error)?,
            )
        }
        None => Box::new(
            Network::new(&recipe.model, recipe.fit.seed, recipe.optimizer).map_err(stage_error)?,
        ),
    };
    if let Some(init) = &recipe.init {
        load_initial_weights(ctx, network.as_mut(), init)?;
    }
    let weights: Option<Vec<f32>> = match &recipe.class_weights {
        ClassWeightConfig::None => None,
        ClassWeightConfig::FromBalance => {
            balance_weights.map(|w| w.iter().map(|&x| x as f32).collect())
        }
        ClassWeightConfig::Balanced => Some(
            crate::data::balance::balanced_weights(&train.class_counts())
                .iter()
                .map(|&x| x as f32)
                .collect(),
        ),
        ClassWeightConfig::Explicit { weights } => {
            Some(weights.iter().map(|&x| x as f32).collect())
        }
    };
    let data = TrainData {
        images: train,
        class_weights: weights.as_deref(),
        augment: recipe
            .augment
            .as_ref()
            .map(|spec| spec as &dyn crate::train::fit::Augment),
    };
    let cancel = AtomicBool::new(false);
    let batches = train.len().div_ceil(recipe.fit.batch_size.max(1)) as u64;
    ctx.progress()
        .set_length(recipe.fit.epochs as u64 * batches);
    let mut on_progress = |event: EpochProgress| {
        match event {
            EpochProgress::Resumed { completed_epochs } => {
                ctx.progress()
                    .set_position(completed_epochs as u64 * batches);
                ctx.notice(format!("resuming after epoch {completed_epochs}"));
            }
            EpochProgress::Batch { epoch, loss, .. } => {
                ctx.progress().inc(1);
                ctx.progress()
                    .set_message(format!("epoch {} loss {loss:.4}", epoch + 1));
            }
            EpochProgress::Epoch(record) => {
                ctx.progress().set_position(record.epoch as u64 * batches);
                ctx.progress().set_message(format!(
                    "epoch {} val_accuracy {:.4}",
                    record.epoch,
                    record.val_accuracy.unwrap_or(f64::NAN)
                ));
            }
        }
        if ctx.cancelled() {
            cancel.store(true, Ordering::Relaxed);
        }
    };
    let outcome = fit(
        network.as_mut(),
        &recipe.fit,
        &data,
        Some(val),
        FitContext {
            checkpoint_dir: Some(ctx.scratch_dir()),
            cancel: Some(&cancel),
            progress: Some(&mut on_progress),
            prefetch_batches: 2,
        },
    );
    ctx.check_cancelled()?;
    let outcome = outcome.map_err(stage_error)?;
    if let Some(epoch) = outcome.stopped_at {
        ctx.notice(format!("early stopping after epoch {epoch}"));
    }
    outcome
        .history
        .write_csv(&ctx.public_dir().join(HISTORY_FILE))
        .map_err(stage_error)?;
    let rows = epoch_rows(&outcome.history);
    let png =
        crate::report::plots::training_curves(&rows, ctx.id().as_str()).map_err(stage_error)?;
    crate::train::write_atomic(&ctx.public_dir().join("history.png"), &png).map_err(stage_error)?;
    Ok(network)
}

fn load_initial_weights(
    ctx: &StageContext,
    network: &mut dyn Learner,
    init: &InitConfig,
) -> Result<(), StageError> {
    let path = ctx.resolve(&init.path);
    if !path.exists() {
        if init.optional {
            ctx.notice(format!(
                "{} not found: this model starts from RANDOM initialisation, not pretrained weights",
                init.path.display()
            ));
            return Ok(());
        }
        return Err(StageError::failed(format!(
            "initial weights {} not found",
            init.path.display()
        )));
    }
    let expected: ExpectedShapes = network
        .state()
        .into_iter()
        .filter(|(name, _)| is_weight(name))
        .map(|(name, t)| (name, t.shape))
        .collect();
    let weights = if init.keras_h5 {
        // A base without a head: keep only the layers the file has.
        let file_layers = crate::train::weights::read_keras_h5(&path).map_err(stage_error)?;
        let present: ExpectedShapes = expected
            .into_iter()
            .filter(|(name, _)| file_layers.contains_key(name))
            .collect();
        load_keras_h5(&path, &present).map_err(stage_error)?
    } else {
        let (all, _) = load_safetensors(&path).map_err(stage_error)?;
        all.into_iter()
            .filter(|(name, _)| expected.contains_key(name))
            .collect()
    };
    ctx.notice(format!(
        "loaded {} weight tensors from {}",
        weights.len(),
        init.path.display()
    ));
    network
        .load_weights(&weights)
        .map_err(|e| StageError::failed(format!("{e:?}")))
}

/// Keras weight names (`<layer>/kernel`, ...), not optimizer slots or counters.
fn is_weight(name: &str) -> bool {
    [
        "/kernel",
        "/bias",
        "/gamma",
        "/beta",
        "/moving_mean",
        "/moving_variance",
    ]
    .iter()
    .any(|suffix| name.ends_with(suffix))
}

pub fn predictions(
    network: &mut dyn Learner,
    part: &str,
    set: &ImageSet,
    indices: &[usize],
    batch: usize,
) -> Result<Vec<PredictionRow>, StageError> {
    let probs = predict_set(network, set, batch).map_err(stage_error)?;
    let mut rows = prediction_rows(part, &set.labels, &probs, network.classes());
    for (row, &index) in rows.iter_mut().zip(indices) {
        row.index = index;
    }
    Ok(rows)
}

fn save_model(
    ctx: &StageContext,
    network: &dyn Learner,
    model: &ModelIr,
) -> Result<(), StageError> {
    let weights: BTreeMap<_, _> = network
        .state()
        .into_iter()
        .filter(|(name, _)| is_weight(name))
        .collect();
    let mut metadata = BTreeMap::new();
    metadata.insert(
        "gpl.ir".to_string(),
        serde_json::to_string(model).map_err(stage_error)?,
    );
    save_safetensors(&ctx.out_dir().join(MODEL_FILE), &weights, &metadata).map_err(stage_error)
}

pub fn epoch_rows(history: &History) -> Vec<EpochRow> {
    history
        .epochs
        .iter()
        .map(|r| EpochRow {
            epoch: r.epoch,
            loss: r.loss,
            accuracy: Some(r.accuracy),
            val_loss: r.val_loss,
            val_accuracy: r.val_accuracy,
            lr: Some(r.lr as f64),
        })
        .collect()
}

pub fn read_history(dir: &Path) -> Result<History, StageError> {
    History::read_csv(&dir.join(super::PUBLIC).join(HISTORY_FILE)).map_err(stage_error)
}
