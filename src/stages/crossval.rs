//! Cross-validation: `crossval_fold` stages (one compared model's whole recipe trained and
//! scored on one fold) and the `crossval` stage (the fold table and the paired test).

use super::balance::balance_spec;
use super::select::{DataLoader, DataSel};
use super::train::{fit_recipe, init_files, predictions, recipe, Recipe, PREDICTIONS_FILE};
use super::{part_rows, spec, stage_error, unsupported, Stage, StageKind};
use crate::check::{self, Program};
use crate::data::artifact::{load_json, save_json};
use crate::data::balance::{balance, materialize, BalanceSpec};
use crate::data::split::{holdout, kfold, kfold_unstratified, HoldoutSpec};
use crate::eval::crossval::{
    summarize_crossval, CrossvalOptions, CrossvalSummary, Metric, ModelFolds, PairedTest,
};
use crate::eval::{evaluate, ModelScores};
use crate::plan::StageSpec;
use crate::report::model::StageReport;
use crate::run::{StageContext, StageError, StageExecutor};
use crate::train::predictions::write_predictions_csv;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FOLD_FILE: &str = "fold.json";
pub const CROSSVAL_FILE: &str = "crossval.json";

/// Held-out share of a fold's training part that the callbacks monitor.
const FOLD_VAL_FRACTION: f64 = 0.15;
/// The significance level of crossval's paired tests (the study's).
const CROSSVAL_ALPHA: f64 = 0.05;

/// One model's recipe trained and scored on one fold of the crossval's images.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldConfig {
    pub model: String,
    pub recipe: Recipe,
    /// The images folded: a whole dataset or one part of its split.
    pub data: DataSel,
    /// The rebalancing the model's own data had, applied to this fold's training part.
    pub balance: Option<BalanceSpec>,
    pub folds: usize,
    pub fold: usize,
    /// Stratified k-fold (each fold keeps the class proportions) or plain shuffled k-fold.
    pub stratify: bool,
    pub seed: u64,
    /// Share of the fold's training part held out for the callbacks' validation metrics.
    pub val_fraction: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FoldArtifact {
    pub model: String,
    pub fold: usize,
    pub scores: ModelScores,
}

pub struct CrossvalFoldStage;

impl StageExecutor for CrossvalFoldStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: FoldConfig = super::config(ctx)?;
        let mut loader = DataLoader::default();
        let pool = loader.indices(ctx, &config.data)?;
        let set = loader.dataset(ctx, config.data.dataset())?;
        let pool_labels: Vec<u32> = pool.iter().map(|&i| set.labels[i]).collect();
        let folds = if config.stratify {
            kfold(&pool_labels, config.folds, config.seed)
        } else {
            kfold_unstratified(pool.len(), config.folds, config.seed)
        }
        .map_err(stage_error)?;
        let fold = folds
            .get(config.fold)
            .ok_or_else(|| StageError::failed("fold index out of range"))?;
        let fold_train: Vec<usize> = fold.train.iter().map(|&i| pool[i]).collect();
        let fold_test: Vec<usize> = fold.test.iter().map(|&i| pool[i]).collect();
        // Validation for the callbacks comes out of the fold's training part.
        let fold_labels: Vec<u32> = fold_train.iter().map(|&i| set.labels[i]).collect();
        let inner = holdout(
            &fold_labels,
            &HoldoutSpec {
                train: 1.0 - config.val_fraction,
                val: config.val_fraction,
                test: 0.0,
                stratify: config.stratify,
                seed: config.seed,
            },
        )
        .map_err(stage_error)?;
        let train_idx: Vec<usize> = inner.train.iter().map(|&i| fold_train[i]).collect();
        let val_idx: Vec<usize> = inner.val.iter().map(|&i| fold_train[i]).collect();
        let (train, weights) = match &config.balance {
            Some(spec) => {
                let index = balance(&set.labels, set.class_names.len(), &train_idx, spec)
                    .map_err(stage_error)?;
                (materialize(set, &index), index.class_weights)
            }
            None => (set.subset(&train_idx), None),
        };
        let val = set.subset(&val_idx);
        let test = set.subset(&fold_test);
        let class_names = set.class_names.clone();
        let (mut network, _) = fit_recipe(
            ctx,
            &config.recipe,
            &train,
            weights.as_deref(),
            Some(&val),
            None,
            super::train::FitDirs {
                files: ctx.public_dir(),
                checkpoints: ctx.scratch_dir(),
            },
        )?;
        let rows = predictions(
            network.as_mut(),
            "test",
            &test,
            &fold_test,
            config.recipe.fit.batch_size,
        )?;
        write_predictions_csv(&ctx.public_dir().join(PREDICTIONS_FILE), &rows)
            .map_err(stage_error)?;
        let (truth, probs, _) = part_rows(&rows, None, "test")?;
        let scores = evaluate(&truth, &probs, &class_names)
            .map_err(stage_error)?
            .summary();
        let artifact = FoldArtifact {
            model: config.model,
            fold: config.fold,
            scores,
        };
        save_json(&artifact, ctx.out_dir().join(FOLD_FILE)).map_err(stage_error)
    }
}

impl Stage for CrossvalFoldStage {
    fn kind(&self) -> StageKind {
        StageKind::CrossvalFold
    }

    fn in_report(&self) -> bool {
        false
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CrossvalConfig {
    pub models: Vec<String>,
    pub folds: usize,
    pub options: CrossvalOptions,
}

pub struct CrossvalStage;

impl StageExecutor for CrossvalStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: CrossvalConfig = super::config(ctx)?;
        let mut models: Vec<ModelFolds> = config
            .models
            .iter()
            .map(|m| ModelFolds {
                model: m.clone(),
                folds: Vec::new(),
            })
            .collect();
        for dir in ctx.input_dirs() {
            let fold: FoldArtifact = load_json(dir.join(FOLD_FILE)).map_err(stage_error)?;
            if let Some(m) = models.iter_mut().find(|m| m.model == fold.model) {
                m.folds.push(fold.scores);
            }
        }
        let summary = summarize_crossval(models, &config.options).map_err(stage_error)?;
        for comparison in &summary.comparisons {
            ctx.notice(&comparison.verdict);
        }
        save_json(&summary, ctx.out_dir().join(CROSSVAL_FILE)).map_err(stage_error)?;
        save_json(&summary, ctx.public_dir().join(CROSSVAL_FILE)).map_err(stage_error)
    }
}

impl Stage for CrossvalStage {
    fn kind(&self) -> StageKind {
        StageKind::Crossval
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let summary: CrossvalSummary = load_json(dir.join(CROSSVAL_FILE)).map_err(stage_error)?;
        section.crossval = Some(summary);
        Ok(true)
    }
}

pub(super) fn compile(
    program: &Program,
    c: &check::Crossval,
    label: Option<String>,
) -> Result<Vec<StageSpec>, Box<check::Error>> {
    let check::Crossval {
        name,
        data,
        folds,
        stratify,
        seed,
        compare,
        test,
        metrics,
        span,
    } = c;
    let data = DataSel::of(data);
    if let DataSel::Balance { balance, .. } = &data {
        return Err(unsupported(
            *span,
            &format!("cross-validating on balance output `{balance}`"),
            "name a dataset or a split part: folds are drawn first, then each compared model's own rebalancing is applied to its fold's training part",
        ));
    }
    let mut specs = Vec::new();
    let mut fold_ids = Vec::new();
    for model in compare {
        let Some(t) = program.train(model) else {
            continue;
        };
        if let Some(stage) = t.init.as_ref().and_then(|i| i.stage.as_ref()) {
            return Err(unsupported(
                *span,
                &format!("cross-validating `{model}`, which starts from train block `{stage}`'s weights"),
                "each fold would start from weights trained on images that fold tests on; initialise from a file instead",
            ));
        }
        let balance = match &t.data {
            check::DataRef::Balance { balance, .. } => {
                program.balance(balance).map(|b| balance_spec(program, b))
            }
            _ => None,
        };
        for fold in 0..*folds {
            let config = FoldConfig {
                model: model.clone(),
                recipe: recipe(program, t),
                data: data.clone(),
                balance: balance.clone(),
                folds: *folds,
                fold,
                stratify: *stratify,
                seed: *seed,
                val_fraction: FOLD_VAL_FRACTION,
            };
            let id = format!("{name}.{model}.fold{}", fold + 1);
            let mut s = spec(
                id.clone(),
                StageKind::CrossvalFold,
                &config,
                &data.stages(),
                label.clone(),
            )
            .with_seed(*seed);
            s.files = init_files(program, t);
            fold_ids.push(id);
            specs.push(s);
        }
    }
    let metrics = metrics
        .iter()
        .map(|m| match m {
            check::CvMetric::Accuracy => Metric::Accuracy,
            check::CvMetric::Precision => Metric::Precision,
            check::CvMetric::Recall => Metric::Recall,
            check::CvMetric::F1 => Metric::F1,
            check::CvMetric::Auc => Metric::Auc,
        })
        .collect();
    let test = match test {
        check::StatTest::Wilcoxon => Some(PairedTest::Wilcoxon),
        check::StatTest::PairedT => Some(PairedTest::PairedT),
        check::StatTest::None => None,
    };
    let config = CrossvalConfig {
        models: compare.clone(),
        folds: *folds,
        options: CrossvalOptions {
            metrics,
            test,
            alpha: CROSSVAL_ALPHA,
        },
    };
    let inputs: Vec<&str> = fold_ids.iter().map(String::as_str).collect();
    specs.push(spec(
        name.clone(),
        StageKind::Crossval,
        &config,
        &inputs,
        label,
    ));
    Ok(specs)
}
