//! `source voc(...)` and `source fits(...)` through `gpl run` in a temporary project: a VOC
//! folder becomes a field set (and its split), a FITS image its `sky.json`; a folder of mixed
//! sizes fails naming the odd file.

use gpl::data::fields::{FieldSet, OBJECTS_FILE};
use gpl::data::voc::{write_annotation, VocAnnotation, VocObject};
use gpl::stages::dataset::{read_sky, SkyImage};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn gpl_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .expect("runs gpl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn object(name: &str, xmin: f64, ymin: f64, xmax: f64, ymax: f64) -> VocObject {
    VocObject {
        name: name.into(),
        pose: "Unspecified".into(),
        truncated: false,
        difficult: name == "star",
        xmin,
        ymin,
        xmax,
        ymax,
    }
}

/// Writes `name.png` (`grey`: 8-bit greyscale, else RGB; pixel value from its position) and
/// its annotation into `dir`.
fn image(dir: &Path, name: &str, width: u32, height: u32, grey: bool, objects: Vec<VocObject>) {
    let value = |x: u32, y: u32, c: u32| ((x * 7 + y * 11 + c * 60) % 256) as u8;
    let path = dir.join(format!("{name}.png"));
    if grey {
        image::GrayImage::from_fn(width, height, |x, y| image::Luma([value(x, y, 0)]))
            .save(&path)
            .unwrap();
    } else {
        image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([value(x, y, 0), value(x, y, 1), value(x, y, 2)])
        })
        .save(&path)
        .unwrap();
    }
    let a = VocAnnotation {
        filename: format!("{name}.png"),
        width,
        height,
        depth: if grey { 1 } else { 3 },
        objects,
    };
    write_annotation(dir, &a).unwrap();
}

/// The output folders of the cache entries holding `file`.
fn entries_with(project: &Path, file: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(project.join(".gpl/cache"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path().join("out")))
        .filter(|p| p.join(file).is_file())
        .collect();
    out.sort();
    out
}

fn voc_project(sizes: &[(u32, u32)]) -> tempfile::TempDir {
    let p = tempfile::tempdir().unwrap();
    let dir = p.path().join("fields");
    fs::create_dir(&dir).unwrap();
    for (i, &(w, h)) in sizes.iter().enumerate() {
        let objects = vec![
            object("spiral", 1.0, 2.0, 9.0, 7.0),
            object("star", 10.0 + i as f64, 1.0, 14.0, 5.0),
        ];
        image(&dir, &format!("f{i}"), w, h, i == 1, objects);
    }
    fs::write(
        p.path().join("p.gpl"),
        "dataset d {\n  source voc(\"fields\")\n  split holdout(train: 0.5, val: 0.25, test: 0.25, seed: 4)\n}\n",
    )
    .unwrap();
    p
}

#[test]
fn a_voc_folder_runs_into_a_field_set_and_its_split() {
    let p = voc_project(&[(24, 16); 4]);
    let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 0, "{out}{err}");
    let entries = entries_with(p.path(), OBJECTS_FILE);
    assert_eq!(entries.len(), 1, "one dataset entry with objects");
    let fields = FieldSet::load(&entries[0]).unwrap();
    assert_eq!(fields.len(), 4);
    assert_eq!(fields.names, ["f0.png", "f1.png", "f2.png", "f3.png"]);
    assert_eq!(fields.classes(), ["spiral", "star"]);
    assert_eq!(
        (
            fields.images.height,
            fields.images.width,
            fields.images.channels
        ),
        (16, 24, 3)
    );
    // f1 is greyscale: its one channel replicated; f0 is RGB as written.
    let grey = fields.image(1);
    let at = (3 * 24 + 5) * 3;
    let v = (5 * 7 + 3 * 11) as u8; // pixel (x 5, y 3), below 256
    assert_eq!(&grey[at..at + 3], &[v, v, v]);
    assert_eq!(&fields.image(0)[at..at + 3], &[v, v + 60, v + 120]);
    let star = &fields.objects[2][1];
    assert_eq!(
        (star.class, star.xmin, star.xmax, star.difficult),
        (1, 12.0, 14.0, true)
    );
    // The split holds every image once.
    let splits = entries_with(p.path(), "split.json");
    assert_eq!(splits.len(), 1);
    let split: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(splits[0].join("split.json")).unwrap()).unwrap();
    let mut all: Vec<u64> = ["train", "val", "test"]
        .iter()
        .flat_map(|k| {
            split[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap())
        })
        .collect();
    all.sort();
    assert_eq!(all, [0, 1, 2, 3]);
    let table = fs::read_to_string(p.path().join("runs/p/d.split/split.csv")).unwrap();
    assert!(
        table.starts_with("part,images,spiral objects,star objects\n"),
        "{table}"
    );
    let summary = fs::read_to_string(p.path().join("runs/p/d/dataset.json")).unwrap();
    assert!(summary.contains("voc fields"), "{summary}");

    // A new image changes the folder's content hash: the dataset runs again.
    image(
        &p.path().join("fields"),
        "f4",
        24,
        16,
        false,
        vec![object("spiral", 0.0, 0.0, 4.0, 4.0)],
    );
    let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 0, "{out}{err}");
    let entries = entries_with(p.path(), OBJECTS_FILE);
    assert_eq!(entries.len(), 2, "a second dataset entry");
}

#[test]
fn a_voc_folder_of_two_sizes_fails_naming_the_odd_file() {
    let p = voc_project(&[(24, 16), (24, 16), (30, 16)]);
    let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("f2.xml") && err.contains("30×16") && err.contains("24×16"),
        "{err}"
    );
    assert!(
        !p.path().join(".gpl/cache").exists() || entries_with(p.path(), OBJECTS_FILE).is_empty()
    );
}

#[test]
fn a_fits_dataset_records_its_image() {
    let p = tempfile::tempdir().unwrap();
    let (w, h) = (40, 30);
    gpl::data::fits::write_fits_f32(&p.path().join("sky.fits"), w, h, |y| {
        (0..w).map(|x| (x + y) as f32).collect()
    })
    .unwrap();
    fs::write(
        p.path().join("p.gpl"),
        "dataset sky {\n  source fits(\"sky.fits\", hdu: 0)\n}\n",
    )
    .unwrap();
    let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 0, "{out}{err}");
    let entries = entries_with(p.path(), "sky.json");
    assert_eq!(entries.len(), 1);
    assert_eq!(
        read_sky(&entries[0]).unwrap(),
        SkyImage {
            path: "sky.fits".into(),
            hdu: 0,
            width: 40,
            height: 30,
            has_wcs: false,
        }
    );
    // A damaged file fails at `gpl check`, naming it.
    fs::write(p.path().join("sky.fits"), b"SIMPLE  = not really").unwrap();
    let (code, _, err) = gpl_in(p.path(), &["check", "p.gpl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("sky.fits"), "{err}");
}
