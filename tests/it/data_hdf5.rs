//! The Galaxy10 HDF5 loader against files written by h5py (tests/fixtures/data/make_h5.py).

use gpl::data::hdf5::{inspect, load_galaxy10, read_decals_meta, write_galaxy10_h5, Layout};
use gpl::data::synth::{synthesize, SynthConfig};
use gpl::data::DataError;
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/data")
        .join(name)
}

fn expected() -> Value {
    let text =
        std::fs::read_to_string(fixture("expected_h5.json")).expect("fixture expected_h5.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn check_matches(name: &str) {
    let set =
        load_galaxy10(fixture(name), "images", "ans").unwrap_or_else(|e| panic!("{name}: {e}"));
    let exp = &expected()[name];
    let shape: Vec<usize> = serde_json::from_value(exp["shape"].clone()).unwrap();
    assert_eq!(
        vec![set.len(), set.height, set.width, set.channels],
        shape,
        "{name}"
    );
    let labels: Vec<u32> = serde_json::from_value(exp["labels"].clone()).unwrap();
    assert_eq!(set.labels, labels, "{name}");
    let sum: u64 = set.images.iter().map(|&v| v as u64).sum();
    assert_eq!(sum, exp["pixel_sum"].as_u64().unwrap(), "{name}");
    let first: Vec<u8> = serde_json::from_value(exp["first_pixels"].clone()).unwrap();
    let last: Vec<u8> = serde_json::from_value(exp["last_pixels"].clone()).unwrap();
    assert_eq!(&set.images[..16], first.as_slice(), "{name}");
    assert_eq!(
        &set.images[set.images.len() - 16..],
        last.as_slice(),
        "{name}"
    );
}

#[test]
fn reads_contiguous_and_gzip_chunked_sdss_files() {
    check_matches("sdss_contiguous.h5");
    check_matches("sdss_gzip.h5");
    let set = load_galaxy10(fixture("sdss_contiguous.h5"), "images", "ans").unwrap();
    assert_eq!(set.class_names[3], "Smooth, Cigar shaped");
}

#[test]
fn reads_decals_layout_and_metadata() {
    check_matches("decals_small.h5");
    let set = load_galaxy10(fixture("decals_small.h5"), "images", "ans").unwrap();
    assert_eq!(set.class_names[5], "Barred Spiral");
    let meta = read_decals_meta(fixture("decals_small.h5")).unwrap();
    assert_eq!(meta.ra, vec![150.1, 151.2, 152.3, 153.4]);
    assert_eq!(meta.dec[3], 4.75);
    assert!((meta.redshift[1] - 0.02).abs() < 1e-7);
    assert_eq!(meta.pxscale.len(), 4);
}

#[test]
fn converts_float_images_in_both_ranges() {
    check_matches("float01.h5");
    check_matches("float255.h5");
}

#[test]
fn inspect_reports_layout_datasets_and_class_counts() {
    let s = inspect(fixture("sdss_gzip.h5")).unwrap();
    assert_eq!(s.layout, Layout::Sdss);
    let images = s.datasets.iter().find(|d| d.name == "images").unwrap();
    assert_eq!(images.shape, vec![6, 69, 69, 3]);
    assert_eq!(images.dtype, "uint8");
    assert!(images.compressed);
    assert_eq!(images.chunks, Some(vec![2, 69, 69, 3]));
    let ans = s.datasets.iter().find(|d| d.name == "ans").unwrap();
    assert_eq!(ans.dtype, "int64");
    assert_eq!(
        s.class_counts,
        Some(vec![(0, 1), (1, 2), (7, 1), (8, 1), (9, 1)])
    );
    assert_eq!(
        inspect(fixture("decals_small.h5")).unwrap().layout,
        Layout::Decals
    );
}

fn err(name: &str, images: &str, labels: &str) -> DataError {
    match load_galaxy10(fixture(name), images, labels) {
        Ok(_) => panic!("{name} loaded but should fail"),
        Err(e) => {
            let text = e.to_string();
            assert!(text.contains(name), "error does not name the file: {text}");
            e
        }
    }
}

fn code(e: &DataError) -> String {
    use miette::Diagnostic;
    e.code().map(|c| c.to_string()).unwrap_or_default()
}

#[test]
fn every_bad_file_gets_its_own_error() {
    let e = err("nonexistent.h5", "images", "ans");
    assert!(matches!(e, DataError::MissingFile { .. }), "{e:?}");
    assert_eq!(code(&e), "gpl::data::missing_file");

    let e = err("not_hdf5.h5", "images", "ans");
    assert!(matches!(e, DataError::NotHdf5 { .. }), "{e:?}");

    let e = err("truncated.h5", "images", "ans");
    assert!(matches!(e, DataError::Truncated { .. }), "{e:?}");
    assert_eq!(code(&e), "gpl::data::truncated");

    let e = err("sdss_contiguous.h5", "images", "labels");
    match &e {
        DataError::MissingDataset {
            dataset, available, ..
        } => {
            assert_eq!(dataset, "labels");
            assert!(available.contains("ans"));
        }
        other => panic!("{other:?}"),
    }
    assert!(e.to_string().contains("`labels`"));

    let e = err("wrong_rank.h5", "images", "ans");
    assert!(
        matches!(&e, DataError::WrongRank { dataset, found, .. } if dataset == "images" && found == &vec![4, 48]),
        "{e:?}"
    );

    let e = err("wrong_dtype.h5", "images", "ans");
    assert!(
        matches!(&e, DataError::WrongDtype { dataset, found, .. } if dataset == "ans" && found == "float32"),
        "{e:?}"
    );

    let e = err("bad_pixels.h5", "images", "ans");
    let exp = expected();
    match &e {
        DataError::PixelOutOfRange {
            index,
            value,
            dataset,
            ..
        } => {
            assert_eq!(
                *index as u64,
                exp["bad_pixels.h5"]["index"].as_u64().unwrap()
            );
            assert_eq!(*value, 300.0);
            assert_eq!(dataset, "images");
        }
        other => panic!("{other:?}"),
    }

    let e = err("bad_label.h5", "images", "ans");
    assert!(
        matches!(
            e,
            DataError::LabelOutOfRange {
                index: 1,
                value: 10,
                classes: 10,
                ..
            }
        ),
        "{e:?}"
    );
    let e = err("negative_label.h5", "images", "ans");
    assert!(
        matches!(
            e,
            DataError::LabelOutOfRange {
                index: 2,
                value: -1,
                ..
            }
        ),
        "{e:?}"
    );

    let e = err("count_mismatch.h5", "images", "ans");
    assert!(
        matches!(
            e,
            DataError::CountMismatch {
                n_images: 5,
                n_labels: 4,
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(code(&e), "gpl::data::count_mismatch");
}

#[test]
fn synthetic_file_round_trips_through_the_real_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synth.h5");
    let set = synthesize(&SynthConfig::galaxy10(12, 5)).unwrap();
    write_galaxy10_h5(&set, &path).unwrap();
    let back = load_galaxy10(&path, "images", "ans").unwrap();
    assert_eq!(back, set);
    let s = inspect(&path).unwrap();
    assert_eq!(s.layout, Layout::Sdss);
    assert_eq!(
        s.datasets
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        vec!["ans", "images"]
    );
    // No temp file left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
