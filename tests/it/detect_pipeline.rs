//! Detection end to end: synthetic fields, the classical detector scored with the COCO
//! metrics, and the chain's catalogue. The detect stage's numbers are checked against
//! `gpl eval detections` run on the same fields written as a VOC folder by `gpl data synth`,
//! so the stage and the command agree on boxes, names and metrics.

use crate::pipeline_text::{not_cached, run};
use crate::shared::gpl;
use std::fs;

const PIPELINE: &str = r#"
dataset fields {
  source synthetic(fields, count: 6, size: 160, seed: 3)
}

detect finder {
  data fields
  method extract(thresh: 1.5, minarea: 5)
}

dataset g {
  source synthetic(galaxy10, count: 120, seed: 1)
  split holdout(train: 0.6, val: 0.2, test: 0.2, seed: 4)
}

model tiny(classes) {
  input 69 x 69 x 3
  conv 4 3 x 3 relu
  maxpool 8
  flatten
  dense classes softmax
}

train base {
  model tiny(10)
  data g.train
  epochs 1
  batch 32
  seed 7
}

chain catalog {
  detect finder(min_score: 0.5, min_size: 1.5)
  crop 48 x 48
  classify base
  output "catalog.csv"
}
"#;

fn coco_values(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.contains("Average"))
        .map(|l| l.rsplit_once(" = ").unwrap().1.to_string())
        .collect()
}

#[test]
fn fields_are_detected_scored_like_the_eval_command_and_catalogued() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(dir.path(), PIPELINE);
    assert!(summary.succeeded(), "{}", summary.render_table());
    let out = dir.path().join("runs/p");

    // The detect stage's COCO numbers equal the command's on the same fields as VOC.
    let coco = fs::read_to_string(out.join("finder/coco.txt")).unwrap();
    assert_eq!(coco.lines().count(), 12, "{coco}");
    let voc = dir.path().join("voc");
    let (code, _, err) = gpl(&[
        "data",
        "synth",
        "--kind",
        "fields",
        "--count",
        "6",
        "--size",
        "160",
        "--seed",
        "3",
        "--voc",
        voc.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    let dets = out.join("finder/detections.csv");
    let (code, printed, err) = gpl(&[
        "eval",
        "detections",
        "--truth",
        voc.to_str().unwrap(),
        "--detections",
        dets.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(coco_values(&printed), coco_values(&coco));
    let ap50: f64 = coco_values(&coco)[1].parse().unwrap();
    assert!(ap50 > 0.0, "the detector found no galaxy: {coco}");

    // The catalogue keeps exactly the detections at or above min_score and min_size, with a
    // class and one probability per class, and a FITS table beside it.
    let objects = fs::read_to_string(out.join("finder/objects.csv")).unwrap();
    let cell = |l: &str, k: usize| l.split(',').nth(k).unwrap().parse::<f64>().unwrap();
    let above_score = objects.lines().skip(1).filter(|l| cell(l, 15) >= 0.5);
    let kept = above_score.clone().filter(|l| cell(l, 9) >= 1.5).count();
    assert!(kept < above_score.count(), "min_size dropped nothing");
    let catalog = fs::read_to_string(out.join("catalog/catalog.csv")).unwrap();
    let header: Vec<&str> = catalog.lines().next().unwrap().split(',').collect();
    assert_eq!(header.iter().filter(|h| h.starts_with("p_")).count(), 10);
    assert_eq!(catalog.lines().count() - 1, kept);
    assert!(kept > 0);
    for line in catalog.lines().skip(1) {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells.len(), header.len(), "{line}");
        let sum: f64 = cells[cells.len() - 10..]
            .iter()
            .map(|c| c.parse::<f64>().unwrap())
            .sum();
        assert!((sum - 1.0).abs() < 1e-4, "probabilities sum to {sum}");
    }
    let fits = fs::read(out.join("catalog/catalog.fits")).unwrap();
    assert_eq!(fits.len() % 2880, 0);
    assert!(fits.windows(20).any(|w| w == b"XTENSION= 'BINTABLE'"));
    let drawn = fs::read_dir(out.join("catalog/fields")).unwrap().count();
    assert_eq!(drawn, 6);
    let report = fs::read_to_string(out.join("report/report.html")).unwrap();
    for needle in [
        "COCO box metrics",
        "precision-recall at IoU 0.5",
        "Recovery of the synthetic galaxies",
        "completeness",
    ] {
        assert!(report.contains(needle), "report lacks {needle}");
    }

    // A new score cut re-runs the chain and the report only; a new threshold the detector too.
    let edited = PIPELINE.replace("min_score: 0.5", "min_score: 0.7");
    assert_eq!(not_cached(dir.path(), &edited), ["catalog", "report"]);
    let edited = PIPELINE.replace("min_size: 1.5", "min_size: 2");
    assert_eq!(not_cached(dir.path(), &edited), ["catalog", "report"]);
    let edited = PIPELINE.replace("thresh: 1.5", "thresh: 3");
    assert_eq!(
        not_cached(dir.path(), &edited),
        ["catalog", "finder", "report"]
    );
}

#[test]
fn a_detector_on_galaxy_images_and_training_on_fields_are_refused_at_check() {
    let dir = tempfile::tempdir().unwrap();
    let text = PIPELINE.replace("data g.train", "data fields");
    let file = crate::pipeline_text::write(dir.path(), &text);
    let (code, _, err) = gpl(&["check", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("detection images with boxes"), "{err}");
}

#[test]
fn a_survey_image_is_extracted_in_tiles_with_sky_positions() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("data")).unwrap();
    fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/extract/m13.fits"
        ),
        dir.path().join("data/m13.fits"),
    )
    .unwrap();
    let text = r#"
dataset sky {
  source fits("data/m13.fits", hdu: 0)
}

detect stars {
  data sky
  method extract(thresh: 1.5)
}
"#;
    let summary = run(dir.path(), text);
    assert!(summary.succeeded(), "{}", summary.render_table());
    let objects = fs::read_to_string(dir.path().join("runs/p/stars/objects.csv")).unwrap();
    let mut lines = objects.lines();
    assert!(lines.next().unwrap().starts_with("image,id,x,y,ra,dec,"));
    // The whole-image extraction of the same file finds 291 objects (SEP parity fixture);
    // the 300 x 300 image is one tile.
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').skip(2).map(|c| c.parse().unwrap()).collect())
        .collect();
    assert_eq!(rows.len(), 291);
    // M13 is at RA 250.42°, Dec +36.46°: every object lies within the 300-pixel field.
    for r in &rows {
        assert!(
            (r[2] - 250.42).abs() < 0.2 && (r[3] - 36.46).abs() < 0.2,
            "{r:?}"
        );
    }
    // A chain cannot read a survey image.
    let chained = format!("{text}\nchain c {{\n  detect stars\n}}\n");
    let file = crate::pipeline_text::write(dir.path(), &chained);
    let (code, _, err) = gpl(&["run", file.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("survey image"), "{err}");
}
