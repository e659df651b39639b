//! Everything before a model sees a pixel: loading, synthesis, splits, balancing, augmentation.

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
}
