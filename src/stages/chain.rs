//! The `chain` stage: detect, then classify. Each detection above `min_score` becomes a stamp
//! around its centroid (edges padded with the local background), resampled to the classifier's
//! input and classified by a trained model, a search's best trial or an ensemble. The result
//! is a catalogue (CSV and a FITS binary table) and, where the fields are synthetic, how much
//! of the truth it recovered: completeness, purity and classification accuracy, in bins of
//! galaxy size and brightness.

use super::detect::{read_detections, select_fields};
use super::ensemble::{EnsembleArtifact, ENSEMBLE_FILE};
use super::select::DataSel;
use super::{spec, stage_error, unsupported, Stage, StageKind};
use crate::check::{self, Predictor, Program};
use crate::data::artifact::{load_json, save_json};
use crate::data::fields::FieldSet;
use crate::data::fits_table::{write_bintable, Column};
use crate::data::synth::SDSS_CLASSES;
use crate::data::ImageSet;
use crate::detect::boxes::iou;
use crate::detect::fields::FieldDetection;
use crate::plan::{StageId, StageSpec};
use crate::report::boxes::{boxes_png, LabelledBox};
use crate::report::model::{KeyFigure, ReportTable, StageFigure, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;

const SUMMARY_FILE: &str = "chain.json";
/// Each field drawn with its catalogue, in the chain's folder.
const FIELDS_DIR: &str = "fields";
/// Boxes match the truth at IoU ≥ this (the usual detection criterion).
pub const MATCH_IOU: f64 = 0.5;

/// The classifier: one model, or an ensemble's members and the stage holding its weights.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ClassifierConfig {
    /// As written: `scratch`, `tiny.best`, `combo`.
    pub name: String,
    /// Stages whose `model.safetensors` vote.
    pub members: Vec<String>,
    /// The ensemble stage whose `ensemble.json` holds the weights (`None`: one model).
    pub ensemble: Option<String>,
    /// The dataset stage the classifier learned from: its class names label the catalogue.
    pub dataset: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChainConfig {
    pub detector: String,
    pub data: DataSel,
    pub min_score: f64,
    /// Keep detections with `a` ≥ this many pixels; left out of the key when 0.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_size: f64,
    pub crop: Option<[usize; 2]>,
    pub classify: Option<ClassifierConfig>,
    pub output: String,
    pub batch: usize,
    /// The engine computes the class probabilities.
    pub engine_epoch: Option<u32>,
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// One catalogue row.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Entry {
    field: String,
    /// The field's row in `fields`.
    image: usize,
    id: usize,
    det: FieldDetection,
    class: Option<usize>,
    probabilities: Vec<f32>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct Recovery {
    truth: usize,
    detections: usize,
    matched: usize,
    /// Matched galaxies whose predicted class is their true class (`None`: no classifier, or
    /// its classes are not Galaxy10's).
    correct: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Summary {
    data: String,
    classifier: Option<String>,
    min_score: f64,
    #[serde(default)]
    min_size: f64,
    crop: Option<[usize; 2]>,
    fields: usize,
    entries: usize,
    class_counts: Vec<(String, usize)>,
    /// On synthetic fields: overall and in bins.
    recovery: Option<Recovery>,
    by_size: Vec<(String, Recovery)>,
    by_brightness: Vec<(String, Recovery)>,
}

pub struct ChainStage;

impl StageExecutor for ChainStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: ChainConfig = super::config(ctx)?;
        let found = read_detections(ctx.input_dir(&StageId::from(config.detector.as_str()))?)?;
        let (fields, _) = select_fields(ctx, &config.data)?;
        if found.images.len() != fields.len() {
            return Err(StageError::failed(format!(
                "the detector saw {} images, the data has {}",
                found.images.len(),
                fields.len()
            )));
        }
        let mut entries: Vec<Entry> = Vec::new();
        for (i, d) in found.images.iter().enumerate() {
            let kept = d
                .objects
                .iter()
                .filter(|o| o.score >= config.min_score && o.a >= config.min_size);
            for (k, o) in kept.enumerate() {
                entries.push(Entry {
                    field: d.name.clone(),
                    image: i,
                    id: k + 1,
                    det: o.clone(),
                    class: None,
                    probabilities: Vec::new(),
                });
            }
        }
        let class_names = match &config.classify {
            Some(c) => classify(ctx, &config, c, &fields, &mut entries)?,
            None => Vec::new(),
        };
        write_catalogue(ctx, &config.output, &entries, &class_names)?;
        draw_fields(ctx, &fields, &entries, &class_names)?;
        let summary = summarise(&config, &fields, &entries, &class_names);
        save_json(&summary, ctx.out_dir().join(SUMMARY_FILE)).map_err(stage_error)
    }
}

/// Cuts every entry's stamp, runs the classifier and fills `class` and `probabilities`;
/// returns the class names.
fn classify(
    ctx: &StageContext,
    config: &ChainConfig,
    c: &ClassifierConfig,
    fields: &FieldSet,
    entries: &mut [Entry],
) -> Result<Vec<String>, StageError> {
    let summary = super::dataset::read_summary(ctx.input_dir(&StageId::from(c.dataset.as_str()))?)?;
    let weights: Vec<f64> = match &c.ensemble {
        Some(e) => {
            let a: EnsembleArtifact = load_json(
                ctx.input_dir(&StageId::from(e.as_str()))?
                    .join(ENSEMBLE_FILE),
            )
            .map_err(stage_error)?;
            a.weights
        }
        None => vec![1.0],
    };
    if weights.len() != c.members.len() {
        return Err(StageError::failed(format!(
            "{} weights for {} ensemble members",
            weights.len(),
            c.members.len()
        )));
    }
    let classes = summary.class_names.len();
    let mut votes = vec![0f64; entries.len() * classes];
    // Stamps are cut once per crop size: an ensemble's members usually share their input.
    let mut cut: Vec<([usize; 2], ImageSet)> = Vec::new();
    for (member, &weight) in c.members.iter().zip(&weights) {
        ctx.check_cancelled()?;
        let mut network =
            super::train::load_model(ctx.input_dir(&StageId::from(member.as_str()))?)?;
        let input = network.ir().input.clone();
        let (h, w) = (input[0], input[1]);
        let crop = config.crop.unwrap_or([h, w]);
        if !cut.iter().any(|(size, _)| *size == crop) {
            cut.push((crop, stamps(fields, entries, crop)?));
        }
        let stamps = cut
            .iter()
            .find(|(size, _)| *size == crop)
            .map(|(_, set)| set.clone())
            .ok_or_else(|| StageError::failed("no stamps were cut"))?
            .resized(h, w)
            .map_err(stage_error)?;
        let probs = crate::train::predictions::predict_set(&mut network, &stamps, config.batch)
            .map_err(stage_error)?;
        if probs.len() != entries.len() * classes {
            return Err(StageError::failed(format!(
                "`{member}` predicts {} classes; its dataset has {classes}",
                probs.len() / entries.len().max(1)
            )));
        }
        for (v, p) in votes.iter_mut().zip(&probs) {
            *v += weight * *p as f64;
        }
    }
    for (e, row) in entries.iter_mut().zip(votes.chunks(classes.max(1))) {
        e.probabilities = row.iter().map(|&p| p as f32).collect();
        e.class = Some(crate::nn::ops::activation::argmax(&e.probabilities));
    }
    Ok(summary.class_names)
}

/// Each entry's `crop` stamp around its centroid; pixels outside the field take the local
/// background: the per-channel median of the stamp's pixels inside the field that no detection
/// box covers (the whole stamp's median when every pixel is covered).
fn stamps(fields: &FieldSet, entries: &[Entry], crop: [usize; 2]) -> Result<ImageSet, StageError> {
    let (fh, fw, c) = (
        fields.images.height as i64,
        fields.images.width as i64,
        fields.images.channels,
    );
    let [ch, cw] = crop;
    let mut pixels = Vec::with_capacity(entries.len() * ch * cw * c);
    // Every field's catalogue boxes, gathered once.
    let mut by_field: Vec<Vec<&FieldDetection>> = vec![Vec::new(); fields.len()];
    for e in entries {
        by_field[e.image].push(&e.det);
    }
    for e in entries {
        let image = fields.image(e.image);
        // The stamp's top-left so that the centroid (pixel centres at whole numbers) sits at
        // its centre.
        let y0 = (e.det.y + 0.5 - ch as f64 / 2.0).round() as i64;
        let x0 = (e.det.x + 0.5 - cw as f64 / 2.0).round() as i64;
        let boxes = &by_field[e.image];
        let mut sky: Vec<Vec<u8>> = vec![Vec::new(); c];
        let mut all: Vec<Vec<u8>> = vec![Vec::new(); c];
        for y in y0.max(0)..(y0 + ch as i64).min(fh) {
            for x in x0.max(0)..(x0 + cw as i64).min(fw) {
                let p = &image[((y * fw + x) as usize) * c..][..c];
                let (xf, yf) = (x as f64 + 0.5, y as f64 + 0.5);
                let covered = boxes
                    .iter()
                    .any(|b| xf >= b.xmin && xf < b.xmax && yf >= b.ymin && yf < b.ymax);
                for k in 0..c {
                    all[k].push(p[k]);
                    if !covered {
                        sky[k].push(p[k]);
                    }
                }
            }
        }
        let fill: Vec<u8> = (0..c)
            .map(|k| {
                let v = if sky[k].is_empty() {
                    &mut all[k]
                } else {
                    &mut sky[k]
                };
                if v.is_empty() {
                    return 0;
                }
                let mid = v.len() / 2;
                *v.select_nth_unstable(mid).1
            })
            .collect();
        for y in y0..y0 + ch as i64 {
            for x in x0..x0 + cw as i64 {
                if y >= 0 && y < fh && x >= 0 && x < fw {
                    pixels.extend_from_slice(&image[((y * fw + x) as usize) * c..][..c]);
                } else {
                    pixels.extend_from_slice(&fill);
                }
            }
        }
    }
    Ok(ImageSet {
        height: ch,
        width: cw,
        channels: c,
        images: pixels,
        labels: vec![0; entries.len()],
        class_names: vec!["stamp".into()],
    })
}

/// `output` (CSV) and the same name with `.fits` (a binary table), in the chain's folder.
fn write_catalogue(
    ctx: &StageContext,
    output: &str,
    entries: &[Entry],
    class_names: &[String],
) -> Result<(), StageError> {
    let mut csv = String::from("field,id,x,y,xmin,ymin,xmax,ymax,flux,a,b,theta,score");
    if !class_names.is_empty() {
        csv.push_str(",class");
        for name in class_names {
            let _ = write!(csv, ",p_{}", column_name(name));
        }
    }
    csv.push('\n');
    for e in entries {
        let d = &e.det;
        let _ = write!(
            csv,
            "{},{},{:.4},{:.4},{},{},{},{},{:.3},{:.4},{:.4},{:.5},{:.6}",
            e.field,
            e.id,
            d.x,
            d.y,
            d.xmin,
            d.ymin,
            d.xmax,
            d.ymax,
            d.flux,
            d.a,
            d.b,
            d.theta,
            d.score
        );
        if let Some(k) = e.class {
            let _ = write!(csv, ",{}", class_names[k].replace(',', ";"));
            for p in &e.probabilities {
                let _ = write!(csv, ",{p:.6}");
            }
        }
        csv.push('\n');
    }
    let public = ctx.public_dir();
    crate::train::write_atomic(&public.join(output), csv.as_bytes()).map_err(stage_error)?;
    let f64s = |f: &dyn Fn(&Entry) -> f64| entries.iter().map(f).collect::<Vec<f64>>();
    let mut columns = vec![
        Column::str("field", entries.iter().map(|e| e.field.clone()).collect()),
        Column::i64("id", entries.iter().map(|e| e.id as i64).collect()),
        Column::f64("x", "pix", f64s(&|e| e.det.x)),
        Column::f64("y", "pix", f64s(&|e| e.det.y)),
        Column::f64("xmin", "pix", f64s(&|e| e.det.xmin)),
        Column::f64("ymin", "pix", f64s(&|e| e.det.ymin)),
        Column::f64("xmax", "pix", f64s(&|e| e.det.xmax)),
        Column::f64("ymax", "pix", f64s(&|e| e.det.ymax)),
        Column::f64("flux", "", f64s(&|e| e.det.flux)),
        Column::f64("a", "pix", f64s(&|e| e.det.a)),
        Column::f64("b", "pix", f64s(&|e| e.det.b)),
        Column::f64("theta", "rad", f64s(&|e| e.det.theta)),
        Column::f64("score", "", f64s(&|e| e.det.score)),
    ];
    if !class_names.is_empty() {
        columns.push(Column::str(
            "class",
            entries
                .iter()
                .map(|e| {
                    let name = e.class.map_or("", |k| class_names[k].as_str());
                    name.chars().filter(char::is_ascii).collect()
                })
                .collect(),
        ));
        for (k, name) in class_names.iter().enumerate() {
            columns.push(Column::f64(
                &format!("p_{}", column_name(name)),
                "",
                f64s(&|e| e.probabilities.get(k).copied().unwrap_or(0.0) as f64),
            ));
        }
    }
    let fits = Path::new(output).with_extension("fits");
    write_bintable(&public.join(fits), "CATALOG", &columns).map_err(stage_error)
}

/// `fields/<field>.png`: each field with its catalogue entries' boxes, labelled with the
/// predicted class.
fn draw_fields(
    ctx: &StageContext,
    fields: &FieldSet,
    entries: &[Entry],
    class_names: &[String],
) -> Result<(), StageError> {
    let dir = ctx.public_dir().join(FIELDS_DIR);
    std::fs::create_dir_all(&dir).map_err(stage_error)?;
    for (i, name) in fields.names.iter().enumerate() {
        ctx.check_cancelled()?;
        let boxes: Vec<LabelledBox> = entries
            .iter()
            .filter(|e| e.image == i)
            .map(|e| {
                let label = e.class.map_or(String::new(), |k| class_names[k].clone());
                (e.det.xmin, e.det.ymin, e.det.xmax, e.det.ymax, label)
            })
            .collect();
        let png = boxes_png(
            fields.image(i),
            fields.images.height,
            fields.images.width,
            &boxes,
        )
        .map_err(stage_error)?;
        crate::train::write_atomic(&dir.join(format!("{name}.png")), &png).map_err(stage_error)?;
    }
    Ok(())
}

/// A class name as a column name: ASCII letters, digits and underscores.
fn column_name(name: &str) -> String {
    name.chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() {
                ch.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect::<String>()
        .split('_')
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("_")
}

/// Greedy matching per field, detections by descending score (COCO's order), each to the
/// unmatched truth box of highest IoU ≥ `MATCH_IOU`. Returns, per truth object (field, index),
/// the matched entry.
fn match_truth(fields: &FieldSet, entries: &[Entry]) -> Vec<Vec<Option<usize>>> {
    let mut matched: Vec<Vec<Option<usize>>> =
        fields.objects.iter().map(|o| vec![None; o.len()]).collect();
    let mut order: Vec<usize> = (0..entries.len()).collect();
    order.sort_by(|&a, &b| entries[b].det.score.total_cmp(&entries[a].det.score));
    for i in order {
        let e = &entries[i];
        let d = [e.det.xmin, e.det.ymin, e.det.xmax, e.det.ymax];
        let best = fields.objects[e.image]
            .iter()
            .enumerate()
            .filter(|(t, _)| matched[e.image][*t].is_none())
            .map(|(t, o)| (t, iou(d, [o.xmin, o.ymin, o.xmax, o.ymax])))
            .filter(|(_, v)| *v >= MATCH_IOU)
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((t, _)) = best {
            matched[e.image][t] = Some(i);
        }
    }
    matched
}

fn summarise(
    config: &ChainConfig,
    fields: &FieldSet,
    entries: &[Entry],
    class_names: &[String],
) -> Summary {
    let mut class_counts: Vec<(String, usize)> =
        class_names.iter().map(|n| (n.clone(), 0)).collect();
    for e in entries {
        if let Some(k) = e.class {
            class_counts[k].1 += 1;
        }
    }
    let mut summary = Summary {
        data: config.data.describe(),
        classifier: config.classify.as_ref().map(|c| c.name.clone()),
        min_score: config.min_score,
        min_size: config.min_size,
        crop: config.crop,
        fields: fields.len(),
        entries: entries.len(),
        class_counts,
        recovery: None,
        by_size: Vec::new(),
        by_brightness: Vec::new(),
    };
    let truths: Vec<(usize, usize)> = fields
        .objects
        .iter()
        .enumerate()
        .flat_map(|(i, o)| (0..o.len()).map(move |t| (i, t)))
        .filter(|&(i, t)| fields.objects[i][t].truth.is_some())
        .collect();
    if truths.is_empty() {
        return summary;
    }
    let matched = match_truth(fields, entries);
    // A predicted class is compared with the truth by name: the classifier's classes may be
    // Galaxy10's after drops and merges.
    let correct = |i: usize, t: usize| -> Option<bool> {
        let e = &entries[matched[i][t]?];
        let truth = fields.objects[i][t].truth.as_ref()?;
        let name = SDSS_CLASSES.get(truth.galaxy10 as usize)?;
        let predicted = class_names.get(e.class?)?;
        Some(predicted == name)
    };
    let recovery = |subset: &[(usize, usize)], detections: usize| {
        let hits: Vec<&(usize, usize)> = subset
            .iter()
            .filter(|&&(i, t)| matched[i][t].is_some())
            .collect();
        let judged: Vec<bool> = hits.iter().filter_map(|&&(i, t)| correct(i, t)).collect();
        Recovery {
            truth: subset.len(),
            detections,
            matched: hits.len(),
            correct: (!judged.is_empty() || hits.is_empty() && !class_names.is_empty())
                .then(|| judged.iter().filter(|&&c| c).count()),
        }
    };
    summary.recovery = Some(recovery(&truths, entries.len()));
    let truth_of = |&(i, t): &(usize, usize)| fields.objects[i][t].truth.as_ref();
    summary.by_size = bins(
        &truths,
        |k| truth_of(k).map_or(0.0, |t| t.radius),
        "px",
        &recovery,
    );
    summary.by_brightness = bins(
        &truths,
        |k| truth_of(k).map_or(0.0, |t| t.peak_snr),
        "σ",
        &recovery,
    );
    summary
}

/// The recovery of a set of (field, object) truths given a number of detections.
type RecoveryOf<'a> = dyn Fn(&[(usize, usize)], usize) -> Recovery + 'a;

/// Tercile bins of the truth objects by `key`, each with its recovery (detections are not
/// binned: purity is overall only).
fn bins(
    truths: &[(usize, usize)],
    key: impl Fn(&(usize, usize)) -> f64,
    unit: &str,
    recovery: &RecoveryOf,
) -> Vec<(String, Recovery)> {
    let mut sorted: Vec<((usize, usize), f64)> = truths.iter().map(|t| (*t, key(t))).collect();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
    let n = sorted.len();
    let parts = if n >= 3 { 3 } else { 1 };
    (0..parts)
        .map(|p| {
            let chunk = &sorted[p * n / parts..(p + 1) * n / parts];
            let lo = chunk.first().map_or(0.0, |c| c.1);
            let hi = chunk.last().map_or(0.0, |c| c.1);
            let members: Vec<(usize, usize)> = chunk.iter().map(|c| c.0).collect();
            (format!("{lo:.1}–{hi:.1} {unit}"), recovery(&members, 0))
        })
        .collect()
}

fn ratio(a: usize, b: usize) -> String {
    if b == 0 {
        "–".into()
    } else {
        format!("{:.3}", a as f64 / b as f64)
    }
}

fn recovery_row(label: &str, r: &Recovery, purity: bool) -> Vec<String> {
    vec![
        label.to_string(),
        r.truth.to_string(),
        ratio(r.matched, r.truth),
        if purity {
            ratio(r.matched, r.detections)
        } else {
            "–".into()
        },
        r.correct.map_or("–".into(), |c| ratio(c, r.matched)),
        r.correct.map_or("–".into(), |c| ratio(c, r.truth)),
    ]
}

/// The alphabetically first field's drawing, for the report.
fn first_png(dir: &Path) -> Option<StageFigure> {
    let fields = dir.join(super::PUBLIC).join(FIELDS_DIR);
    let mut names: Vec<String> = std::fs::read_dir(&fields)
        .ok()?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    let name = names.into_iter().next()?;
    Some(StageFigure {
        title: format!(
            "{} with its catalogue entries",
            name.trim_end_matches(".png")
        ),
        file: format!("{FIELDS_DIR}_{name}"),
        png: std::fs::read(fields.join(&name)).ok()?,
    })
}

impl Stage for ChainStage {
    fn kind(&self) -> StageKind {
        StageKind::Chain
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let s: Summary = load_json(dir.join(SUMMARY_FILE)).map_err(stage_error)?;
        section.key_figures.extend([
            KeyFigure::text("data", &s.data),
            KeyFigure::number("fields", s.fields as f64),
            KeyFigure::number("catalogue entries", s.entries as f64),
            KeyFigure::number("min_score", s.min_score),
            KeyFigure::number("min_size (px)", s.min_size),
        ]);
        if let Some(c) = &s.classifier {
            section.key_figures.push(KeyFigure::text("classifier", c));
        }
        if !s.class_counts.is_empty() {
            section.tables.push(ReportTable {
                title: "Catalogue by predicted class".into(),
                header: vec!["class".into(), "entries".into()],
                rows: s
                    .class_counts
                    .iter()
                    .map(|(n, c)| vec![n.clone(), c.to_string()])
                    .collect(),
                note: None,
            });
        }
        // The first field's drawing.
        if let Some(first) = first_png(dir) {
            section.figures.push(first);
        }
        if let Some(r) = &s.recovery {
            let header = [
                "galaxies",
                "truth",
                "completeness",
                "purity",
                "accuracy of matched",
                "found and correctly classified",
            ]
            .map(String::from)
            .to_vec();
            let mut rows = vec![recovery_row("all", r, true)];
            rows.extend(
                s.by_size
                    .iter()
                    .map(|(l, r)| recovery_row(&format!("half-light radius {l}"), r, false)),
            );
            rows.extend(
                s.by_brightness
                    .iter()
                    .map(|(l, r)| recovery_row(&format!("peak brightness {l}"), r, false)),
            );
            section.tables.push(ReportTable {
                title: "Recovery of the synthetic galaxies".into(),
                header,
                rows,
                note: Some(format!(
                    "A detection matches a true galaxy at IoU ≥ {MATCH_IOU} (greedy by score). Completeness: matched / true galaxies; purity: matched / catalogue entries (stars and spurious detections lower it; `min_size` drops PSF-sized ones); accuracy: predicted class = true Galaxy10 class among matched galaxies. Bins are terciles of the true galaxies."
                )),
            });
        }
        Ok(true)
    }
}

/// The chain block's stage.
pub(super) fn compile(
    program: &Program,
    c: &check::Chain,
    label: Option<String>,
) -> Result<StageSpec, Box<check::Error>> {
    let check::Chain {
        name,
        detector,
        min_score,
        min_size,
        crop,
        classify,
        output,
        span,
    } = c;
    let detect = program
        .detect(detector)
        .ok_or_else(|| unsupported(*span, "a chain without its detector", "name a detect block"))?;
    if program
        .dataset(detect.data.dataset())
        .is_some_and(|d| matches!(d.source, check::Source::Fits { .. }))
    {
        return Err(unsupported(
            *span,
            "a chain over a `fits(...)` survey image",
            "a chain reads fields (images with boxes); a survey image's catalogue, with RA and Dec, is its detect stage's objects.csv",
        ));
    }
    let classify = match classify {
        None => None,
        Some(p) => Some(classifier(program, p).ok_or_else(|| {
            unsupported(
                *span,
                &format!("classifying with `{}`", p.name()),
                "the classifier must be trained on a dataset of this pipeline (a train block, a search's best trial, or an ensemble of them)",
            )
        })?),
    };
    let config = ChainConfig {
        detector: detector.clone(),
        data: DataSel::of(&detect.data),
        min_score: *min_score,
        min_size: *min_size,
        crop: *crop,
        output: output.clone(),
        batch: 64,
        engine_epoch: classify.as_ref().map(|_| crate::nn::ENGINE_EPOCH),
        classify,
    };
    let mut inputs: Vec<String> = vec![detector.clone()];
    inputs.extend(config.data.stages().iter().map(|s| s.to_string()));
    if let Some(c) = &config.classify {
        inputs.extend(c.members.iter().cloned());
        inputs.extend(c.ensemble.iter().cloned());
        inputs.push(c.dataset.clone());
    }
    let mut unique: Vec<&str> = Vec::new();
    for i in &inputs {
        if !unique.contains(&i.as_str()) {
            unique.push(i);
        }
    }
    Ok(spec(
        name.clone(),
        StageKind::Chain,
        &config,
        &unique,
        label,
    ))
}

/// The stages a classifier's models live in, and its training dataset.
fn classifier(program: &Program, p: &Predictor) -> Option<ClassifierConfig> {
    // The training dataset of one member: a train block, or a search's train block.
    let dataset_of = |member: &str| {
        program
            .train(member)
            .or_else(|| program.search(member).and_then(|s| program.train(&s.train)))
            .map(|t| t.data.dataset().to_string())
    };
    Some(match p {
        Predictor::Train { name } | Predictor::SearchBest { name } => ClassifierConfig {
            name: match p {
                Predictor::SearchBest { .. } => format!("{name}.best"),
                _ => name.clone(),
            },
            members: vec![name.clone()],
            ensemble: None,
            dataset: dataset_of(name)?,
        },
        Predictor::Ensemble { name } => {
            let e = program.ensemble(name)?;
            let dataset = dataset_of(e.members.first()?)?;
            if e.members
                .iter()
                .any(|m| dataset_of(m).as_deref() != Some(dataset.as_str()))
            {
                return None;
            }
            ClassifierConfig {
                name: name.clone(),
                members: e.members.clone(),
                ensemble: Some(name.clone()),
                dataset,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::fields::{FieldObject, SyntheticTruth};

    fn truth(xmin: f64, xmax: f64, galaxy10: u32) -> FieldObject {
        FieldObject {
            class: 0,
            xmin,
            ymin: 0.0,
            xmax,
            ymax: 10.0,
            truncated: false,
            difficult: false,
            truth: Some(SyntheticTruth {
                galaxy10,
                x: (xmin + xmax) / 2.0,
                y: 5.0,
                flux: 1.0,
                radius: xmax - xmin,
                peak_snr: 10.0,
            }),
        }
    }

    fn entry(xmin: f64, xmax: f64, score: f64, class: usize) -> Entry {
        Entry {
            field: "f".into(),
            image: 0,
            id: 0,
            det: FieldDetection {
                x: 0.0,
                y: 0.0,
                xmin,
                ymin: 0.0,
                xmax,
                ymax: 10.0,
                flux: 0.0,
                a: 0.0,
                b: 0.0,
                theta: 0.0,
                npix: 1,
                flags: 0,
                snr: 0.0,
                score,
                class: None,
                ra: None,
                dec: None,
            },
            class: Some(class),
            probabilities: Vec::new(),
        }
    }

    #[test]
    fn recovery_matches_the_best_scored_copy_once_and_counts_the_rest_against_purity() {
        let fields = FieldSet {
            images: ImageSet {
                height: 1,
                width: 1,
                channels: 3,
                images: vec![0; 3],
                labels: vec![0],
                class_names: vec!["galaxy".into()],
            },
            // Galaxy A at x 0–10 (Galaxy10 class 1), galaxy B at x 50–60 (class 2).
            objects: vec![vec![truth(0.0, 10.0, 1), truth(50.0, 60.0, 2)]],
            names: vec!["f".into()],
        };
        // Two copies of A (IoU 0.8 and 0.67), the better scored one of the wrong class; a
        // star far from both; B missed.
        let entries = [
            entry(0.0, 8.0, 0.9, 0),
            entry(1.0, 11.0, 0.8, 1),
            entry(100.0, 104.0, 0.99, 1),
        ];
        let matched = match_truth(&fields, &entries);
        assert_eq!(matched, vec![vec![Some(0), None]]);
        let names: Vec<String> = SDSS_CLASSES.iter().map(|s| s.to_string()).collect();
        let config = ChainConfig {
            detector: "d".into(),
            data: DataSel::Whole {
                dataset: "fields".into(),
            },
            min_score: 0.5,
            min_size: 0.0,
            crop: None,
            classify: None,
            output: "c.csv".into(),
            batch: 1,
            engine_epoch: None,
        };
        let s = summarise(&config, &fields, &entries, &names);
        let r = s.recovery.unwrap();
        assert_eq!(
            (r.truth, r.detections, r.matched, r.correct),
            (2, 3, 1, Some(0))
        );
        assert_eq!(ratio(r.matched, r.truth), "0.500");
        assert_eq!(ratio(r.matched, r.detections), "0.333");
        assert!((iou([0.0f64, 0.0, 8.0, 10.0], [0.0, 0.0, 10.0, 10.0]) - 0.8).abs() < 1e-12);
    }
}
