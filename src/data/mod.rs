//! Everything before a model sees a pixel: loading, synthesis, splits, balancing, augmentation.
//!
//! | module | owns |
//! | --- | --- |
//! | `error` | `DataError`, the one diagnostic catalogue of this layer |
//! | `synth` | the synthetic Galaxy10 (SDSS and DECaLS class lists) |
//! | `hdf5` | Galaxy10 HDF5 files: load, inspect, write |
//! | `fits` | FITS 2-D images and their TAN WCS (our own reader) |
//! | `fits_table` | FITS binary tables (catalogues) |
//! | `folder` | one folder per class of PNG/JPEG/TIFF images |
//! | `augment` | Keras ImageDataGenerator augmentation plus astronomy extras |
//! | `split` | stratified hold-out and k-fold, class drops and merges |
//! | `balance` | down/over-sampling as indices plus augment seeds, class weights |
//! | `source` | a dataset's source with the synthetic fallback and its notice |
//! | `artifact` | compact artifact files for cached stages |
//! | `voc` | Pascal VOC folders (labelImg): read with checks, write |
//! | `fields` | detection datasets: images with boxes (`FieldSet`) and their artifact |
//! | `synth_fields` | synthetic detection fields: Galaxy10 galaxies, stars, cosmic rays, boxes |
//! | `box_augment` | flips, turns, crop and scale that move and clip the boxes with the pixels |

pub mod artifact;
pub mod augment;
pub mod balance;
pub mod box_augment;
pub mod error;
pub mod fields;
pub mod fits;
pub mod fits_table;
pub mod folder;
pub mod hdf5;
pub mod npy;
pub mod split;
pub mod synth;
pub mod synth_fields;
pub mod voc;

pub use error::DataError;

/// A labelled image collection held as uint8 NHWC, the layout of Galaxy10's HDF5 files.
#[derive(Clone, Debug, PartialEq)]
pub struct ImageSet {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    /// `len * height * width * channels` bytes, NHWC.
    pub images: Vec<u8>,
    /// Class ids in `0..class_names.len()`.
    pub labels: Vec<u32>,
    pub class_names: Vec<String>,
}

impl ImageSet {
    /// Every image resized to `height` × `width` with bilinear filtering (Keras's
    /// `image_dataset_from_directory` default), channels kept. The same set when the size
    /// already matches.
    pub fn resized(self, height: usize, width: usize) -> Result<ImageSet, DataError> {
        use image::{imageops, ImageBuffer, Luma, LumaA, Pixel, Rgb, Rgba};
        use rayon::prelude::*;
        if (self.height, self.width) == (height, width) {
            return Ok(self);
        }
        fn one<P: Pixel<Subpixel = u8> + 'static>(
            raw: &[u8],
            (h, w): (usize, usize),
            (height, width): (usize, usize),
        ) -> Vec<u8> {
            // The slice has exactly h·w·channels bytes, as `chunks` cut it.
            let Some(img) = ImageBuffer::<P, &[u8]>::from_raw(w as u32, h as u32, raw) else {
                return Vec::new();
            };
            imageops::resize(
                &img,
                width as u32,
                height as u32,
                imageops::FilterType::Triangle,
            )
            .into_raw()
        }
        let from = (self.height, self.width);
        let to = (height, width);
        let old_len = self.height * self.width * self.channels;
        let new_len = height * width * self.channels;
        if old_len == 0 || new_len == 0 {
            return Err(DataError::invalid(
                "resize",
                "images and sizes must not be empty",
            ));
        }
        let mut images = vec![0u8; self.len() * new_len];
        let channels = self.channels;
        images
            .par_chunks_mut(new_len)
            .zip(self.images.par_chunks(old_len))
            .try_for_each(|(out, raw)| {
                let resized = match channels {
                    1 => one::<Luma<u8>>(raw, from, to),
                    2 => one::<LumaA<u8>>(raw, from, to),
                    3 => one::<Rgb<u8>>(raw, from, to),
                    4 => one::<Rgba<u8>>(raw, from, to),
                    _ => Vec::new(),
                };
                if resized.len() != out.len() {
                    return Err(DataError::invalid(
                        "resize",
                        format!("images of {channels} channels cannot be resized"),
                    ));
                }
                out.copy_from_slice(&resized);
                Ok(())
            })?;
        Ok(ImageSet {
            height,
            width,
            images,
            ..self
        })
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    pub fn image(&self, index: usize) -> &[u8] {
        let n = self.image_len();
        &self.images[index * n..(index + 1) * n]
    }

    /// The samples at `indices`, in that order (indices may repeat).
    pub fn subset(&self, indices: &[usize]) -> ImageSet {
        let mut images = Vec::with_capacity(indices.len() * self.image_len());
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        ImageSet {
            height: self.height,
            width: self.width,
            channels: self.channels,
            images,
            labels: indices.iter().map(|&i| self.labels[i]).collect(),
            class_names: self.class_names.clone(),
        }
    }

    /// Number of samples per class.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.class_names.len()];
        for &l in &self.labels {
            if let Some(c) = counts.get_mut(l as usize) {
                *c += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resized_images_keep_channels_and_flat_colours() {
        for channels in 1..=4 {
            let set = ImageSet {
                height: 256,
                width: 128,
                channels,
                images: vec![200; 2 * 256 * 128 * channels],
                labels: vec![0, 1],
                class_names: vec!["a".into(), "b".into()],
            };
            let small = set.resized(69, 40).unwrap();
            assert_eq!(
                (small.height, small.width, small.channels),
                (69, 40, channels)
            );
            assert_eq!(small.images.len(), 2 * 69 * 40 * channels);
            assert!(small.images.iter().all(|&v| v == 200));
        }
    }
}
