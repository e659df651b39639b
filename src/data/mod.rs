//! Everything before a model sees a pixel: loading, synthesis, splits, balancing, augmentation.
//!
//! | module | owns |
//! | --- | --- |
//! | `error` | `DataError`, the one diagnostic catalogue of this layer |
//! | `synth` | the synthetic Galaxy10 (SDSS and DECaLS class lists) |
//! | `hdf5` | Galaxy10 HDF5 files: load, inspect, write |
//! | `folder` | one folder per class of PNG/JPEG/TIFF images |
//! | `augment` | Keras ImageDataGenerator augmentation plus astronomy extras |
//! | `split` | stratified hold-out and k-fold, class drops and merges |
//! | `balance` | down/over-sampling as indices plus augment seeds, class weights |
//! | `source` | a dataset's source with the synthetic fallback and its notice |
//! | `artifact` | compact artifact files for cached stages |

pub mod artifact;
pub mod augment;
pub mod balance;
pub mod error;
pub mod folder;
pub mod hdf5;
pub mod source;
pub mod split;
pub mod synth;

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
