//! Detection datasets: images with boxes. A `FieldSet` is what a dataset stage hands to the
//! detect and chain stages: the images (one size, uint8 NHWC, like every image set) and, per
//! image, the annotated objects. Synthetic fields (`synthetic(fields)`) and VOC folders
//! (`source voc`) both become one.
//!
//! On disk a field set is two files in the stage's folder: `images.gplimg` (the image-set
//! format; every label is 0, the objects carry the classes) and `objects.json`.

use serde::{Deserialize, Serialize};
use std::path::Path;

use super::artifact::{load_image_set, load_json, save_image_set, save_json};
use super::split::{holdout, HoldoutSpec, Split};
use super::voc::{write_annotation, VocAnnotation, VocObject};
use super::{DataError, ImageSet};

/// Where a field set's parts live inside a stage folder.
pub const IMAGES_FILE: &str = "images.gplimg";
pub const OBJECTS_FILE: &str = "objects.json";

/// One annotated object, in pixels (VOC convention: `xmin < xmax`, `ymin < ymax`, inside the
/// image).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldObject {
    /// The detection class, an index into `FieldSet::classes` (synthetic fields: "galaxy").
    pub class: usize,
    pub xmin: f64,
    pub ymin: f64,
    pub xmax: f64,
    pub ymax: f64,
    /// Cut by the image's edge.
    #[serde(default)]
    pub truncated: bool,
    /// VOC's `difficult`: ignored by the metrics, like COCO's crowd.
    #[serde(default)]
    pub difficult: bool,
    /// What a synthetic field knows and an annotation does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truth: Option<SyntheticTruth>,
}

/// The generator's knowledge of one synthetic galaxy: what completeness, purity and the
/// chain's classification accuracy are measured against, in bins of size and brightness.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SyntheticTruth {
    /// Galaxy10 class index (into `synth::SDSS_CLASSES`).
    pub galaxy10: u32,
    /// Light-weighted centre, pixels, in the boxes' frame (pixel i spans [i, i + 1)).
    pub x: f64,
    pub y: f64,
    /// Total noiseless flux in the r band, in sky-noise units (counts / sky sigma).
    pub flux: f64,
    /// Half-light radius, pixels.
    pub radius: f64,
    /// Peak surface brightness in sky sigmas (after the PSF).
    pub peak_snr: f64,
}

/// Images with their objects.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldSet {
    /// The pixels; every label is 0 (the image-set format wants one class per image), and
    /// `class_names` are the detection classes.
    pub images: ImageSet,
    /// Per image, its objects.
    pub objects: Vec<Vec<FieldObject>>,
    /// Per image, a name (a VOC file name, or `field_00012` for a synthetic one).
    pub names: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct ObjectsFile {
    names: Vec<String>,
    objects: Vec<Vec<FieldObject>>,
}

impl FieldSet {
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    pub fn classes(&self) -> &[String] {
        &self.images.class_names
    }

    /// Image `i`'s pixels, `height × width × channels` bytes.
    pub fn image(&self, i: usize) -> &[u8] {
        let n = self.images.height * self.images.width * self.images.channels;
        &self.images.images[i * n..(i + 1) * n]
    }

    /// The subset `indices`, in that order (a split's part).
    pub fn subset(&self, indices: &[usize]) -> FieldSet {
        let n = self.images.height * self.images.width * self.images.channels;
        let mut pixels = Vec::with_capacity(indices.len() * n);
        for &i in indices {
            pixels.extend_from_slice(self.image(i));
        }
        FieldSet {
            images: ImageSet {
                height: self.images.height,
                width: self.images.width,
                channels: self.images.channels,
                images: pixels,
                labels: indices.iter().map(|&i| self.images.labels[i]).collect(),
                class_names: self.images.class_names.clone(),
            },
            objects: indices.iter().map(|&i| self.objects[i].clone()).collect(),
            names: indices.iter().map(|&i| self.names[i].clone()).collect(),
        }
    }

    /// A train/val/test split over the images by the Galaxy10 split's algorithm
    /// (`split::holdout`), stratified when asked by the number of objects an image holds
    /// (images with 5 or more objects form one group), so empty, single and crowded fields
    /// are spread alike.
    pub fn holdout(&self, spec: &HoldoutSpec) -> Result<Split, DataError> {
        let groups: Vec<u32> = self.objects.iter().map(|o| o.len().min(5) as u32).collect();
        holdout(&groups, spec)
    }

    /// Writes the set as a Pascal VOC folder labelImg opens: per image `<name>.png` and
    /// `<name>.xml`, each atomically. Returns the XML files.
    pub fn write_voc(&self, dir: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
        use image::ImageEncoder;
        let (h, w, c) = (self.images.height, self.images.width, self.images.channels);
        let colour = match c {
            1 => image::ExtendedColorType::L8,
            3 => image::ExtendedColorType::Rgb8,
            _ => {
                return Err(DataError::invalid(
                    "VOC images",
                    format!("{c} channels; VOC folders hold grey or RGB images"),
                ))
            }
        };
        std::fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
        let mut written = Vec::with_capacity(self.len());
        for (i, name) in self.names.iter().enumerate() {
            let filename = format!("{name}.png");
            let mut png = Vec::new();
            image::codecs::png::PngEncoder::new(&mut png)
                .write_image(self.image(i), w as u32, h as u32, colour)
                .map_err(|e| DataError::invalid("PNG encoding", e.to_string()))?;
            let path = dir.join(&filename);
            crate::fsutil::write_atomic(&path, &png).map_err(|e| DataError::io(&path, e))?;
            let annotation = VocAnnotation {
                filename,
                width: w as u32,
                height: h as u32,
                depth: c as u32,
                objects: self.objects[i]
                    .iter()
                    .map(|o| VocObject {
                        name: self.classes().get(o.class).cloned().unwrap_or_default(),
                        pose: "Unspecified".into(),
                        truncated: o.truncated,
                        difficult: o.difficult,
                        xmin: o.xmin,
                        ymin: o.ymin,
                        xmax: o.xmax,
                        ymax: o.ymax,
                    })
                    .collect(),
            };
            written.push(write_annotation(dir, &annotation)?);
        }
        Ok(written)
    }

    /// Writes the two files into `dir`, each atomically.
    pub fn save(&self, dir: &Path) -> Result<(), DataError> {
        save_image_set(&self.images, dir.join(IMAGES_FILE))?;
        save_json(
            &ObjectsFile {
                names: self.names.clone(),
                objects: self.objects.clone(),
            },
            dir.join(OBJECTS_FILE),
        )
    }

    pub fn load(dir: &Path) -> Result<FieldSet, DataError> {
        let images = load_image_set(dir.join(IMAGES_FILE))?;
        let file: ObjectsFile = load_json(dir.join(OBJECTS_FILE))?;
        if file.objects.len() != images.len() || file.names.len() != images.len() {
            return Err(DataError::BadArtifact {
                path: dir.join(OBJECTS_FILE),
                detail: format!(
                    "{} object lists and {} names for {} images",
                    file.objects.len(),
                    file.names.len(),
                    images.len()
                ),
            });
        }
        Ok(FieldSet {
            images,
            objects: file.objects,
            names: file.names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> FieldSet {
        let object = |x: f64| FieldObject {
            class: 0,
            xmin: x,
            ymin: 1.0,
            xmax: x + 2.0,
            ymax: 3.0,
            truncated: false,
            difficult: false,
            truth: Some(SyntheticTruth {
                galaxy10: 4,
                x: x + 1.0,
                y: 2.0,
                flux: 100.0,
                radius: 1.5,
                peak_snr: 20.0,
            }),
        };
        FieldSet {
            images: ImageSet {
                height: 4,
                width: 4,
                channels: 3,
                images: (0..96).map(|v| v as u8).collect(),
                labels: vec![0, 0],
                class_names: vec!["galaxy".into()],
            },
            objects: vec![vec![object(0.0)], vec![object(1.0), object(0.5)]],
            names: vec!["a".into(), "b".into()],
        }
    }

    #[test]
    fn a_field_set_round_trips_and_subsets_keep_boxes_with_their_images() {
        let dir = tempfile::tempdir().unwrap();
        let set = tiny();
        set.save(dir.path()).unwrap();
        assert_eq!(FieldSet::load(dir.path()).unwrap(), set);
        let b = set.subset(&[1]);
        assert_eq!(b.image(0), set.image(1));
        assert_eq!(b.objects[0], set.objects[1]);
        assert_eq!(b.names, vec!["b".to_string()]);
    }

    #[test]
    fn holdout_splits_fields_like_images_stratified_by_object_count() {
        let one = tiny();
        // 40 images: 30 with one object, 10 with two.
        let order: Vec<usize> = (0..40).map(|i| usize::from(i % 4 == 0)).collect();
        let set = one.subset(&order);
        let spec = HoldoutSpec {
            train: 0.5,
            val: 0.25,
            test: 0.25,
            stratify: true,
            seed: 3,
        };
        let split = set.holdout(&spec).unwrap();
        assert_eq!(
            (split.train.len(), split.val.len(), split.test.len()),
            (20, 10, 10)
        );
        let pairs = |part: &[usize]| part.iter().filter(|&&i| set.objects[i].len() == 2).count();
        assert_eq!(
            (pairs(&split.train), pairs(&split.val), pairs(&split.test)),
            (5, 3, 2),
            "each part holds its share of the two-object fields (largest remainder)"
        );
        let labels: Vec<u32> = set.objects.iter().map(|o| o.len() as u32).collect();
        assert_eq!(split, holdout(&labels, &spec).unwrap());
    }
}
