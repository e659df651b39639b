//! The `detect` stage: runs a detector over a dataset of fields (images with boxes) and, where
//! the images have annotations, scores it with the COCO box metrics and draws its
//! precision-recall curves.

use super::select::DataSel;
use super::split::read_split;
use super::{spec, stage_error, Stage, StageKind};
use crate::check::{self, Part};
use crate::data::artifact::{load_json, save_json};
use crate::data::fields::FieldSet;
use crate::detect::extract::{BackgroundParams, ExtractParams, Kernel};
use crate::detect::fields::{detect_pixels, FieldDetection, ImageDetections};
use crate::detect::nms::{decode_detections, DecodeConfig};
use crate::eval::detection::{
    ar1_ceiling, blended_objects, evaluate_boxes, field_truth, keep_group, BBox, BoxEvaluation,
    CocoParams, Detection,
};
use crate::plan::{StageId, StageSpec};
use crate::report::boxes::{boxes_png, LabelledBox};
use crate::report::model::{KeyFigure, ReportTable, StageFigure, StageReport};
use crate::run::{StageContext, StageError, StageExecutor};
use crate::train::detection::{predict_outputs, DetectorSet};
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

/// The detections of every image, for the chain (in the stage's private folder).
pub const DETECTIONS_FILE: &str = "detections.json";
const SUMMARY_FILE: &str = "summary.json";
/// Files for people: the eval command's CSV layout, the full object table, COCO's lines.
pub const DETECTIONS_CSV: &str = "detections.csv";
const OBJECTS_CSV: &str = "objects.csv";
const COCO_TXT: &str = "coco.txt";
const PR_PNG: &str = "pr_curves.png";
const FIELD_PNG: &str = "first_field.png";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum MethodConfig {
    Extract(check::ExtractSettings),
    /// A detector a train stage trained (its model file holds the anchors), read out with
    /// class-wise NMS at `iou`, keeping scores from `min_score`, at most `top_k` per image.
    Learned {
        train: String,
        iou: f64,
        min_score: f64,
        top_k: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectConfig {
    pub data: DataSel,
    pub method: MethodConfig,
}

/// What the detect stage found, as the chain reads it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectArtifact {
    /// The data as written in the pipeline (`fields.test`).
    pub data: String,
    pub class_names: Vec<String>,
    pub images: Vec<ImageDetections>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Summary {
    data: String,
    method: String,
    images: usize,
    detections: usize,
    truth_boxes: usize,
    /// COCO's twelve lines, when the images have annotations.
    coco: Vec<String>,
    /// The detector's line in the report's comparison, when the images have annotations.
    #[serde(default)]
    scores: Option<DetectorScores>,
}

/// One detector's line in the report's comparison of the pipeline's detectors.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorScores {
    /// `classical` or the trained model's name.
    pub detector: String,
    pub data: String,
    pub fields: usize,
    pub map50: Option<f64>,
    pub ar1: Option<f64>,
    pub ap: Option<f64>,
    /// A learned detector's size (none for the classical one).
    pub params: Option<usize>,
    pub mflops: Option<f64>,
    /// Fields per second from a field's pixels to its boxes (resizing, decoding and NMS
    /// included), one field at a time and 16 at a time. The classical detector takes one
    /// field at a time, so both are its one rate.
    pub rate1: f64,
    pub rate16: f64,
    /// The galaxies whose box overlaps no other box, and those whose box does.
    pub isolated: GroupScores,
    pub blended: GroupScores,
    /// The most AR@1 can be on these fields (`eval::detection::ar1_ceiling`).
    pub ar1_ceiling: Option<f64>,
}

/// A detector's scores on one group of the annotated objects, the others ignored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupScores {
    pub objects: usize,
    pub map50: Option<f64>,
    /// The share of the group found at IoU 0.5 (100 detections per field).
    pub recall50: Option<f64>,
}

pub struct DetectStage;

/// The fields a selection covers, with their indices in the dataset.
pub(super) fn select_fields(
    ctx: &StageContext,
    data: &DataSel,
) -> Result<(FieldSet, Vec<usize>), StageError> {
    let dir = ctx.input_dir(&StageId::from(data.dataset()))?;
    let set = FieldSet::load(dir).map_err(stage_error)?;
    let indices: Vec<usize> = match data {
        DataSel::Whole { .. } => (0..set.len()).collect(),
        DataSel::Part { split, part, .. } => {
            let s = read_split(ctx.input_dir(&StageId::from(split.as_str()))?)?;
            match part {
                Part::Train => s.train,
                Part::Val => s.val,
                Part::Test => s.test,
            }
        }
        DataSel::Balance { .. } => {
            return Err(StageError::failed("a detector cannot read a balance block"))
        }
    };
    if indices.is_empty() {
        return Err(StageError::failed(format!(
            "`{}` has no images: the dataset is too small for its split",
            data.describe()
        )));
    }
    Ok((set.subset(&indices), indices))
}

impl StageExecutor for DetectStage {
    fn execute(&self, ctx: &StageContext) -> Result<(), StageError> {
        let config: DetectConfig = super::config(ctx)?;
        let (set, indices, images, method, speed, class_names) = match &config.method {
            MethodConfig::Extract(settings) => {
                let (back, params) = extract_params(settings);
                let dataset_dir = ctx.input_dir(&StageId::from(config.data.dataset()))?;
                if dataset_dir.join(super::dataset::SKY_FILE).is_file() {
                    let sky = super::dataset::read_sky(dataset_dir)?;
                    return detect_sky(ctx, &config, &sky, &back, &params);
                }
                let (set, indices) = select_fields(ctx, &config.data)?;
                let started = Instant::now();
                let images = extract_fields(ctx, &set, &indices, &back, &params)?;
                let rate = set.len() as f64 / started.elapsed().as_secs_f64();
                let speed = Speed {
                    detector: "classical".into(),
                    params: None,
                    mflops: None,
                    rate1: rate,
                    rate16: rate,
                };
                let names = set.classes().to_vec();
                (set, indices, images, method_text(&params), speed, names)
            }
            MethodConfig::Learned {
                train,
                iou,
                min_score,
                top_k,
            } => {
                let (set, indices) = select_fields(ctx, &config.data)?;
                let cfg = DecodeConfig {
                    score_threshold: *min_score as f32,
                    iou: *iou as f32,
                    top_k: *top_k,
                    pre_nms_top_k: 1000,
                };
                let (images, speed, classes) = learned_fields(ctx, train, &set, &indices, &cfg)?;
                // The data's classes, then any the head scores beyond them.
                let mut names = set.classes().to_vec();
                names.extend((names.len()..classes).map(|k| format!("class {k}")));
                let method = format!(
                    "{train}(iou: {iou}, min_score: {min_score}, top_k: {top_k}): {}, {} parameters, {:.1} MFLOPs per image",
                    speed.detector,
                    speed.params.unwrap_or(0),
                    speed.mflops.unwrap_or(0.0)
                );
                (set, indices, images, method, speed, names)
            }
        };
        let _ = indices;
        let (h, w) = (set.images.height, set.images.width);
        let artifact = DetectArtifact {
            data: config.data.describe(),
            class_names,
            images,
        };
        write_tables(ctx, &artifact)?;
        let mut summary = Summary {
            data: artifact.data.clone(),
            method,
            images: set.len(),
            detections: artifact.images.iter().map(|d| d.objects.len()).sum(),
            truth_boxes: set.objects.iter().map(Vec::len).sum(),
            coco: Vec::new(),
            scores: None,
        };
        if summary.truth_boxes > 0 {
            let (eval, names) = coco(&set, &artifact, None)?;
            summary.coco = eval.summary(None).lines(&eval.params);
            let scores = detector_scores(&set, &artifact, &eval, speed)?;
            let at = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
            // One line per detector in the run's output; the report stage prints them side by
            // side.
            ctx.notice(format!(
                "{}: mAP@0.5 {}, AR@1 {}, AP@[.5:.95] {} on {} fields, {:.1} fields/s",
                summary.method,
                at(scores.map50),
                at(scores.ar1),
                at(scores.ap),
                set.len(),
                scores.rate16
            ));
            summary.scores = Some(scores);
            crate::train::write_atomic(
                &ctx.public_dir().join(COCO_TXT),
                (summary.coco.join("\n") + "\n").as_bytes(),
            )
            .map_err(stage_error)?;
            let png = crate::report::pr_curves::pr_curves(
                &eval,
                &names,
                0.5,
                &format!(
                    "{} on {}: precision-recall at IoU 0.5",
                    ctx.spec().id,
                    artifact.data
                ),
            )
            .map_err(stage_error)?;
            crate::train::write_atomic(&ctx.public_dir().join(PR_PNG), &png)
                .map_err(stage_error)?;
        }
        if !set.is_empty() {
            // The first field: annotated boxes and what the detector found.
            let mut boxes: Vec<LabelledBox> = set.objects[0]
                .iter()
                .map(|o| (o.xmin, o.ymin, o.xmax, o.ymax, "truth".to_string()))
                .collect();
            boxes.extend(
                artifact.images[0]
                    .objects
                    .iter()
                    .map(|o| (o.xmin, o.ymin, o.xmax, o.ymax, String::new())),
            );
            let png = boxes_png(set.image(0), h, w, &boxes).map_err(stage_error)?;
            crate::train::write_atomic(&ctx.public_dir().join(FIELD_PNG), &png)
                .map_err(stage_error)?;
        }
        save_json(&artifact, ctx.out_dir().join(DETECTIONS_FILE)).map_err(stage_error)?;
        save_json(&summary, ctx.out_dir().join(SUMMARY_FILE)).map_err(stage_error)
    }
}

/// The classical detector on every field.
fn extract_fields(
    ctx: &StageContext,
    set: &FieldSet,
    indices: &[usize],
    back: &BackgroundParams,
    params: &ExtractParams,
) -> Result<Vec<ImageDetections>, StageError> {
    let (h, w, c) = (set.images.height, set.images.width, set.images.channels);
    let mut images = Vec::with_capacity(set.len());
    ctx.progress().set_length(set.len() as u64);
    for (i, &index) in indices.iter().enumerate() {
        ctx.check_cancelled()?;
        let (background, rms, objects) =
            detect_pixels(set.image(i), h, w, c, back, params).map_err(stage_error)?;
        images.push(ImageDetections {
            index,
            name: set.names[i].clone(),
            background: Some(background),
            background_rms: Some(rms),
            objects,
        });
        ctx.progress().set_position(i as u64 + 1);
    }
    Ok(images)
}

/// What the comparison says of a detector besides its scores.
struct Speed {
    detector: String,
    params: Option<usize>,
    mflops: Option<f64>,
    rate1: f64,
    rate16: f64,
}

/// Fields read out one at a time for the batch-1 rate (the first ones of the set).
const RATE_FIELDS: usize = 32;

/// A trained detector on every field, 16 fields at a time, then on the first fields one at
/// a time for the batch-1 rate.
fn learned_fields(
    ctx: &StageContext,
    train: &str,
    set: &FieldSet,
    indices: &[usize],
    cfg: &DecodeConfig,
) -> Result<(Vec<ImageDetections>, Speed, usize), StageError> {
    let (mut network, detector) =
        super::train::load_detector(ctx.input_dir(&StageId::from(train))?)?;
    let started = Instant::now();
    let images = read_out(ctx, &mut network, &detector, set, indices, cfg, 16)?;
    let rate16 = set.len() as f64 / started.elapsed().as_secs_f64();
    let first: Vec<usize> = (0..set.len().min(RATE_FIELDS)).collect();
    let started = Instant::now();
    read_out(
        ctx,
        &mut network,
        &detector,
        &set.subset(&first),
        &indices[..first.len()],
        cfg,
        1,
    )?;
    let rate1 = first.len() as f64 / started.elapsed().as_secs_f64();
    let ir = network.ir();
    let speed = Speed {
        detector: ir.name.clone(),
        params: Some(ir.total_params()),
        mflops: Some(ir.total_flops() as f64 / 1e6),
        rate1,
        rate16,
    };
    Ok((images, speed, detector.classes))
}

/// The detector on some fields, `batch` at a time: the fields resized to its input, its
/// outputs decoded and suppressed class by class, the boxes scaled back to the fields'
/// pixels. A learned box has no isophote: its `a` and `b` are half its longer and shorter
/// sides, its flux and signal-to-noise 0, its pixel count its area.
fn read_out(
    ctx: &StageContext,
    network: &mut crate::nn::network::Network,
    detector: &crate::train::detection::DetectorConfig,
    set: &FieldSet,
    indices: &[usize],
    cfg: &DecodeConfig,
    batch: usize,
) -> Result<Vec<ImageDetections>, StageError> {
    let input = match network.ir().input.as_slice() {
        &[h, w, _] => [h, w],
        _ => return Err(StageError::failed("a detector's input is an image")),
    };
    let resized = DetectorSet::new(set, input).map_err(stage_error)?;
    let anchors = detector.anchors(input);
    let mut images = Vec::with_capacity(set.len());
    ctx.progress().set_length(set.len() as u64);
    for start in (0..set.len()).step_by(batch) {
        ctx.check_cancelled()?;
        let n = batch.min(set.len() - start);
        let part = resized
            .images
            .subset(&(start..start + n).collect::<Vec<_>>());
        let outputs = predict_outputs(network, &part, n).map_err(stage_error)?;
        for (k, (logits, deltas)) in outputs.iter().enumerate() {
            let i = start + k;
            let found = decode_detections(&anchors, logits, deltas, detector.classes, input, cfg);
            let objects = found
                .iter()
                .map(|d| {
                    let [x0, y0, x1, y1] = d.bbox.map(f64::from);
                    let (xmin, xmax) = (x0 / resized.scale[0], x1 / resized.scale[0]);
                    let (ymin, ymax) = (y0 / resized.scale[1], y1 / resized.scale[1]);
                    let (bw, bh) = (xmax - xmin, ymax - ymin);
                    FieldDetection {
                        x: (xmin + xmax) / 2.0 - 0.5,
                        y: (ymin + ymax) / 2.0 - 0.5,
                        xmin,
                        ymin,
                        xmax,
                        ymax,
                        flux: 0.0,
                        a: bw.max(bh) / 2.0,
                        b: bw.min(bh) / 2.0,
                        theta: if bw >= bh {
                            0.0
                        } else {
                            std::f64::consts::FRAC_PI_2
                        },
                        npix: (bw * bh).round().max(0.0) as usize,
                        flags: 0,
                        snr: 0.0,
                        score: d.score as f64,
                        class: Some(d.class),
                        ra: None,
                        dec: None,
                    }
                })
                .collect();
            images.push(ImageDetections {
                index: indices[i],
                name: set.names[i].clone(),
                background: None,
                background_rms: None,
                objects,
            });
        }
        ctx.progress().set_position((start + n) as u64);
    }
    Ok(images)
}

/// The extractor's settings from the block's.
fn extract_params(x: &check::ExtractSettings) -> (BackgroundParams, ExtractParams) {
    let back = BackgroundParams {
        bw: x.mesh,
        bh: x.mesh,
        fw: x.smooth,
        fh: x.smooth,
        ..BackgroundParams::default()
    };
    let params = ExtractParams {
        thresh: x.thresh as f32,
        minarea: x.minarea,
        kernel: x.filter.then(Kernel::sep_default),
        deblend_nthresh: x.deblend,
        deblend_cont: x.contrast,
        clean: x.clean,
        ..ExtractParams::default()
    };
    (back, params)
}

/// Tiles for survey images: the extractor reads a band of rows at a time (docs/decisions.md,
/// "Detection sources and big images in tiles").
const SKY_TILE: usize = 1024;
const SKY_OVERLAP: usize = 128;

/// A `fits(...)` dataset: one survey image, extracted in tiles, with RA and Dec when its header
/// has a celestial WCS. There are no annotations, so no metrics.
fn detect_sky(
    ctx: &StageContext,
    config: &DetectConfig,
    sky: &super::dataset::SkyImage,
    back: &BackgroundParams,
    params: &ExtractParams,
) -> Result<(), StageError> {
    let tiling = crate::detect::tile::TileParams {
        tile: SKY_TILE,
        overlap: SKY_OVERLAP,
        min_ios: 0.5,
    };
    let found = crate::detect::tile::detect_tiled_fits(
        &ctx.resolve(&sky.path),
        Some(sky.hdu),
        back,
        params,
        &tiling,
    )
    .map_err(stage_error)?;
    let objects = found
        .objects
        .iter()
        .map(|o| {
            // Each tile has its own RMS; an object's threshold is `thresh` times its tile's.
            let rms = o.thresh as f64 / params.thresh as f64;
            let mut d = crate::detect::fields::field_detection(o, rms);
            if let Some(wcs) = &found.wcs {
                let (ra, dec) = wcs.pixel_to_world(o.x, o.y);
                d.ra = Some(ra);
                d.dec = Some(dec);
            }
            d
        })
        .collect();
    let name = sky
        .path
        .file_stem()
        .map_or("sky".into(), |s| s.to_string_lossy().into_owned());
    let artifact = DetectArtifact {
        data: config.data.describe(),
        class_names: vec!["object".into()],
        images: vec![ImageDetections {
            index: 0,
            name,
            background: None,
            background_rms: None,
            objects,
        }],
    };
    write_tables(ctx, &artifact)?;
    let summary = Summary {
        data: artifact.data.clone(),
        method: format!("{} in {SKY_TILE} px tiles", method_text(params)),
        images: 1,
        detections: artifact.images[0].objects.len(),
        truth_boxes: 0,
        coco: Vec::new(),
        scores: None,
    };
    save_json(&artifact, ctx.out_dir().join(DETECTIONS_FILE)).map_err(stage_error)?;
    save_json(&summary, ctx.out_dir().join(SUMMARY_FILE)).map_err(stage_error)
}

fn method_text(p: &ExtractParams) -> String {
    format!(
        "extract(thresh: {}, minarea: {}, deblend: {}, contrast: {})",
        p.thresh, p.minarea, p.deblend_nthresh, p.deblend_cont
    )
}

/// COCO's evaluation of the detections against the annotations. The extractor has no classes:
/// with one class in the data its detections are of that class; with several, truth and
/// detections are pooled into one class `object`.
/// With `keep`, only that group of the annotated objects (in `field_truth`'s order) counts;
/// the others are ignored.
fn coco(
    set: &FieldSet,
    found: &DetectArtifact,
    keep: Option<&[bool]>,
) -> Result<(BoxEvaluation, Vec<String>), StageError> {
    let (pooled, names) = scored_classes(set, found);
    let mut truth = field_truth(&set.objects, pooled);
    if let Some(keep) = keep {
        truth = keep_group(&truth, keep);
    }
    let detections: Vec<Detection> = found
        .images
        .iter()
        .enumerate()
        .flat_map(|(image, d)| {
            d.objects.iter().map(move |o| Detection {
                image,
                class: if pooled { 0 } else { o.class.unwrap_or(0) },
                score: o.score,
                bbox: BBox {
                    xmin: o.xmin,
                    ymin: o.ymin,
                    xmax: o.xmax,
                    ymax: o.ymax,
                },
            })
        })
        .collect();
    let eval = evaluate_boxes(
        set.len(),
        names.len(),
        &truth,
        &detections,
        &CocoParams::default(),
    )
    .map_err(stage_error)?;
    Ok((eval, names))
}

/// Whether the detections are scored pooled into one class `object`, and the class names
/// they are scored under.
fn scored_classes(set: &FieldSet, found: &DetectArtifact) -> (bool, Vec<String>) {
    let named = named(found);
    if set.classes().len() != 1 && !named {
        (true, vec!["object".to_string()])
    } else if named {
        (false, found.class_names.clone())
    } else {
        (false, set.classes().to_vec())
    }
}

/// The comparison's line: COCO's headline figures, then the same detections scored on the
/// isolated and on the blended galaxies (`eval::detection::blended_objects`).
fn detector_scores(
    set: &FieldSet,
    found: &DetectArtifact,
    eval: &BoxEvaluation,
    speed: Speed,
) -> Result<DetectorScores, StageError> {
    let blended: Vec<bool> = blended_objects(&set.objects).concat();
    let group = |in_group: bool| -> Result<GroupScores, StageError> {
        let keep: Vec<bool> = blended.iter().map(|&b| b == in_group).collect();
        let (eval, _) = coco(set, found, Some(&keep))?;
        Ok(GroupScores {
            objects: keep.iter().filter(|&&k| k).count(),
            map50: eval.average_precision(None, Some(0.5), "all", 100),
            recall50: eval.average_recall(None, Some(0.5), "all", 100),
        })
    };
    Ok(DetectorScores {
        detector: speed.detector,
        data: found.data.clone(),
        fields: set.len(),
        map50: eval.average_precision(None, Some(0.5), "all", 100),
        ar1: eval.average_recall(None, None, "all", 1),
        ap: eval.average_precision(None, None, "all", 100),
        params: speed.params,
        mflops: speed.mflops,
        rate1: speed.rate1,
        rate16: speed.rate16,
        isolated: group(false)?,
        blended: group(true)?,
        ar1_ceiling: ar1_ceiling(
            &field_truth(&set.objects, scored_classes(set, found).0),
            set.len(),
        ),
    })
}

/// The pipeline's detectors side by side, as the report's table.
pub(super) fn comparison_table(rows: &[(String, DetectorScores)]) -> ReportTable {
    let at = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.3}"));
    let body = rows
        .iter()
        .map(|(name, s)| {
            vec![
                name.clone(),
                s.detector.clone(),
                at(s.map50),
                at(s.ar1),
                at(s.ap),
                s.params.map_or("-".into(), |p| p.to_string()),
                s.mflops.map_or("-".into(), |f| format!("{f:.1}")),
                format!("{:.1}", s.rate1),
                format!("{:.1}", s.rate16),
                at(s.isolated.map50),
                at(s.isolated.recall50),
                at(s.blended.map50),
                at(s.blended.recall50),
            ]
        })
        .collect();
    let mut note = String::from(
        "Isolated: a galaxy whose box overlaps no other box; blended: one whose box does. Each group is scored with the other's boxes ignored as COCO ignores a crowd. Fields/s: from a field's pixels to its boxes (resizing, decoding and NMS included), one field (b1) or 16 (b16) at a time; the classical detector works a field at a time, so both are its one rate.",
    );
    let mut seen = Vec::new();
    for (_, s) in rows {
        if seen.contains(&&s.data) {
            continue;
        }
        seen.push(&s.data);
        let _ = write!(
            note,
            " {}: {} fields, {} isolated and {} blended galaxies",
            s.data, s.fields, s.isolated.objects, s.blended.objects
        );
        if let Some(ceiling) = s.ar1_ceiling {
            let _ = write!(
                note,
                "; AR@1 can be at most {ceiling:.3} there (one detection per field)"
            );
        }
        note.push('.');
    }
    ReportTable {
        title: "detectors compared (COCO box metrics)".into(),
        header: [
            "detect",
            "detector",
            "mAP@0.5",
            "AR@1",
            "AP@[.5:.95]",
            "params",
            "MFLOPs",
            "fields/s b1",
            "fields/s b16",
            "isolated mAP@0.5",
            "isolated recall",
            "blended mAP@0.5",
            "blended recall",
        ]
        .map(String::from)
        .to_vec(),
        rows: body,
        note: Some(note),
    }
}

/// A detect stage's line in the comparison, if it scored annotated fields.
pub(super) fn read_scores(dir: &Path) -> Option<DetectorScores> {
    load_json::<Summary>(dir.join(SUMMARY_FILE)).ok()?.scores
}

/// A learned detector names classes, so it is scored class by class; the extractor names
/// none, so with several classes in the data it is scored on all of them pooled.
fn named(found: &DetectArtifact) -> bool {
    found
        .images
        .iter()
        .flat_map(|d| &d.objects)
        .all(|o| o.class.is_some())
}

/// `detections.csv` (what `gpl eval detections` reads) and `objects.csv` (every measurement).
fn write_tables(ctx: &StageContext, found: &DetectArtifact) -> Result<(), StageError> {
    // The extractor names no class: the data's one class, or `object`.
    let unnamed = found
        .class_names
        .first()
        .filter(|_| found.class_names.len() == 1)
        .cloned()
        .unwrap_or_else(|| "object".into());
    let class_of = |o: &FieldDetection| {
        o.class
            .and_then(|k| found.class_names.get(k))
            .unwrap_or(&unnamed)
            .clone()
    };
    let mut dets = String::from("image,class,score,xmin,ymin,xmax,ymax\n");
    let sky = found
        .images
        .iter()
        .any(|d| d.objects.iter().any(|o| o.ra.is_some()));
    let mut objects = String::from("image,id,x,y,");
    if sky {
        objects.push_str("ra,dec,");
    }
    let classes = found
        .images
        .iter()
        .any(|d| d.objects.iter().any(|o| o.class.is_some()));
    objects.push_str("xmin,ymin,xmax,ymax,flux,a,b,theta,npix,flags,snr,score");
    objects.push_str(if classes { ",class\n" } else { "\n" });
    for d in &found.images {
        for (id, o) in d.objects.iter().enumerate() {
            let position = match (sky, o.ra, o.dec) {
                (true, Some(ra), Some(dec)) => format!("{:.4},{:.4},{ra:.7},{dec:.7}", o.x, o.y),
                (true, _, _) => format!("{:.4},{:.4},,", o.x, o.y),
                _ => format!("{:.4},{:.4}", o.x, o.y),
            };
            let _ = writeln!(
                dets,
                "{},{},{:.6},{},{},{},{}",
                d.name,
                class_of(o),
                o.score,
                o.xmin,
                o.ymin,
                o.xmax,
                o.ymax
            );
            let _ = writeln!(
                objects,
                "{},{},{position},{},{},{},{},{:.3},{:.4},{:.4},{:.5},{},{},{:.3},{:.6}",
                d.name,
                id + 1,
                o.xmin,
                o.ymin,
                o.xmax,
                o.ymax,
                o.flux,
                o.a,
                o.b,
                o.theta,
                o.npix,
                o.flags,
                o.snr,
                o.score
            );
            if classes {
                objects.pop();
                let _ = writeln!(objects, ",{}", class_of(o));
            }
        }
    }
    let public = ctx.public_dir();
    crate::train::write_atomic(&public.join(DETECTIONS_CSV), dets.as_bytes())
        .map_err(stage_error)?;
    crate::train::write_atomic(&public.join(OBJECTS_CSV), objects.as_bytes()).map_err(stage_error)
}

pub fn read_detections(dir: &Path) -> Result<DetectArtifact, StageError> {
    load_json(dir.join(DETECTIONS_FILE)).map_err(stage_error)
}

impl Stage for DetectStage {
    fn kind(&self) -> StageKind {
        StageKind::Detect
    }

    fn report(&self, dir: &Path, section: &mut StageReport) -> Result<bool, StageError> {
        let s: Summary = load_json(dir.join(SUMMARY_FILE)).map_err(stage_error)?;
        section.key_figures.extend([
            KeyFigure::text("data", &s.data),
            KeyFigure::text("method", &s.method),
            KeyFigure::number("images", s.images as f64),
            KeyFigure::number("detections", s.detections as f64),
            KeyFigure::number("annotated boxes", s.truth_boxes as f64),
        ]);
        if let Ok(png) = std::fs::read(dir.join(super::PUBLIC).join(FIELD_PNG)) {
            section.figures.push(StageFigure {
                title: "the first field: annotated boxes (truth) and detections (unlabelled)"
                    .into(),
                file: FIELD_PNG.into(),
                png,
            });
        }
        if !s.coco.is_empty() {
            section.tables.push(ReportTable {
                title: "COCO box metrics".into(),
                header: vec!["metric".into(), "value".into()],
                rows: s
                    .coco
                    .iter()
                    .map(|line| {
                        let (label, value) = line.rsplit_once(" = ").unwrap_or((line, ""));
                        vec![label.trim().to_string(), value.to_string()]
                    })
                    .collect(),
                note: Some(
                    "As pycocotools computes them (101-point interpolation, difficult boxes ignored like crowd), except that every AP row uses the largest maxDets.".into(),
                ),
            });
            let png = std::fs::read(dir.join(super::PUBLIC).join(PR_PNG)).map_err(stage_error)?;
            section.figures.push(StageFigure {
                title: "precision-recall at IoU 0.5".into(),
                file: PR_PNG.into(),
                png,
            });
        }
        Ok(true)
    }
}

/// The detect block's stage.
pub(super) fn compile(d: &check::Detect, label: Option<String>) -> StageSpec {
    let check::Detect {
        name,
        data,
        method,
        span: _,
    } = d;
    let config = DetectConfig {
        data: DataSel::of(data),
        method: match method {
            check::DetectMethod::Extract(x) => MethodConfig::Extract(x.clone()),
            check::DetectMethod::Learned {
                train,
                iou,
                min_score,
                top_k,
            } => MethodConfig::Learned {
                train: train.clone(),
                iou: *iou,
                min_score: *min_score,
                top_k: *top_k,
            },
        },
    };
    let mut inputs = config.data.stages();
    if let MethodConfig::Learned { train, .. } = &config.method {
        inputs.push(train.as_str());
    }
    spec(name.clone(), StageKind::Detect, &config, &inputs, label)
}
