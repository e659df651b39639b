//! Learned detectors end to end on tiny fields: an SSD-lite trained by a train block with
//! `anchors` (history with the validation mAP, a checkpoint, the model file with its
//! anchors), its backbone initialised from a MobileNet classifier trained in the same
//! pipeline, run by a detect block and scored with the COCO metrics, then used by a chain.

use crate::pipeline_text::run;
use std::fs;

const PIPELINE: &str = r#"
import "stdlib/detectors.gpl"

dataset fields {
  source synthetic(fields, count: 24, size: 96, seed: 3)
  split holdout(train: 0.5, val: 0.25, test: 0.25, seed: 4)
}

train ssd {
  model ssd_lite(1, size: 64, alpha: 0.25)
  data fields.train
  anchors sizes: [8, 16, 32, 64], ratios: [1, 2, 0.5]
  init weights from mobile
  epochs 2
  batch 6
  seed 5
  early_stopping(monitor: val_map50, patience: 3)
}

detect found {
  data fields.test
  method ssd(iou: 0.5, min_score: 0.001)
}

dataset g {
  source synthetic(galaxy10, count: 60, seed: 1)
  split holdout(train: 0.6, val: 0.2, test: 0.2, seed: 4)
}

model tiny(classes) {
  input 69 x 69 x 3
  conv 4 3 x 3 relu
  maxpool 8
  flatten
  dense classes softmax
}

train mobile {
  model mobilenet_small(10, alpha: 0.25)
  data g.train
  epochs 1
  batch 32
  seed 7
}

train base {
  model tiny(10)
  data g.train
  epochs 1
  batch 32
  seed 7
}

chain catalog {
  detect found(min_score: 0.001)
  crop 48 x 48
  classify base
  output "catalog.csv"
}
"#;

#[test]
fn a_trained_ssd_detects_is_scored_and_feeds_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let summary = run(dir.path(), PIPELINE);
    assert!(summary.succeeded(), "{}", summary.render_table());
    // The detector started from the classifier: it waited for it (an input), and loading
    // fails when no weight name matches.
    let program = gpl::check::load_program(&dir.path().join("p.gpl"), None).unwrap();
    let compiled = gpl::stages::compile(&program).unwrap();
    let ssd = compiled.plan.get(&gpl::plan::StageId::from("ssd")).unwrap();
    assert!(
        ssd.inputs.iter().any(|i| i.as_str() == "mobile"),
        "{:?}",
        ssd.inputs
    );
    let out = dir.path().join("runs/p");

    // The history has the detector's columns: no accuracy, a validation mAP per epoch.
    let history = fs::read_to_string(out.join("ssd/history.csv")).unwrap();
    let lines: Vec<&str> = history.lines().collect();
    assert_eq!(
        lines[0],
        "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,val_map50"
    );
    assert_eq!(lines.len(), 3, "{history}");
    for line in &lines[1..] {
        let cells: Vec<&str> = line.split(',').collect();
        assert_eq!(cells[2], "NaN");
        let loss: f64 = cells[1].parse().unwrap();
        let map: f64 = cells[7].parse().unwrap();
        assert!(loss.is_finite() && loss > 0.0, "{line}");
        assert!((0.0..=1.0).contains(&map), "{line}");
    }

    // The model file carries its anchors, so the detect block needs nothing else.
    let model = fs::read(out.join("ssd/model.safetensors")).unwrap();
    assert!(model.windows(12).any(|w| w == b"gpl.detector"));

    // The detect stage scored its detections with COCO's twelve numbers.
    let coco = fs::read_to_string(out.join("found/coco.txt")).unwrap();
    assert_eq!(coco.lines().count(), 12, "{coco}");
    let detections = fs::read_to_string(out.join("found/detections.csv")).unwrap();
    let rows = detections.lines().count() - 1;
    assert!(rows > 0, "no detection at min_score 0.001");
    for line in detections.lines().skip(1) {
        let cells: Vec<f64> = line
            .split(',')
            .skip(2)
            .map(|c| c.parse().unwrap())
            .collect();
        let [score, x0, y0, x1, y1] = cells[..] else {
            panic!("{line}")
        };
        assert!((0.001..=1.0).contains(&score), "{line}");
        assert!(0.0 <= x0 && x0 < x1 && x1 <= 96.0, "{line}");
        assert!(0.0 <= y0 && y0 < y1 && y1 <= 96.0, "{line}");
    }

    // The report compares the detectors: the same mAP@0.5 as COCO's AP50 line, a size, rates,
    // and the isolated and blended galaxies adding up to the annotated ones.
    let compared = fs::read_to_string(out.join("report/detectors_compared.csv")).unwrap();
    let lines: Vec<&str> = compared.lines().collect();
    assert_eq!(lines.len(), 2, "{compared}");
    assert!(
        lines[0].starts_with("detect,detector,mAP@0.5,AR@1"),
        "{compared}"
    );
    let cells: Vec<&str> = lines[1].split(',').collect();
    assert_eq!(&cells[..2], ["found", "ssd_lite"]);
    let ap50_line = coco.lines().nth(1).unwrap();
    let ap50: f64 = ap50_line
        .rsplit(" = ")
        .next()
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(cells[2], format!("{ap50:.3}"), "{compared} / {ap50_line}");
    for rate in &cells[7..9] {
        assert!(rate.parse::<f64>().unwrap() > 0.0, "{compared}");
    }

    // The chain takes the learned detector like the classical one.
    let catalog = fs::read_to_string(out.join("catalog/catalog.csv")).unwrap();
    assert_eq!(catalog.lines().count() - 1, rows);
}

/// A detector of two classes on a VOC folder: each detection keeps the class the head named,
/// `detections.csv` and `objects.csv` write its name, and COCO scores class by class.
#[test]
fn a_two_class_detector_names_its_classes() {
    use gpl::data::voc::{write_annotation, VocAnnotation, VocObject};
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("fields");
    fs::create_dir(&voc).unwrap();
    for i in 0..8u32 {
        // A bright square and a dim one, moving from image to image.
        let mut img = image::RgbImage::new(64, 64);
        let (bx, dx) = (4 + 3 * i, 40 - 2 * i);
        for y in 8..24 {
            for x in bx..bx + 16 {
                img.put_pixel(x, y, image::Rgb([250, 250, 250]));
            }
        }
        for y in 36..52 {
            for x in dx..dx + 16 {
                img.put_pixel(x, y, image::Rgb([90, 90, 90]));
            }
        }
        let filename = format!("f{i}.png");
        img.save(voc.join(&filename)).unwrap();
        let object = |name: &str, x: u32, y: u32| VocObject {
            name: name.into(),
            pose: "Unspecified".into(),
            truncated: false,
            difficult: false,
            xmin: x as f64,
            ymin: y as f64,
            xmax: (x + 16) as f64,
            ymax: (y + 16) as f64,
        };
        let annotation = VocAnnotation {
            filename,
            width: 64,
            height: 64,
            depth: 3,
            objects: vec![object("bright", bx, 8), object("dim", dx, 36)],
        };
        write_annotation(&voc, &annotation).unwrap();
    }
    let pipeline = r#"
import "stdlib/detectors.gpl"

dataset fields {
  source voc("fields")
  split holdout(train: 0.5, val: 0.25, test: 0.25, seed: 4)
}

train ssd {
  model ssd_lite(2, size: 64, alpha: 0.25)
  data fields.train
  anchors sizes: [8, 16, 32, 64], ratios: [1, 2, 0.5]
  epochs 1
  batch 4
  seed 5
}

detect found {
  data fields.test
  method ssd(iou: 0.5, min_score: 0.001)
}
"#;
    let summary = run(dir.path(), pipeline);
    assert!(summary.succeeded(), "{}", summary.render_table());
    let out = dir.path().join("runs/p/found");
    let detections = fs::read_to_string(out.join("detections.csv")).unwrap();
    let classes: std::collections::BTreeSet<&str> = detections
        .lines()
        .skip(1)
        .map(|l| l.split(',').nth(1).unwrap())
        .collect();
    // At min_score 0.001 both class maps give boxes, each under its own name.
    assert_eq!(
        classes.into_iter().collect::<Vec<_>>(),
        ["bright", "dim"],
        "{detections}"
    );
    let objects = fs::read_to_string(out.join("objects.csv")).unwrap();
    assert!(objects.lines().next().unwrap().ends_with(",score,class"));
    assert_eq!(
        objects
            .lines()
            .skip(1)
            .filter(|l| l.ends_with(",dim"))
            .count(),
        detections.lines().filter(|l| l.contains(",dim,")).count()
    );
    let coco = fs::read_to_string(out.join("coco.txt")).unwrap();
    assert_eq!(coco.lines().count(), 12, "{coco}");
}
