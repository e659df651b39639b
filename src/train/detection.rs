//! Training a detector through the ordinary epoch loop: a field set's images resized to the
//! network's input with their boxes scaled alike, both augmented together (flips, quarter
//! turns, zoom, shift: `data::box_augment`), every anchor matched to the boxes (IoU ≥ 0.5
//! positive, < 0.4 background, each box keeping its best anchor), and after each epoch the
//! validation loss and the validation COCO AP at IoU 0.5 (`val_map50`, what callbacks monitor).

use crate::data::box_augment::{augment_field, BoxAugmentSpec};
use crate::data::fields::{FieldObject, FieldSet};
use crate::data::ImageSet;
use crate::detect::anchors::{detection_targets, AnchorLevel, Anchors, MatchConfig};
use crate::detect::nms::{decode_detections, DecodeConfig};
use crate::eval::detection::{evaluate_boxes, field_truth, BBox, CocoParams, Detection};
use crate::nn::learner::Learner;
use crate::nn::ops::loss::{box_smooth_l1, sigmoid_focal_loss};
use crate::train::error::{Result, TrainError};
use crate::train::fit::{DetectionLogs, DetectionLoss, DetectionTargets};
use serde::{Deserialize, Serialize};

/// Smooth-L1's β on the encoded offsets (Detectron's 1/9: quadratic within a ninth of a
/// variance-scaled unit, linear beyond).
pub const BOX_LOSS_BETA: f64 = 1.0 / 9.0;

/// Everything about a detector's training that is not its layers: the anchors, the loss, and
/// how detections are read out of its outputs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DetectorConfig {
    /// Each level's feature map `[height, width]`, finest first.
    pub levels: Vec<[usize; 2]>,
    /// Anchor side at aspect ratio 1 per level, input pixels.
    pub sizes: Vec<f64>,
    /// Width / height of each cell's anchors.
    pub ratios: Vec<f64>,
    /// Classes the class head scores.
    pub classes: usize,
    pub alpha: f64,
    pub gamma: f64,
    /// Smooth-L1's β on the encoded box offsets.
    pub beta: f64,
}

impl DetectorConfig {
    /// The anchors of an input of `[height, width]` pixels, in the heads' order.
    pub fn anchors(&self, input: [usize; 2]) -> Anchors {
        let levels: Vec<AnchorLevel> = self
            .levels
            .iter()
            .zip(&self.sizes)
            .map(|(&[height, width], &size)| AnchorLevel {
                height,
                width,
                size: size as f32,
                ratios: self.ratios.iter().map(|&r| r as f32).collect(),
            })
            .collect();
        Anchors::generate(input, &levels)
    }

    pub fn loss(&self) -> DetectionLoss {
        DetectionLoss {
            classes: self.classes,
            alpha: self.alpha as f32,
            gamma: self.gamma as f32,
            beta: self.beta as f32,
        }
    }
}

/// A field set at the network's input size: the pixels resized, every box scaled by the
/// same factors (`scale` = input pixels per field pixel, `[x, y]`).
pub struct DetectorSet {
    pub images: ImageSet,
    pub objects: Vec<Vec<FieldObject>>,
    pub scale: [f64; 2],
}

impl DetectorSet {
    /// `fields` resized to `input` (`[height, width]`) when its images differ.
    pub fn new(fields: &FieldSet, input: [usize; 2]) -> Result<DetectorSet> {
        let (h, w) = (fields.images.height, fields.images.width);
        let scale = [input[1] as f64 / w as f64, input[0] as f64 / h as f64];
        let images = if [h, w] == input {
            fields.images.clone()
        } else {
            fields
                .images
                .clone()
                .resized(input[0], input[1])
                .map_err(|e| TrainError::learner(miette::miette!("{e}")))?
        };
        let objects = fields
            .objects
            .iter()
            .map(|objects| {
                objects
                    .iter()
                    .map(|o| FieldObject {
                        xmin: o.xmin * scale[0],
                        xmax: o.xmax * scale[0],
                        ymin: o.ymin * scale[1],
                        ymax: o.ymax * scale[1],
                        ..o.clone()
                    })
                    .collect()
            })
            .collect();
        Ok(DetectorSet {
            images,
            objects,
            scale,
        })
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }
}

/// The boxes and classes of some objects, as the matcher takes them (difficult ones left out:
/// they are neither positives nor background).
fn truth_boxes(objects: &[FieldObject]) -> (Vec<[f32; 4]>, Vec<usize>) {
    objects
        .iter()
        .filter(|o| !o.difficult)
        .map(|o| {
            (
                [o.xmin as f32, o.ymin as f32, o.xmax as f32, o.ymax as f32],
                o.class,
            )
        })
        .unzip()
}

/// The detector's samples for the epoch loop.
pub struct FieldSamples<'a> {
    pub train: &'a DetectorSet,
    pub val: Option<&'a DetectorSet>,
    pub config: &'a DetectorConfig,
    pub anchors: Anchors,
    pub augment: Option<BoxAugmentSpec>,
    /// Images per validation forward pass.
    pub batch: usize,
}

impl<'a> FieldSamples<'a> {
    pub fn new(
        train: &'a DetectorSet,
        val: Option<&'a DetectorSet>,
        config: &'a DetectorConfig,
        augment: Option<BoxAugmentSpec>,
        batch: usize,
    ) -> FieldSamples<'a> {
        let input = [train.images.height, train.images.width];
        FieldSamples {
            train,
            val,
            config,
            anchors: config.anchors(input),
            augment,
            batch: batch.max(1),
        }
    }
}

impl DetectionTargets for FieldSamples<'_> {
    fn anchors(&self) -> usize {
        self.anchors.len()
    }

    fn loss(&self) -> DetectionLoss {
        self.config.loss()
    }

    fn sample(
        &self,
        index: usize,
        seed: u64,
        image: &mut [f32],
        labels: &mut [i32],
        boxes: &mut [f32],
    ) {
        let set = &self.train.images;
        let pixels = set.image(index);
        let shape = (set.height, set.width, set.channels);
        let objects = &self.train.objects[index];
        let (pixels, objects) = match &self.augment {
            Some(spec) => {
                let (p, o) = augment_field(spec, pixels, shape, objects, seed);
                (std::borrow::Cow::Owned(p), std::borrow::Cow::Owned(o))
            }
            None => (
                std::borrow::Cow::Borrowed(pixels),
                std::borrow::Cow::Borrowed(objects.as_slice()),
            ),
        };
        for (o, &p) in image.iter_mut().zip(pixels.iter()) {
            *o = p as f32 / 255.0;
        }
        let (gt, classes) = truth_boxes(&objects);
        detection_targets(
            &self.anchors,
            &gt,
            &classes,
            MatchConfig::default(),
            labels,
            boxes,
        );
    }

    fn has_validation(&self) -> bool {
        self.val.is_some_and(|v| !v.is_empty())
    }

    fn validate(&self, learner: &mut dyn Learner) -> Result<Option<DetectionLogs>> {
        let Some(val) = self.val.filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        let outputs = predict_outputs(learner, &val.images, self.batch)?;
        // The training loss on the whole validation set at once: the engine's focal and box
        // losses, divided by the set's positive anchors.
        let a = self.anchors.len();
        let loss = self.config.loss();
        let mut labels = vec![0i32; a * outputs.len()];
        let mut targets = vec![0f32; 4 * a * outputs.len()];
        let rows = labels.chunks_mut(a).zip(targets.chunks_mut(4 * a));
        for (i, (labels, targets)) in rows.enumerate() {
            let (gt, classes) = truth_boxes(&val.objects[i]);
            detection_targets(
                &self.anchors,
                &gt,
                &classes,
                MatchConfig::default(),
                labels,
                targets,
            );
        }
        let logits: Vec<f32> = outputs
            .iter()
            .flat_map(|(l, _)| l.iter().copied())
            .collect();
        let deltas: Vec<f32> = outputs
            .iter()
            .flat_map(|(_, d)| d.iter().copied())
            .collect();
        let weights = vec![1.0f32; outputs.len()];
        let val_loss = sigmoid_focal_loss(
            loss.classes,
            &logits,
            &labels,
            &weights,
            loss.alpha,
            loss.gamma,
            None,
        ) + box_smooth_l1(loss.beta, &deltas, &targets, &labels, &weights, None);
        let input = [val.images.height, val.images.width];
        let detections = decode_all(&self.anchors, &outputs, self.config.classes, input);
        let map50 = map50(val, &detections, self.config.classes)?;
        Ok(Some(DetectionLogs {
            val_loss,
            val_map50: map50,
        }))
    }
}

/// Every image's class logits and box offsets, in inference mode, `batch` images at a time.
pub fn predict_outputs(
    learner: &mut dyn Learner,
    images: &ImageSet,
    batch: usize,
) -> Result<Vec<(Vec<f32>, Vec<f32>)>> {
    let len = images.image_len();
    let mut out = Vec::with_capacity(images.len());
    let mut buffer = Vec::new();
    for start in (0..images.len()).step_by(batch.max(1)) {
        let n = batch.min(images.len() - start);
        buffer.clear();
        buffer.extend(
            images.images[start * len..(start + n) * len]
                .iter()
                .map(|&p| p as f32 / 255.0),
        );
        let outputs = learner.outputs(&buffer, n).map_err(TrainError::learner)?;
        let [classes, boxes] = outputs.as_slice() else {
            return Err(TrainError::learner(miette::miette!(
                "a detector has two outputs, this model {}",
                outputs.len()
            )));
        };
        let (cl, bl) = (classes.len() / n, boxes.len() / n);
        for k in 0..n {
            out.push((
                classes[k * cl..(k + 1) * cl].to_vec(),
                boxes[k * bl..(k + 1) * bl].to_vec(),
            ));
        }
    }
    Ok(out)
}

/// How the detections of a validation epoch are read out: every score down to 0.05, as
/// COCO evaluations of RetinaNet and SSD keep them, 100 per image.
pub fn decode_config() -> DecodeConfig {
    DecodeConfig {
        score_threshold: 0.05,
        iou: 0.5,
        top_k: 100,
        pre_nms_top_k: 1000,
    }
}

/// Each image's detections in input pixels.
pub fn decode_all(
    anchors: &Anchors,
    outputs: &[(Vec<f32>, Vec<f32>)],
    classes: usize,
    input: [usize; 2],
) -> Vec<Vec<crate::detect::nms::Detection>> {
    let cfg = decode_config();
    outputs
        .iter()
        .map(|(logits, deltas)| decode_detections(anchors, logits, deltas, classes, input, &cfg))
        .collect()
}

/// COCO AP at IoU 0.5 (all areas, 100 detections per image) of `detections` on `set`.
pub fn map50(
    set: &DetectorSet,
    detections: &[Vec<crate::detect::nms::Detection>],
    classes: usize,
) -> Result<f64> {
    let truth = field_truth(&set.objects, false);
    let dets: Vec<Detection> = detections
        .iter()
        .enumerate()
        .flat_map(|(image, ds)| {
            ds.iter().map(move |d| Detection {
                image,
                class: d.class,
                score: d.score as f64,
                bbox: BBox {
                    xmin: d.bbox[0] as f64,
                    ymin: d.bbox[1] as f64,
                    xmax: d.bbox[2] as f64,
                    ymax: d.bbox[3] as f64,
                },
            })
        })
        .collect();
    let params = CocoParams::default();
    let eval = evaluate_boxes(set.len(), classes, &truth, &dets, &params)
        .map_err(|e| TrainError::learner(miette::miette!("{e}")))?;
    // No ground truth at all: nothing to find, AP undefined; report 0 rather than NaN so
    // a monitor can still compare epochs.
    Ok(eval
        .average_precision(None, Some(0.5), "all", 100)
        .unwrap_or(0.0))
}

/// The box-safe part of an augmentation recipe (the checker refuses the rest for detectors):
/// flips, quarter turns, zoom and shift. Keras's zoom `z` samples pixels `z` apart, so a
/// zoom range `[lo, hi]` magnifies by `[1 / hi, 1 / lo]`.
pub fn box_augment(spec: &crate::data::augment::AugmentSpec) -> BoxAugmentSpec {
    let [lo, hi] = spec.zoom_range;
    BoxAugmentSpec {
        horizontal_flip: spec.horizontal_flip,
        vertical_flip: spec.vertical_flip,
        rot90: spec.rot90,
        scale: [1.0 / hi as f64, 1.0 / lo as f64],
        shift: spec.width_shift_range.max(spec.height_shift_range) as f64,
        ..BoxAugmentSpec::default()
    }
}
