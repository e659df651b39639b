//! Image folders: one sub-folder per class (sorted by name, like Keras's
//! `flow_from_directory`), PNG/JPEG/TIFF files, each resized to the model input with bilinear
//! filtering and converted to RGB.

use rayon::prelude::*;
use std::path::{Path, PathBuf};

use super::{DataError, ImageSet};

const EXTENSIONS: [&str; 5] = ["png", "jpg", "jpeg", "tif", "tiff"];

fn read_dir_sorted(path: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| DataError::io(path, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Loads `root/<class>/<image>` into an `ImageSet` of `height`×`width`×3.
pub fn load_folder(
    root: impl AsRef<Path>,
    height: usize,
    width: usize,
) -> Result<ImageSet, DataError> {
    let root = root.as_ref();
    let mut class_names = Vec::new();
    let mut files: Vec<(PathBuf, u32)> = Vec::new();
    for dir in read_dir_sorted(root)?.into_iter().filter(|p| p.is_dir()) {
        let images: Vec<PathBuf> = read_dir_sorted(&dir)?
            .into_iter()
            .filter(|p| {
                p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
            })
            .collect();
        let label = class_names.len() as u32;
        class_names.push(
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        files.extend(images.into_iter().map(|p| (p, label)));
    }
    if files.is_empty() {
        return Err(DataError::EmptyFolder {
            path: root.to_path_buf(),
        });
    }
    let n = height * width * 3;
    let mut images = vec![0u8; files.len() * n];
    images
        .par_chunks_mut(n)
        .zip(files.par_iter())
        .try_for_each(|(out, (path, _))| -> Result<(), DataError> {
            let img = image::open(path)
                .map_err(|e| DataError::BadImage {
                    path: path.clone(),
                    detail: e.to_string(),
                })?
                .to_rgb8();
            let resized = if img.width() as usize == width && img.height() as usize == height {
                img
            } else {
                image::imageops::resize(
                    &img,
                    width as u32,
                    height as u32,
                    image::imageops::FilterType::Triangle,
                )
            };
            out.copy_from_slice(resized.as_raw());
            Ok(())
        })?;
    Ok(ImageSet {
        height,
        width,
        channels: 3,
        images,
        labels: files.iter().map(|(_, l)| *l).collect(),
        class_names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_classes_in_name_order_and_resizes() {
        let dir = tempfile::tempdir().unwrap();
        for (class, colour) in [("b_spiral", [0u8, 0, 255]), ("a_round", [255, 0, 0])] {
            std::fs::create_dir(dir.path().join(class)).unwrap();
            let img = image::RgbImage::from_pixel(10, 8, image::Rgb(colour));
            img.save(dir.path().join(class).join("x.png")).unwrap();
            img.save(dir.path().join(class).join("y.jpg")).unwrap();
            img.save(dir.path().join(class).join("z.tiff")).unwrap();
        }
        std::fs::write(dir.path().join("a_round").join("notes.txt"), "skip me").unwrap();
        let set = load_folder(dir.path(), 5, 5).unwrap();
        assert_eq!(set.class_names, vec!["a_round", "b_spiral"]);
        assert_eq!(set.labels, vec![0, 0, 0, 1, 1, 1]);
        assert_eq!((set.height, set.width), (5, 5));
        assert_eq!(&set.image(0)[..3], &[255, 0, 0]);
        assert!(set.image(4)[2] > 240);
    }

    #[test]
    fn empty_and_corrupt_folders_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            load_folder(dir.path(), 4, 4),
            Err(DataError::EmptyFolder { .. })
        ));
        std::fs::create_dir(dir.path().join("c")).unwrap();
        std::fs::write(dir.path().join("c").join("bad.png"), "not a png").unwrap();
        assert!(matches!(
            load_folder(dir.path(), 4, 4),
            Err(DataError::BadImage { .. })
        ));
        assert!(matches!(
            load_folder(dir.path().join("missing"), 4, 4),
            Err(DataError::MissingFile { .. })
        ));
    }
}
