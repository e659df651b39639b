//! Pascal VOC folders (read with checks, written for labelImg) and `gpl eval detections`
//! through the real binary, on the pycocotools fixture case "boundaries" written as a VOC
//! folder: the printed numbers are pycocotools' own, to the three decimals it prints.

use crate::shared::gpl;
use std::path::Path;

use gpl::data::voc::{read_voc_dir, write_annotation, VocAnnotation, VocObject};
use gpl::data::DataError;
use serde_json::Value;

fn boundaries_case() -> Value {
    let doc: Value =
        serde_json::from_str(include_str!("../fixtures/detection/coco_fixtures.json")).unwrap();
    doc["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "boundaries")
        .expect("the boundaries case")
        .clone()
}

fn write_png(path: &Path, width: u32, height: u32) {
    image::RgbImage::new(width, height).save(path).unwrap();
}

fn coords(v: &Value) -> [f64; 4] {
    let c: Vec<f64> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    [c[0], c[1], c[2], c[3]]
}

/// The fixture's truth as a VOC folder (images field_0.png …, classes c0, c1, …) and its
/// detections as CSV; returns the CSV's path.
fn write_case(case: &Value, dir: &Path) -> std::path::PathBuf {
    let images = case["images"].as_u64().unwrap() as usize;
    for i in 0..images {
        let filename = format!("field_{i}.png");
        write_png(&dir.join(&filename), 424, 424);
        let objects = case["truth"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["image"].as_u64() == Some(i as u64))
            .map(|t| {
                let [xmin, ymin, xmax, ymax] = coords(&t["box"]);
                VocObject {
                    name: format!("c{}", t["class"]),
                    pose: "Unspecified".into(),
                    truncated: false,
                    difficult: t["difficult"].as_bool().unwrap(),
                    xmin,
                    ymin,
                    xmax,
                    ymax,
                }
            })
            .collect();
        let annotation = VocAnnotation {
            filename,
            width: 424,
            height: 424,
            depth: 3,
            objects,
        };
        write_annotation(dir, &annotation).unwrap();
    }
    let mut csv = String::from("image,class,score,xmin,ymin,xmax,ymax\n");
    for (n, d) in case["detections"].as_array().unwrap().iter().enumerate() {
        let [xmin, ymin, xmax, ymax] = coords(&d["box"]);
        // Half the rows name the image by its stem.
        let image = match n % 2 {
            0 => format!("field_{}.png", d["image"]),
            _ => format!("field_{}", d["image"]),
        };
        csv.push_str(&format!(
            "{image},c{},{},{xmin},{ymin},{xmax},{ymax}\n",
            d["class"], d["score"]
        ));
    }
    let path = dir.join("dets.csv");
    std::fs::write(&path, csv).unwrap();
    path
}

#[test]
fn eval_detections_prints_pycocotools_numbers() {
    let case = boundaries_case();
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("voc");
    std::fs::create_dir(&voc).unwrap();
    let csv = write_case(&case, &voc);
    let (code, stdout, stderr) = gpl(&[
        "eval",
        "detections",
        "--truth",
        voc.to_str().unwrap(),
        "--detections",
        csv.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{stderr}");
    let stats: Vec<f64> = case["stats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let rows: Vec<&str> = stdout.lines().filter(|l| l.contains(" @[ IoU=")).collect();
    assert_eq!(rows.len(), 12, "{stdout}");
    assert_eq!(
        rows[0],
        format!(
            " Average Precision  (AP) @[ IoU=0.50:0.95 | area=   all | maxDets=100 ] = {:.3}",
            stats[0]
        )
    );
    for (row, want) in rows.iter().zip(&stats) {
        assert!(row.ends_with(&format!("= {want:.3}")), "{row} vs {want}");
    }
    assert!(stdout.contains("7 boxes (2 difficult"), "{stdout}");
}

#[test]
fn eval_detections_names_the_bad_csv_line() {
    let case = boundaries_case();
    let dir = tempfile::tempdir().unwrap();
    let csv = write_case(&case, dir.path());
    let good = std::fs::read_to_string(&csv).unwrap();
    for (bad_row, expect) in [
        ("field_9.png,c0,0.5,1,1,5,5", "no image `field_9.png`"),
        ("field_0.png,spiral,0.5,1,1,5,5", "class `spiral`"),
        ("field_0.png,c0,high,1,1,5,5", "score is `high`"),
    ] {
        let mut lines: Vec<&str> = good.lines().collect();
        lines.insert(3, bad_row);
        std::fs::write(&csv, lines.join("\n")).unwrap();
        let (code, stdout, stderr) = gpl(&[
            "eval",
            "detections",
            "--truth",
            dir.path().to_str().unwrap(),
            "--detections",
            csv.to_str().unwrap(),
        ]);
        assert_eq!(code, 2, "{stdout}");
        assert!(stderr.contains("dets.csv:4"), "{stderr}");
        assert!(stderr.contains(expect), "{stderr}");
        assert!(stdout.is_empty(), "{stdout}");
    }
}

fn one_image_folder(dir: &Path) -> VocAnnotation {
    let a = VocAnnotation {
        filename: "g.png".into(),
        width: 40,
        height: 30,
        depth: 3,
        objects: vec![VocObject {
            name: "spiral".into(),
            pose: "Unspecified".into(),
            truncated: true,
            difficult: false,
            xmin: 1.0,
            ymin: 2.0,
            xmax: 20.5,
            ymax: 30.0,
        }],
    };
    write_png(&dir.join("g.png"), 40, 30);
    write_annotation(dir, &a).unwrap();
    a
}

fn voc_message(dir: &Path) -> String {
    match read_voc_dir(dir) {
        Err(e @ DataError::Voc { .. }) => e.to_string(),
        other => panic!("expected a VOC error, got {other:?}"),
    }
}

#[test]
fn voc_folder_round_trips_and_refuses_bad_folders() {
    let dir = tempfile::tempdir().unwrap();
    let a = one_image_folder(dir.path());
    let read = read_voc_dir(dir.path()).unwrap();
    assert_eq!(read.annotations, vec![a.clone()]);
    assert_eq!(read.classes, vec!["spiral".to_string()]);
    assert_eq!(read.image_index("g"), Some(0));
    let xml = dir.path().join("g.xml");
    let text = std::fs::read_to_string(&xml).unwrap();

    // The image disagrees with <size> (line 8 of labelImg's layout).
    write_png(&dir.path().join("g.png"), 41, 30);
    let m = voc_message(dir.path());
    assert!(m.contains("g.xml:8:") && m.contains("41×30"), "{m}");

    // The image is missing.
    std::fs::remove_file(dir.path().join("g.png")).unwrap();
    let m = voc_message(dir.path());
    assert!(m.contains("g.xml") && m.contains("does not exist"), "{m}");

    // The image is a symlink out of the folder.
    let outside = tempfile::tempdir().unwrap();
    write_png(&outside.path().join("g.png"), 40, 30);
    std::os::unix::fs::symlink(outside.path().join("g.png"), dir.path().join("g.png")).unwrap();
    let m = voc_message(dir.path());
    assert!(m.contains("outside the folder"), "{m}");
    std::fs::remove_file(dir.path().join("g.png")).unwrap();
    write_png(&dir.path().join("g.png"), 40, 30);

    // Bad XML, named at its line.
    std::fs::write(&xml, text.replace("</object>", "</objet>")).unwrap();
    let m = voc_message(dir.path());
    assert!(
        m.contains("g.xml:25:") && m.contains("not well-formed"),
        "{m}"
    );

    // A box leaving the image.
    std::fs::write(&xml, text.replace("<xmax>20.5</xmax>", "<xmax>40.5</xmax>")).unwrap();
    let m = voc_message(dir.path());
    assert!(
        m.contains("g.xml:19:") && m.contains("leaves the 40×30 image"),
        "{m}"
    );
}
