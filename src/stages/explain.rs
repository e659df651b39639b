//! The `explain` stage: attribution maps of a trained model's predictions, its intermediate
//! activations and its filters, with the sanity checks that say whether the maps depend on
//! the model (cascading randomisation) and how faithful they are (deletion curves).
//!
//! Files, in `runs/<pipeline>/<stage>/`: `<method>.npy` (maps, `[m, H, W]` in [0, 1]),
//! `<method>_raw.npy` (before normalisation), `<method>.png`; `samples.csv` (one row per
//! map: method, map, input, index, true, predicted, target) and `inputs.npy` (each image
//! once, exactly as the model saw it); `activations_<layer>.npy/.png`; `filters.npy/.png`;
//! `sanity.png`, `deletion.png` and `explain.json`.

use super::select::{input_stages, DataLoader, DataSel};
use super::{spec, stage_error, Stage, StageKind};
use crate::check;
use crate::data::artifact::{load_json, save_json};
use crate::data::npy::npy_f32;
use crate::explain::filters::{visualise, Ascent, InputRange};
use crate::explain::samples::{choose, Chosen, SampleChoice};
use crate::explain::sanity::{cascade, deletion, deletion_fractions};
use crate::explain::{attribute, Method};
use crate::nn::ops::activation::argmax;
use crate::nn::Network;
use crate::plan::{StageId, StageSpec};
use crate::report::heatmaps::{channel_rgb, grid, image_rgb, labelled_lines, overlay, Tile};
use crate::report::model::{DeletionRow, ExplainReport, SanityRow, StageFigure, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use crate::train::write_atomic;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const EXPLAIN_FILE: &str = "explain.json";
/// Points of each deletion curve beyond the start (5 % of the pixels per step).
const DELETION_STEPS: usize = 20;
/// Mean Spearman correlation, after the whole network is re-initialised, above which a
/// method is flagged: its maps then show the image more than the model.
const SANITY_FLAG: f64 = 0.5;
/// Inputs are bytes scaled by 1/255 (see `train::predictions`), so the model sees [0, 1].
const INPUT_RANGE: InputRange = InputRange { lo: 0.0, hi: 1.0 };
/// Images enlarged this many times in the figures.
const SCALE: u32 = 3;
/// How strongly a map colours its image.
const OVERLAY_ALPHA: f32 = 0.6;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MapConfig {
    pub method: Method,
    pub layer: Option<String>,
    pub samples: SampleChoice,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ActivationConfig {
    pub layers: Vec<(usize, String)>,
    pub samples: SampleChoice,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FilterConfig {
    pub layer: String,
    pub index: usize,
    pub count: usize,
    pub ascent: Ascent,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExplainConfig {
    /// The train stage whose saved model is explained.
    pub model: String,
    pub data: DataSel,
    pub maps: Vec<MapConfig>,
    pub activations: Option<ActivationConfig>,
    pub filters: Option<FilterConfig>,
    pub sanity: bool,
    pub seed: u64,
    /// `nn::ENGINE_EPOCH`: the engine computes every number here.
    pub engine_epoch: u32,
}

impl ExplainConfig {
    pub fn inputs(&self) -> Vec<String> {
        let mut inputs = input_stages([&self.data]);
        inputs.push(self.model.clone());
        inputs
    }
}

pub(super) fn compile(e: &check::Explain, label: Option<String>) -> StageSpec {
    let check::Explain {
        name,
        model,
        data,
        maps,
        activations,
        filters,
        sanity,
        seed,
        span: _,
    } = e;
    let config = ExplainConfig {
        model: model.clone(),
        data: DataSel::of(data),
        maps: maps
            .iter()
            .map(|m| {
                let check::MapRequest {
                    method,
                    layer,
                    samples,
                } = m;
                MapConfig {
                    method: *method,
                    layer: layer.clone(),
                    samples: samples.clone(),
                }
            })
            .collect(),
        activations: activations.as_ref().map(|a| {
            let check::ActivationView { layers, samples } = a;
            ActivationConfig {
                layers: layers.clone(),
                samples: samples.clone(),
            }
        }),
        filters: filters.as_ref().map(|f| {
            let check::FilterView {
                layer,
                index,
                count,
                ascent,
            } = f;
            FilterConfig {
                layer: layer.clone(),
                index: *index,
                count: *count,
                ascent: *ascent,
            }
        }),
        sanity: *sanity,
        seed: *seed,
        engine_epoch: crate::nn::ENGINE_EPOCH,
    };
    let inputs = config.inputs();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    spec(name.clone(), StageKind::Explain, &config, &inputs, label)
}

/// What `Stage::report` reads back.
#[derive(Serialize, Deserialize)]
struct Summary {
    report: ExplainReport,
}

pub struct ExplainStage;

/// The images the maps are drawn on, each once, in first-use order.
struct Inputs {
    positions: Vec<usize>,
    pixels: Vec<f32>,
}

impl Inputs {
    fn row(&mut self, position: usize, image: &[f32]) -> usize {
        match self.positions.iter().position(|&p| p == position) {
            Some(row) => row,
            None => {
                self.positions.push(position);
                self.pixels.extend_from_slice(image);
                self.positions.len() - 1
            }
        }
    }
}

impl StageExecutor for ExplainStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: ExplainConfig = super::config(ctx)?;
        let described = config.data.describe();
        let selection = DataLoader::default().select(ctx, &config.data)?;
        let set = &selection.images;
        let images: Vec<f32> = set.images.iter().map(|&b| b as f32 / 255.0).collect();
        let (h, w, c) = (set.height, set.width, set.channels);
        let per = h * w * c;
        let mut network =
            super::train::load_model(ctx.input_dir(&StageId::from(config.model.as_str()))?)?;
        let classes = set.class_names.len();
        let predicted = predict(&mut network, &images, set.len())?;
        let public = ctx.public_dir();
        let write = |file: &str, bytes: &[u8]| -> Result<(), StageError> {
            write_atomic(&public.join(file), bytes).map_err(stage_error)
        };
        let short = |k: u32| -> String {
            let name = set.class_names.get(k as usize).map_or("?", String::as_str);
            let name: String = name.chars().take(14).collect();
            format!("{k} {name}")
        };
        let mut inputs = Inputs {
            positions: Vec::new(),
            pixels: Vec::new(),
        };
        let mut csv = String::from("method,map,input,index,true,predicted,target\n");
        let mut report = ExplainReport {
            model: config.model.clone(),
            data: described.clone(),
            ..ExplainReport::default()
        };
        let mut figures = Vec::new();
        let mut progress = 0usize;
        let total = config.maps.len()
            + usize::from(config.activations.is_some())
            + usize::from(config.filters.is_some());
        ctx.progress().set_length(total as u64);
        for map in &config.maps {
            let name = map.method.name();
            ctx.progress().set_message(name);
            progress += 1;
            ctx.progress().set_position(progress as u64);
            ctx.check_cancelled()?;
            let chosen = choose(&map.samples, &set.labels, &predicted, classes)
                .map_err(|e| StageError::failed(format!("{name}: {e}")))?;
            let (batch, targets) = gather(&images, per, &chosen);
            let result = attribute(&mut network, &batch, &targets, &map.method, config.seed)
                .map_err(stage_error)?;
            let m = chosen.len();
            write(&format!("{name}.npy"), &npy_f32(&[m, h, w], &result.maps))?;
            write(
                &format!("{name}_raw.npy"),
                &npy_f32(&result.raw_shape, &result.raw),
            )?;
            let mut tiles = Vec::with_capacity(m);
            for (k, pick) in chosen.iter().enumerate() {
                let image = &images[pick.position * per..(pick.position + 1) * per];
                let row = inputs.row(pick.position, image);
                csv.push_str(&format!(
                    "{name},{k},{row},{},{},{},{}\n",
                    selection.indices[pick.position], pick.truth, pick.predicted, pick.target
                ));
                let rgb = image_rgb(image, c, INPUT_RANGE.lo, INPUT_RANGE.hi);
                tiles.push(Tile {
                    rgb: overlay(
                        &rgb,
                        &result.maps[k * h * w..(k + 1) * h * w],
                        OVERLAY_ALPHA,
                    ),
                    width: w as u32,
                    height: h as u32,
                    caption: format!(
                        "#{} true {}\npred {}{}",
                        selection.indices[pick.position],
                        short(pick.truth),
                        short(pick.predicted),
                        if pick.target != pick.predicted {
                            format!(" map {}", pick.target)
                        } else {
                            String::new()
                        }
                    ),
                });
            }
            let layer = map
                .layer
                .as_ref()
                .map(|l| format!(" at {l}"))
                .unwrap_or_default();
            let title = format!("{name}{layer}: {} on {described}", config.model);
            figures.push(figure(
                &title,
                &format!("{name}.png"),
                grid(&title, &tiles, 4, SCALE).map_err(stage_error)?,
            ));
            let curves = deletion(&mut network, &batch, &targets, &result.maps, DELETION_STEPS)
                .map_err(stage_error)?;
            let mut curve = vec![0.0; DELETION_STEPS + 1];
            for (points, _) in &curves {
                for (s, p) in curve.iter_mut().zip(points) {
                    *s += *p as f64 / curves.len() as f64;
                }
            }
            report.deletion.push(DeletionRow {
                method: name.to_string(),
                auc: curves.iter().map(|c| c.1).sum::<f64>() / curves.len().max(1) as f64,
                curve,
            });
            if config.sanity {
                let steps = cascade(
                    &mut network,
                    &batch,
                    &targets,
                    &[map.method],
                    std::slice::from_ref(&result.maps),
                    config.seed,
                )
                .map_err(stage_error)?;
                let steps = &steps[0];
                let last = steps.last().and_then(|s| s.spearman);
                report.sanity.push(SanityRow {
                    method: name.to_string(),
                    layers: steps.iter().map(|s| s.layer.clone()).collect(),
                    spearman: steps.iter().map(|s| s.spearman).collect(),
                    warning: last.filter(|r| *r > SANITY_FLAG).map(|r| {
                        format!(
                            "{name}'s maps barely change when every layer is re-initialised (Spearman {r:.2}): \
                             they show the image more than what the model learned"
                        )
                    }),
                });
            }
        }
        if let Some(view) = &config.activations {
            ctx.progress().set_message("activations");
            progress += 1;
            ctx.progress().set_position(progress as u64);
            ctx.check_cancelled()?;
            let chosen = choose(&view.samples, &set.labels, &predicted, classes)
                .map_err(|e| StageError::failed(format!("activations: {e}")))?;
            let (batch, targets) = gather(&images, per, &chosen);
            for (index, layer) in &view.layers {
                let (acts, _) =
                    crate::explain::maps::gradients(&mut network, &batch, &targets, Some(*index))
                        .map_err(stage_error)?;
                let shape = network.ir().layers[*index].output.clone();
                let mut full = vec![chosen.len()];
                full.extend(&shape);
                write(&format!("activations_{layer}.npy"), &npy_f32(&full, &acts))?;
                let [lh, lw, lc] = match *shape.as_slice() {
                    [a, b, c] => [a, b, c],
                    [units] => [1, units, 1],
                    _ => continue,
                };
                // The first chosen image, every channel, strongest on average first.
                let one = &acts[..lh * lw * lc];
                let mean =
                    |k: usize| one.iter().skip(k).step_by(lc).sum::<f32>() / (lh * lw) as f32;
                let mut order: Vec<usize> = (0..lc).collect();
                order.sort_by(|&a, &b| mean(b).total_cmp(&mean(a)));
                let tiles: Vec<Tile> = order
                    .iter()
                    .map(|&k| Tile {
                        rgb: channel_rgb(
                            &one.iter().skip(k).step_by(lc).copied().collect::<Vec<_>>(),
                        ),
                        width: lw as u32,
                        height: lh as u32,
                        caption: format!("{layer} ch {k}\nmean {:.3}", mean(k)),
                    })
                    .collect();
                let title = format!(
                    "activations of {layer} for image #{}",
                    chosen.first().map_or(0, |p| selection.indices[p.position])
                );
                let scale = (96 / lh.max(1) as u32).clamp(1, 6);
                figures.push(figure(
                    &title,
                    &format!("activations_{layer}.png"),
                    grid(&title, &tiles, 8, scale).map_err(stage_error)?,
                ));
            }
        }
        if let Some(f) = &config.filters {
            ctx.progress().set_message("filters");
            progress += 1;
            ctx.progress().set_position(progress as u64);
            ctx.check_cancelled()?;
            let channels: Vec<usize> = (0..f.count).collect();
            let pictures = visualise(&mut network, f.index, &channels, &f.ascent, INPUT_RANGE)
                .map_err(stage_error)?;
            write("filters.npy", &npy_f32(&[f.count, h, w, c], &pictures))?;
            let tiles: Vec<Tile> = pictures
                .chunks(per)
                .enumerate()
                .map(|(k, p)| Tile {
                    rgb: image_rgb(p, c, INPUT_RANGE.lo, INPUT_RANGE.hi),
                    width: w as u32,
                    height: h as u32,
                    caption: format!("{} ch {k}", f.layer),
                })
                .collect();
            let title = format!("filters of {} ({} ascent steps)", f.layer, f.ascent.steps);
            figures.push(figure(
                &title,
                "filters.png",
                grid(&title, &tiles, 4, SCALE).map_err(stage_error)?,
            ));
        }
        if !report.sanity.is_empty() {
            // Batchnorm names are long; the axis reads `bn_3` for `batch_normalization_3`.
            let layers: Vec<String> = report.sanity[0]
                .layers
                .iter()
                .map(|l| l.replace("batch_normalization", "bn"))
                .collect();
            let series: Vec<(String, Vec<Option<f64>>)> = report
                .sanity
                .iter()
                .map(|r| (r.method.clone(), r.spearman.clone()))
                .collect();
            let png = labelled_lines(
                "cascading randomisation",
                "layers re-initialised, top down (cumulative)",
                "Spearman ρ, trained vs random",
                &layers,
                &series,
            )
            .map_err(stage_error)?;
            figures.push(figure("cascading randomisation", "sanity.png", png));
        }
        if !report.deletion.is_empty() {
            let labels: Vec<String> = deletion_fractions(DELETION_STEPS)
                .iter()
                .map(|f| format!("{:.0}%", f * 100.0))
                .collect();
            let series: Vec<(String, Vec<Option<f64>>)> = report
                .deletion
                .iter()
                .map(|r| {
                    (
                        format!("{} (AUC {:.3})", r.method, r.auc),
                        r.curve.iter().map(|v| Some(*v)).collect(),
                    )
                })
                .collect();
            let png = labelled_lines(
                "deletion curves",
                "most-attributed pixels removed",
                "target probability",
                &labels,
                &series,
            )
            .map_err(stage_error)?;
            figures.push(figure("deletion curves", "deletion.png", png));
        }
        for f in &figures {
            write(&f.file, &f.png)?;
        }
        write("samples.csv", csv.as_bytes())?;
        write(
            "inputs.npy",
            &npy_f32(&[inputs.positions.len(), h, w, c], &inputs.pixels),
        )?;
        report.figures = figures;
        save_json(&Summary { report }, ctx.out_dir().join(EXPLAIN_FILE)).map_err(stage_error)
    }
}

fn figure(title: &str, file: &str, png: Vec<u8>) -> StageFigure {
    StageFigure {
        title: title.to_string(),
        file: file.to_string(),
        png,
    }
}

/// The chosen images (in choice order, repeated when a target is `each`) and their targets.
fn gather(images: &[f32], per: usize, chosen: &[Chosen]) -> (Vec<f32>, Vec<u32>) {
    let mut batch = Vec::with_capacity(chosen.len() * per);
    for c in chosen {
        batch.extend_from_slice(&images[c.position * per..(c.position + 1) * per]);
    }
    (batch, chosen.iter().map(|c| c.target).collect())
}

/// The model's predicted class of every image.
fn predict(network: &mut Network, images: &[f32], n: usize) -> Result<Vec<u32>, StageError> {
    let probs = network.probabilities(images, n).map_err(stage_error)?;
    let classes = probs.len() / n.max(1);
    Ok(probs
        .chunks(classes.max(1))
        .map(|row| argmax(row) as u32)
        .collect())
}

impl Stage for ExplainStage {
    fn kind(&self) -> StageKind {
        StageKind::Explain
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let Summary { mut report } = load_json(dir.join(EXPLAIN_FILE)).map_err(stage_error)?;
        for f in &mut report.figures {
            let path = dir.join(super::PUBLIC).join(&f.file);
            f.png = std::fs::read(&path)
                .map_err(|e| StageError::failed(format!("{}: {e}", path.display())))?;
        }
        section.explain = Some(report);
        Ok(true)
    }
}
