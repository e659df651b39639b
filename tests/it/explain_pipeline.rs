//! The explain stage end to end: a tiny model trained and explained by `gpl run`, the files a
//! Python user opens (maps, raw maps, samples.csv, inputs.npy), the report section, and the
//! cache: editing any explain setting re-runs the explain stage and never the training.

use crate::pipeline_text::{not_cached, run};
use std::fs;
use std::path::Path;

const BASE: &str = r#"
dataset g {
  source synthetic(galaxy10, count: 200, seed: 1)
  split holdout(train: 0.6, val: 0.2, test: 0.2, stratify, seed: 42)
}

model small(classes) {
  input 69 x 69 x 3
  conv 4 3x3 relu
  maxpool 2
  conv 4 3x3 relu, name: last
  maxpool 4
  flatten
  dense classes softmax
}

train a {
  model small(10)
  data g.train
  optimizer adam(lr: 1e-3)
  epochs 1
  batch 32
  seed 7
}

explain why on g.test {
  model a
  gradcam samples: 3
  saliency samples: 2, pick: per_class, target: true
  smoothgrad samples: 1, n: 3, sigma: 0.1
  integrated_gradients samples: 1, steps: 4
  occlusion samples: 1, window: 16, stride: 16
  activations layer: last
  filters layer: last, count: 2, steps: 5
  seed 5
}
"#;

/// The shape in a `.npy` header, e.g. `[3, 69, 69]`.
fn npy_shape(path: &Path) -> Vec<usize> {
    let bytes = fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(&bytes[..6], b"\x93NUMPY");
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
    assert!(header.contains("'descr': '<f4'"), "{header}");
    let dims = header
        .split("'shape': (")
        .nth(1)
        .unwrap()
        .split(')')
        .next()
        .unwrap();
    let shape: Vec<usize> = dims
        .split(',')
        .filter_map(|d| d.trim().parse().ok())
        .collect();
    assert_eq!(
        bytes.len(),
        10 + len + 4 * shape.iter().product::<usize>(),
        "{}: data length",
        path.display()
    );
    shape
}

fn floats(path: &Path) -> Vec<f32> {
    let bytes = fs::read(path).unwrap();
    let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
    bytes[10 + len..]
        .chunks(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn explain_writes_maps_inputs_and_report_and_reruns_alone_when_edited() {
    let dir = tempfile::tempdir().unwrap();
    let first = run(dir.path(), BASE);
    assert!(first.succeeded(), "{}", first.render_table());
    let out = dir.path().join("runs/p/why");

    assert_eq!(npy_shape(&out.join("gradcam.npy")), [3, 69, 69]);
    assert_eq!(npy_shape(&out.join("gradcam_raw.npy")), [3, 31, 31]);
    assert_eq!(npy_shape(&out.join("saliency_raw.npy")), [2, 69, 69, 3]);
    assert_eq!(npy_shape(&out.join("occlusion.npy")), [1, 69, 69]);
    assert_eq!(npy_shape(&out.join("activations_last.npy")), [1, 31, 31, 4]);
    assert_eq!(npy_shape(&out.join("filters.npy")), [2, 69, 69, 3]);
    for method in [
        "gradcam",
        "saliency",
        "smoothgrad",
        "integrated_gradients",
        "occlusion",
    ] {
        let maps = floats(&out.join(format!("{method}.npy")));
        assert!(
            maps.iter().all(|v| (0.0..=1.0).contains(v)),
            "{method}: a value outside [0, 1]"
        );
        assert!(out.join(format!("{method}.png")).is_file());
    }
    let csv = fs::read_to_string(out.join("samples.csv")).unwrap();
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "method,map,input,index,true,predicted,target");
    assert_eq!(rows.len(), 1 + 3 + 2 + 1 + 1 + 1);
    // target: true → the map explains the true class.
    for row in rows.iter().filter(|r| r.starts_with("saliency,")) {
        let f: Vec<&str> = row.split(',').collect();
        assert_eq!(f[4], f[6], "{row}");
    }
    // Every map's input row exists in inputs.npy, and those inputs are the model's view.
    let inputs = npy_shape(&out.join("inputs.npy"));
    let max_input = rows[1..]
        .iter()
        .map(|r| r.split(',').nth(2).unwrap().parse::<usize>().unwrap())
        .max()
        .unwrap();
    assert_eq!(inputs[0], max_input + 1);
    assert_eq!(&inputs[1..], [69, 69, 3]);
    for figure in [
        "sanity.png",
        "deletion.png",
        "filters.png",
        "activations_last.png",
    ] {
        assert!(out.join(figure).is_file(), "{figure}");
    }
    let html = fs::read_to_string(dir.path().join("runs/p/report/report.html")).unwrap();
    assert!(
        html.contains("stage-why"),
        "the report has an explain section"
    );
    assert!(html.contains("deletion AUC"));
    assert!(dir.path().join("runs/p/a/model.safetensors").is_file());

    let edits = [
        ("gradcam samples: 3", "gradcam samples: 2"),
        ("gradcam samples: 3", "gradcam samples: 3, layer: conv2d_1"),
        ("gradcam samples: 3", "gradcam samples: 3, target: each"),
        ("pick: per_class", "pick: misclassified"),
        ("pick: per_class", "pick: indices([4, 1])"),
        ("n: 3, sigma: 0.1", "n: 3, sigma: 0.2"),
        ("steps: 4", "steps: 4, baseline: blurred"),
        ("window: 16, stride: 16", "window: 16, stride: 12"),
        (
            "filters layer: last, count: 2, steps: 5",
            "filters layer: last, count: 2, steps: 6",
        ),
        (
            "activations layer: last",
            "activations layer: [last, conv2d_1]",
        ),
        ("seed 5", "seed 5\n  sanity false"),
        ("seed 5", "seed 6"),
        ("explain why on g.test", "explain why on g.val"),
    ];
    for (from, to) in edits {
        assert!(BASE.contains(from), "{from}");
        let dirty = not_cached(dir.path(), &BASE.replacen(from, to, 1));
        assert_eq!(dirty, ["report", "why"], "editing `{from}` → `{to}`");
    }
}

#[test]
fn an_index_past_the_part_fails_the_stage_with_its_reason() {
    // 150 is inside the 200-image dataset (the checker accepts it) but past its 40-image
    // test part: the stage fails and says why.
    let dir = tempfile::tempdir().unwrap();
    let text = BASE.replacen("pick: per_class", "pick: indices([0, 150])", 1);
    let summary = run(dir.path(), &text);
    assert!(!summary.succeeded());
    let table = summary.render_table();
    let log = fs::read_to_string(dir.path().join(".gpl/events.jsonl")).unwrap_or_default();
    assert!(
        log.contains("index 150 is past the data") || table.contains("index 150"),
        "{table}\n{log}"
    );
}
