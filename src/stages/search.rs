//! The `search` stage: hyper-parameter search over a model's arguments, each trial trained
//! with the recipe of the block's `train` (its data, loss, optimizer, callbacks and seed).
//!
//! A trial's point is proposed from the trials before it (`search::Search::propose`), so the
//! trials cannot be nodes of the static plan. Each trial is instead a cache entry of its own,
//! `.gpl/trials/<key>/`, keyed by its recipe (the instantiated model included) and the
//! fingerprints of the data stages it reads, and committed by an atomic rename. Proposals are
//! a deterministic function of the seed and the finished trials, so a search killed midway,
//! or re-run with more `trials`, proposes the same points again and finds them cached.
//!
//! Files in `runs/<pipeline>/<stage>/`: `trials.csv` (trial, each parameter, objective,
//! params, MFLOPs, seconds, status), `model.safetensors` of the best trial (its IR in the
//! metadata), `best_so_far.png` and `search.json`.

use super::select::{input_stages, DataLoader, DataSel};
use super::train::{epoch_rows, fit_recipe, save_model, FitDirs, Recipe};
use super::{spec, stage_error, Stage, StageKind};
use crate::check::{self, Part, Program};
use crate::data::artifact::{load_json, save_json};
use crate::nn::ir::ModelIr;
use crate::plan::{StageId, StageSpec};
use crate::report::heatmaps::labelled_lines;
use crate::report::model::{SearchReport, StageFigure, StageReport};
use crate::report::search_plots::{self, pareto_plot, Dependence};
use crate::run::{StageContext, StageError, StageExecutor};
use crate::search::{Goal, Noise, Point, Search, Space, Strategy, Trial};
use crate::train::predictions::write_predictions_csv;
use crate::train::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Instant;

pub const SEARCH_FILE: &str = "search.json";
/// Where trial entries live, under `.gpl/`.
pub const TRIALS_DIR: &str = "trials";
const RESULT_FILE: &str = "result.json";
/// Values per float range when the strategy is `grid`.
const GRID_LEVELS: usize = 5;
/// Points per parameter in the partial-dependence plot.
const PD_STEPS: usize = 24;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SearchConfig {
    /// The pipeline file (relative to the project root) and profile the trials' models are
    /// instantiated from.
    pub pipeline: PathBuf,
    pub profile: Option<String>,
    pub search: String,
    /// The model at the space's lower and upper corners: part of the fingerprint, so an edit
    /// to the model's definition re-runs the search.
    pub corners: Vec<ModelIr>,
    pub dims: Vec<check::Dimension>,
    pub strategy: check::StrategyKind,
    pub trials: usize,
    pub init: usize,
    pub seed: u64,
    pub maximize: bool,
    pub metric: String,
    /// The train block's recipe; each trial replaces its model.
    pub recipe: Recipe,
    pub data: DataSel,
    pub validation: Option<DataSel>,
    /// `subject to` bounds; left out when there are none, so older searches keep their key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub constraints: Vec<check::Constraint>,
    /// The dataset whose split's val and test parts the best trial predicts into
    /// `predictions.csv` (as a train stage does), so ensembles can take `SEARCH.best`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predict: Option<String>,
}

impl SearchConfig {
    pub fn inputs(&self) -> Vec<String> {
        let predict = self.predict_part(Part::Test);
        input_stages(
            std::iter::once(&self.data)
                .chain(self.validation.as_ref())
                .chain(predict.as_ref()),
        )
    }

    fn predict_part(&self, part: Part) -> Option<DataSel> {
        self.predict.as_ref().map(|dataset| DataSel::Part {
            dataset: dataset.clone(),
            split: super::select::split_id(dataset),
            part,
        })
    }

    fn space(&self) -> Result<Space, StageError> {
        check::search_space(&self.dims).map_err(|e| StageError::failed(e.to_string()))
    }

    fn optimiser(&self) -> Result<Search, StageError> {
        Ok(Search {
            space: self.space()?,
            goal: if self.maximize {
                Goal::Maximize
            } else {
                Goal::Minimize
            },
            strategy: match self.strategy {
                check::StrategyKind::Bayes => Strategy::Bayes { init: self.init },
                check::StrategyKind::Random => Strategy::Random,
                check::StrategyKind::Grid => Strategy::Grid {
                    levels: GRID_LEVELS,
                },
            },
            seed: self.seed,
            noise: Noise::Fitted,
        })
    }
}

/// A finished trial as its cache entry stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialResult {
    /// The objective: the best value of the metric over the trial's epochs; None when the
    /// trial failed or the value is not a number.
    pub objective: Option<f64>,
    pub params: usize,
    pub mflops: f64,
    pub seconds: f64,
    /// `ok`, or why the trial failed.
    pub status: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrialRow {
    pub trial: usize,
    /// Each dimension's value as written in trials.csv.
    pub values: Vec<f64>,
    pub result: TrialResult,
    /// Served from `.gpl/trials/` rather than trained in this run.
    pub cached: bool,
}

#[derive(Serialize, Deserialize)]
struct Summary {
    dims: Vec<String>,
    rows: Vec<TrialRow>,
    best: Option<usize>,
    metric: String,
    maximize: bool,
}

pub(super) fn compile(
    program: &Program,
    s: &check::Search,
    label: Option<String>,
) -> Result<StageSpec, Box<check::Error>> {
    let check::Search {
        name,
        // Instantiated per trial from the pipeline file (`check::instantiate_search_models`).
        model: _,
        train,
        // Part of the model call the file holds; the corners below cover them.
        fixed: _,
        space,
        strategy,
        objective,
        constraints,
        // For checking explain blocks; the stage instantiates both corners itself.
        corner: _,
        span,
    } = s;
    let t = program.train(train).ok_or_else(|| {
        Box::new(check::Error::bug(format!(
            "search `{name}` names train `{train}`, which the checker resolved"
        )))
    })?;
    if let Some(stage) = t.init.as_ref().and_then(|i| i.stage.as_ref()) {
        return Err(super::unsupported(
            *span,
            &format!("searching over `{train}`, which starts from train block `{stage}`'s weights"),
            "a search's trials are keyed by their recipe alone; initialise from a file instead",
        ));
    }
    let dims = space.clone();
    let corner = |hi: bool| -> Vec<(String, f64)> {
        dims.iter()
            .map(|d| {
                let v = match &d.domain {
                    check::Domain::Int { lo, hi: h } => (if hi { *h } else { *lo }) as f64,
                    check::Domain::Float { lo, hi: h, .. } => {
                        if hi {
                            *h
                        } else {
                            *lo
                        }
                    }
                    check::Domain::Choice { values } => {
                        if hi {
                            values[values.len() - 1]
                        } else {
                            values[0]
                        }
                    }
                };
                (d.name.clone(), v)
            })
            .collect()
    };
    let pipeline = program
        .root
        .strip_prefix(&program.project_root)
        .unwrap_or(&program.root)
        .to_path_buf();
    let corners = check::instantiate_search_models(
        &program.root,
        program.profile.as_deref(),
        name,
        &[corner(false), corner(true)],
    )
    .map_err(|reason| {
        Box::new(check::Error::Unsupported {
            what: format!("search `{name}`: its model at a corner of the space ({reason})"),
            span: *span,
            help: None,
        })
    })?;
    let config = SearchConfig {
        pipeline,
        profile: program.profile.clone(),
        search: name.clone(),
        corners,
        dims,
        strategy: strategy.kind,
        trials: strategy.trials,
        init: strategy.init,
        seed: strategy.seed,
        maximize: objective.mode == check::Mode::Max,
        metric: objective.metric.clone(),
        recipe: super::train::recipe(program, t),
        data: DataSel::of(&t.data),
        validation: t.validation.as_ref().map(DataSel::of),
        constraints: constraints.clone(),
        predict: super::train::predicted_dataset(program, t).map(str::to_string),
    };
    let inputs = config.inputs();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Ok(spec(
        name.clone(),
        StageKind::Search,
        &config,
        &inputs,
        label,
    ))
}

pub struct SearchStage;

/// The metric's best value over the epochs (the epoch a checkpoint callback would keep).
fn objective(
    history: &crate::train::history::History,
    metric: &str,
    maximize: bool,
) -> Option<f64> {
    let values = epoch_rows(history)
        .into_iter()
        .filter_map(|r| match metric {
            "loss" => Some(r.loss),
            "accuracy" => r.accuracy,
            "val_loss" => r.val_loss,
            "val_accuracy" => r.val_accuracy,
            _ => None,
        });
    let best = if maximize {
        values.fold(f64::NEG_INFINITY, f64::max)
    } else {
        values.fold(f64::INFINITY, f64::min)
    };
    best.is_finite().then_some(best)
}

impl StageExecutor for SearchStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: SearchConfig = super::config(ctx)?;
        let optimiser = config.optimiser()?;
        let mut loader = DataLoader::default();
        let train = loader.select(ctx, &config.data)?;
        let val = match &config.validation {
            Some(sel) => Some(loader.select(ctx, sel)?.images),
            None => None,
        };
        // The data a trial reads, by the committed entries' paths inside the project (their
        // names are content fingerprints), so a moved project keeps its trials.
        let data_key: Vec<String> = config
            .inputs()
            .iter()
            .map(|id| {
                ctx.input_dir(&StageId::from(id.as_str())).map(|d| {
                    d.strip_prefix(ctx.root())
                        .unwrap_or(d)
                        .display()
                        .to_string()
                })
            })
            .collect::<Result<_, _>>()?;
        let trials_root = ctx.root().join(".gpl").join(TRIALS_DIR);
        let pipeline = ctx.resolve(&config.pipeline);
        let mut finished: Vec<Trial> = Vec::new();
        let mut rows: Vec<TrialRow> = Vec::new();
        let mut best: Option<(usize, PathBuf)> = None;
        let searched = check::with_search_models(
            &pipeline,
            config.profile.as_deref(),
            &config.search,
            |build| -> Result<(), StageError> {
                let build = std::cell::RefCell::new(build);
                let feasible = Feasibility::new(&config.dims, &config.constraints);
                while finished.len() < config.trials {
                    ctx.check_cancelled()?;
                    let Some(point) = optimiser
                        .propose(&finished, &[], 1, &|p| {
                            feasible.holds(p, &mut **build.borrow_mut())
                        })
                        .into_iter()
                        .next()
                    else {
                        ctx.notice("the space has no untried point left");
                        break;
                    };
                    let trial = finished.len() + 1;
                    let named = check::named_point(&config.dims, &point);
                    let values: Vec<f64> = named.iter().map(|(_, v)| *v).collect();
                    ctx.progress().set_message(format!(
                        "trial {trial}/{}: {}",
                        config.trials,
                        named
                            .iter()
                            .map(|(n, v)| format!("{n}={v}"))
                            .collect::<Vec<_>>()
                            .join(" ")
                    ));
                    let built = (build.borrow_mut())(&named);
                    let (result, dir, cached) = match built {
                        Err(reason) => (
                            TrialResult {
                                objective: None,
                                params: 0,
                                mflops: 0.0,
                                seconds: 0.0,
                                status: format!(
                                    "the model does not build: {}",
                                    first_line(&reason)
                                ),
                            },
                            None,
                            false,
                        ),
                        Ok(ir) => {
                            let recipe = Recipe {
                                model: ir,
                                ..config.recipe.clone()
                            };
                            let key = trial_key(&recipe, &data_key, &config.metric)?;
                            let dir = trials_root.join(&key);
                            let (result, cached) =
                                match load_json::<TrialResult>(dir.join(RESULT_FILE)) {
                                    Ok(r) => (r, true),
                                    Err(_) => (
                                        run_trial(
                                            ctx,
                                            &recipe,
                                            &train,
                                            val.as_ref(),
                                            &config,
                                            &dir,
                                        )?,
                                        false,
                                    ),
                                };
                            (result, Some(dir), cached)
                        }
                    };
                    let value = result.objective.unwrap_or(f64::NAN);
                    if let (Some(v), Some(dir)) = (result.objective, &dir) {
                        let better = match &best {
                            None => true,
                            Some((b, _)) => {
                                let bv = rows[*b - 1].result.objective.unwrap_or(f64::NAN);
                                if config.maximize {
                                    v > bv
                                } else {
                                    v < bv
                                }
                            }
                        };
                        if better {
                            best = Some((trial, dir.clone()));
                        }
                    }
                    ctx.notice(format!(
                        "trial {trial}/{}: {} → {} {}{}",
                        config.trials,
                        named
                            .iter()
                            .map(|(n, v)| format!("{n}={}", show(*v)))
                            .collect::<Vec<_>>()
                            .join(" "),
                        config.metric,
                        result
                            .objective
                            .map_or_else(|| result.status.clone(), |v| format!("{v:.4}")),
                        if cached { " (cached)" } else { "" }
                    ));
                    finished.push(Trial { point, value });
                    rows.push(TrialRow {
                        trial,
                        values,
                        result,
                        cached,
                    });
                }
                Ok(())
            },
        );
        searched.map_err(|reason| StageError::failed(first_line(&reason).to_string()))??;
        if let (Some((_, dir)), true) = (&best, config.predict.is_some()) {
            let mut network = super::train::load_model_file(&dir.join(super::train::MODEL_FILE))?;
            let mut rows = Vec::new();
            for part in [Part::Val, Part::Test] {
                let Some(sel) = config.predict_part(part) else {
                    continue;
                };
                let chosen = loader.select(ctx, &sel)?;
                rows.extend(super::train::predictions(
                    &mut network,
                    part.as_str(),
                    &chosen.images,
                    &chosen.indices,
                    config.recipe.fit.batch_size,
                )?);
            }
            write_predictions_csv(
                &ctx.public_dir().join(super::train::PREDICTIONS_FILE),
                &rows,
            )
            .map_err(stage_error)?;
        }
        let dependence = partial_dependence(
            &config,
            &optimiser,
            &finished,
            best.as_ref().map(|(t, _)| *t),
        );
        write_outputs(ctx, &config, &rows, best.as_ref(), &dependence)
    }
}

/// Which points meet the search's `subject to` bounds: each point's model is built by the
/// checker's shape inference and measured, and the answer kept, since the acquisition search
/// asks about the same points many times. Without bounds every point is feasible and nothing
/// is built.
struct Feasibility<'a> {
    dims: &'a [check::Dimension],
    constraints: &'a [check::Constraint],
    known: std::cell::RefCell<std::collections::HashMap<Vec<u64>, bool>>,
}

impl<'a> Feasibility<'a> {
    fn new(dims: &'a [check::Dimension], constraints: &'a [check::Constraint]) -> Self {
        Feasibility {
            dims,
            constraints,
            known: Default::default(),
        }
    }

    fn holds(&self, point: &Point, build: &mut check::ModelBuilder) -> bool {
        if self.constraints.is_empty() {
            return true;
        }
        let named = check::named_point(self.dims, point);
        let key: Vec<u64> = named.iter().map(|(_, v)| v.to_bits()).collect();
        if let Some(&ok) = self.known.borrow().get(&key) {
            return ok;
        }
        // A point whose model does not build is not proposed either.
        let ok = build(&named).is_ok_and(|ir| self.constraints.iter().all(|c| c.holds(&ir)));
        self.known.borrow_mut().insert(key, ok);
        ok
    }
}

/// A parameter value for people: integers as integers, others to three decimals.
fn show(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .to_string()
}

fn trial_key(recipe: &Recipe, data: &[String], metric: &str) -> Result<String, StageError> {
    let mut hasher = blake3::Hasher::new();
    hasher.update(&serde_json::to_vec(recipe).map_err(stage_error)?);
    for d in data {
        hasher.update(d.as_bytes());
        hasher.update(b"\0");
    }
    hasher.update(metric.as_bytes());
    Ok(hasher.finalize().to_hex()[..32].to_string())
}

/// Trains one trial into a temporary folder and renames it into place: a killed trial leaves
/// no entry, a finished one is never half-written.
fn run_trial(
    ctx: &StageContext,
    recipe: &Recipe,
    train: &super::select::Selection,
    val: Option<&crate::data::ImageSet>,
    config: &SearchConfig,
    dir: &Path,
) -> Result<TrialResult, StageError> {
    let parent = dir
        .parent()
        .ok_or_else(|| StageError::failed("bad trial folder"))?;
    std::fs::create_dir_all(parent).map_err(stage_error)?;
    let tmp = parent.join(format!(
        ".tmp-{}-{}",
        dir.file_name().and_then(|n| n.to_str()).unwrap_or("trial"),
        std::process::id()
    ));
    remove_abandoned(parent, dir);
    let _ = std::fs::remove_dir_all(&tmp);
    let checkpoints = tmp.join("checkpoints");
    std::fs::create_dir_all(&checkpoints).map_err(stage_error)?;
    let start = Instant::now();
    let fitted = fit_recipe(
        ctx,
        recipe,
        &train.images,
        train.class_weights.as_deref(),
        val,
        None,
        FitDirs {
            files: &tmp,
            checkpoints: &checkpoints,
        },
    );
    ctx.check_cancelled()?;
    let seconds = start.elapsed().as_secs_f64();
    let (params, mflops) = (
        recipe.model.total_params(),
        recipe.model.total_flops() as f64 / 1e6,
    );
    let result = match fitted {
        Ok((network, history)) => {
            save_model(&tmp, network.as_ref(), &recipe.model)?;
            let objective = objective(&history, &config.metric, config.maximize);
            TrialResult {
                objective,
                params,
                mflops,
                seconds,
                status: match objective {
                    Some(_) => "ok".into(),
                    None => format!("{} is not a number", config.metric),
                },
            }
        }
        Err(e) => TrialResult {
            objective: None,
            params,
            mflops,
            seconds,
            status: format!("training failed: {}", first_line(&e.to_string())),
        },
    };
    let _ = std::fs::remove_dir_all(&checkpoints);
    save_json(&result, tmp.join(RESULT_FILE)).map_err(stage_error)?;
    match std::fs::rename(&tmp, dir) {
        Ok(()) => {}
        // Another process committed the same trial first: keep theirs.
        Err(_) if dir.join(RESULT_FILE).is_file() => {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        Err(e) => return Err(stage_error(e)),
    }
    Ok(result)
}

/// Each parameter's partial dependence under the GP fitted to the finished trials, the
/// others held at the best trial's values (empty with fewer than two finished trials).
fn partial_dependence(
    config: &SearchConfig,
    optimiser: &Search,
    finished: &[Trial],
    best: Option<usize>,
) -> Vec<Dependence> {
    let (Some(best), Some(surrogate)) = (best, optimiser.surrogate(finished)) else {
        return Vec::new();
    };
    let anchor = &finished[best - 1].point;
    let space = &optimiser.space;
    space
        .dims()
        .iter()
        .enumerate()
        .map(|(k, dim)| {
            let mut points: Vec<(f64, f64, f64)> = Vec::new();
            for step in 0..=PD_STEPS {
                let v = dim.from_unit(step as f64 / PD_STEPS as f64);
                let x = check::dimension_value(v, &config.dims[k]);
                if points.last().is_some_and(|p| p.0 == x) {
                    continue;
                }
                let mut p = anchor.clone();
                p[k] = v;
                let (mean, sd) = surrogate.predict(space, &p);
                points.push((x, mean, sd));
            }
            Dependence {
                name: dim.name.clone(),
                points,
            }
        })
        .collect()
}

/// `gpl clean`: removes every finished trial entry and every temporary trial folder whose
/// process has ended (a running search's folder stays); returns how many trials it removed.
pub fn clean_trials(root: &Path) -> std::io::Result<usize> {
    let dir = root.join(".gpl").join(TRIALS_DIR);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(e),
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        // Never follow a link out of the project, never remove what gpl did not write.
        if path.is_symlink() || !path.is_dir() {
            continue;
        }
        let finished = path.join(RESULT_FILE).is_file() && !name.starts_with(".tmp-");
        let abandoned = name
            .strip_prefix(".tmp-")
            .and_then(|rest| rest.rsplit('-').next())
            .is_some_and(|pid| !Path::new("/proc").join(pid).exists());
        if finished || abandoned {
            std::fs::remove_dir_all(&path)?;
            removed += usize::from(finished);
        }
    }
    Ok(removed)
}

/// Removes the temporary folders of this trial that a killed process left behind (their
/// process id, the name's last part, is no longer running); a live one may still commit.
fn remove_abandoned(parent: &Path, dir: &Path) {
    let Some(key) = dir.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    let prefix = format!(".tmp-{key}-");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix(&prefix) else {
            continue;
        };
        let alive = Path::new("/proc").join(pid).exists();
        if !alive && !entry.path().is_symlink() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn write_outputs(
    ctx: &StageContext,
    config: &SearchConfig,
    rows: &[TrialRow],
    best: Option<&(usize, PathBuf)>,
    dependence: &[Dependence],
) -> Result<(), StageError> {
    let public = ctx.public_dir();
    let mut csv = String::from("trial");
    for d in &config.dims {
        csv.push(',');
        csv.push_str(&d.name);
    }
    csv.push_str(&format!(
        ",{},params,mflops,seconds,status,cached\n",
        config.metric
    ));
    for r in rows {
        csv.push_str(&r.trial.to_string());
        for v in &r.values {
            csv.push_str(&format!(",{v}"));
        }
        let objective = r.result.objective.map_or(String::new(), |v| v.to_string());
        csv.push_str(&format!(
            ",{objective},{},{:.3},{:.2},\"{}\",{}\n",
            r.result.params,
            r.result.mflops,
            r.result.seconds,
            r.result.status.replace('"', "'"),
            r.cached
        ));
    }
    write_atomic(&public.join("trials.csv"), csv.as_bytes()).map_err(stage_error)?;
    if let Some((_, dir)) = best {
        let model = std::fs::read(dir.join(super::train::MODEL_FILE)).map_err(stage_error)?;
        write_atomic(&public.join(super::train::MODEL_FILE), &model).map_err(stage_error)?;
    }
    let summary = Summary {
        dims: config.dims.iter().map(|d| d.name.clone()).collect(),
        rows: rows.to_vec(),
        best: best.map(|(t, _)| *t),
        metric: config.metric.clone(),
        maximize: config.maximize,
    };
    for (file, png) in figures(&summary, dependence)? {
        write_atomic(&public.join(file), &png).map_err(stage_error)?;
    }
    save_json(&summary, ctx.out_dir().join(SEARCH_FILE)).map_err(stage_error)
}

/// The search's figures by file name: the best-so-far curve, the Pareto front and the
/// partial dependence (when there is something to draw).
fn figures(
    s: &Summary,
    dependence: &[Dependence],
) -> Result<Vec<(&'static str, Vec<u8>)>, StageError> {
    let mut out = Vec::new();
    if let Some(png) = best_so_far_png(s)? {
        out.push(("best_so_far.png", png));
    }
    let sized: Vec<(f64, f64)> = s
        .rows
        .iter()
        .filter_map(|r| r.result.objective.map(|v| (r.result.params as f64, v)))
        .collect();
    if !sized.is_empty() {
        out.push((
            "pareto.png",
            pareto_plot(&sized, s.maximize, &s.metric).map_err(stage_error)?,
        ));
    }
    if !dependence.is_empty() {
        out.push((
            "partial_dependence.png",
            search_plots::partial_dependence(dependence, &s.metric).map_err(stage_error)?,
        ));
    }
    Ok(out)
}

fn best_so_far_png(s: &Summary) -> Result<Option<Vec<u8>>, StageError> {
    if s.rows.is_empty() {
        return Ok(None);
    }
    let mut best: Option<f64> = None;
    let (mut curve, mut each) = (Vec::new(), Vec::new());
    for r in &s.rows {
        if let Some(v) = r.result.objective {
            best = Some(match best {
                None => v,
                Some(b) if s.maximize => b.max(v),
                Some(b) => b.min(v),
            });
        }
        curve.push(best);
        each.push(r.result.objective);
    }
    let labels: Vec<String> = s.rows.iter().map(|r| r.trial.to_string()).collect();
    let png = labelled_lines(
        "search: best so far",
        "trial",
        &s.metric,
        &labels,
        &[("best so far".into(), curve), ("trial".into(), each)],
    )
    .map_err(stage_error)?;
    Ok(Some(png))
}

impl Stage for SearchStage {
    fn kind(&self) -> StageKind {
        StageKind::Search
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let s: Summary = load_json(dir.join(SEARCH_FILE)).map_err(stage_error)?;
        // The partial dependence needs the GP: its PNG is read back from the stage's folder.
        let mut figures: Vec<StageFigure> = figures(&s, &[])?
            .into_iter()
            .map(|(file, png)| StageFigure {
                title: file.trim_end_matches(".png").replace('_', " "),
                file: file.into(),
                png,
            })
            .collect();
        let dependence = dir.join(super::PUBLIC).join("partial_dependence.png");
        if let Ok(png) = std::fs::read(&dependence) {
            figures.push(StageFigure {
                title: "partial dependence".into(),
                file: "partial_dependence.png".into(),
                png,
            });
        }
        section.search = Some(SearchReport {
            dims: s.dims,
            trials: s
                .rows
                .iter()
                .map(|r| {
                    (
                        r.trial,
                        r.values.clone(),
                        r.result.objective,
                        r.result.params,
                        r.result.mflops,
                        r.result.status.clone(),
                    )
                })
                .collect(),
            best: s.best,
            metric: s.metric,
            figures,
        });
        Ok(true)
    }
}
