//! Issue 13 through the real binary: what a hostile or careless pipeline must not make gpl do
//! (read or quote files outside the project, write or delete through symlinks, delete a
//! user's file, panic) and the bad inputs that must be named where they are.

use std::fs;
use std::path::Path;
use std::process::Command;

/// Runs gpl in `dir`; (exit code, stdout, stderr).
fn gpl_in(dir: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        // Children spawned by parallel tests inherit the descriptors of HDF5 files other
        // tests are writing, and with them libhdf5's lock on those files.
        .env("HDF5_USE_FILE_LOCKING", "FALSE")
        .output()
        .expect("runs gpl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

const DATASET: &str = "dataset d {\n  source synthetic(galaxy10, count: 100, seed: 1)\n  split holdout(train: 0.8, val: 0.1, test: 0.1)\n}\n";

#[test]
fn imports_outside_the_project_are_refused_unread() {
    let project = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.gpl");
    fs::write(&secret, "SECRET_VALUE=hunter2\n").unwrap();
    fs::write(
        project.path().join("abs.gpl"),
        format!("import \"{}\"\n", secret.display()),
    )
    .unwrap();
    fs::write(
        project.path().join("env.gpl"),
        "import \"/proc/self/environ\"\n",
    )
    .unwrap();
    // A symlink inside the project that leads out of it.
    std::os::unix::fs::symlink(&secret, project.path().join("link.gpl")).unwrap();
    fs::write(project.path().join("via_link.gpl"), "import \"link.gpl\"\n").unwrap();
    fs::write(
        project.path().join("up.gpl"),
        format!(
            "import \"../{}/secret.gpl\"\n",
            outside.path().file_name().unwrap().to_string_lossy()
        ),
    )
    .unwrap();
    for file in ["abs.gpl", "env.gpl", "via_link.gpl", "up.gpl"] {
        let (code, out, err) = gpl_in(project.path(), &["check", file]);
        assert_eq!(code, 2, "{file}: {out}{err}");
        assert!(err.contains("gpl::import::outside"), "{file}: {err}");
        assert!(!err.contains("hunter2"), "{file} quoted the file: {err}");
        assert!(
            !err.contains("PATH="),
            "{file} quoted the environment: {err}"
        );
    }
}

#[test]
fn files_that_are_not_pipelines_are_never_quoted() {
    let project = tempfile::tempdir().unwrap();
    fs::write(project.path().join("notes.txt"), "password hunter2\n").unwrap();
    fs::write(project.path().join("imp.gpl"), "import \"notes.txt\"\n").unwrap();
    let (code, _, err) = gpl_in(project.path(), &["check", "imp.gpl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gpl::import::not_gpl"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
    for command in ["check", "fmt"] {
        let (code, _, err) = gpl_in(project.path(), &[command, "notes.txt"]);
        assert_eq!(code, 2, "{command}: {err}");
        assert!(err.contains("gpl::io::not_pipeline"), "{command}: {err}");
        assert!(
            !err.contains("hunter2") && !err.contains("password"),
            "{command}: {err}"
        );
    }
}

#[test]
fn a_diagnostic_past_column_65535_renders_without_panicking() {
    let project = tempfile::tempdir().unwrap();
    let line = format!("{}dataset x {{\n", " ".repeat(70_000));
    fs::write(project.path().join("wide.gpl"), &line).unwrap();
    let (code, _, err) = gpl_in(project.path(), &["check", "wide.gpl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gpl::syntax"), "{err}");
    assert!(
        err.contains("dataset x {"),
        "the label's line is shown: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.len() < 5_000,
        "the long line is cut: {} bytes",
        err.len()
    );
}

#[test]
fn a_model_summary_wider_than_65535_columns_prints() {
    let project = tempfile::tempdir().unwrap();
    let name = "l".repeat(70_000);
    fs::write(
        project.path().join("wide.gpl"),
        format!(
            "{DATASET}model m(c) {{\n  input 69 x 69 x 3\n  flatten\n  dense c softmax, name: {name}\n}}\ntrain t {{\n  model m(10)\n  data d.train\n  epochs 1\n}}\n"
        ),
    )
    .unwrap();
    let (code, out, err) = gpl_in(project.path(), &["check", "wide.gpl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("{name} (dense)")), "{err}");
}

/// A pipeline that trains a tiny model on `count` synthetic images with `lr`, then evaluates.
fn tiny(count: usize, lr: &str) -> String {
    format!(
        "dataset g {{\n  source synthetic(galaxy10, count: {count}, seed: 1)\n  split holdout(train: 0.7, val: 0.15, test: 0.15, seed: 42)\n}}\n\
         model small(classes) {{\n  input 69 x 69 x 3\n  conv 2 3x3 relu\n  maxpool 4\n  flatten\n  dense classes softmax\n}}\n\
         train a {{\n  model small(10)\n  data g.train\n  optimizer sgd(lr: {lr})\n  epochs 1\n  batch 4\n  seed 1\n}}\n\
         evaluate final on g.test {{\n  models a\n  report\n  confusion\n}}\n"
    )
}

/// A project folder holding `p.gpl`.
fn project(pipeline: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("p.gpl"), pipeline).unwrap();
    dir
}

/// Every file under `dir`, relative, sorted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for item in fs::read_dir(&at).unwrap() {
            let path = item.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_stage_folder_linked_out_of_the_project_is_neither_written_nor_emptied() {
    // A stage folder's copy is a convenience (a warning); the published report is not.
    for (linked, expected) in [("runs/p/final", 0), ("runs/p", 1)] {
        let p = project(&tiny(40, "1e-2"));
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("precious.txt"), b"keep").unwrap();
        let link = p.path().join(linked);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
        assert_eq!(code, expected, "{linked}: {out}{err}");
        assert!(
            err.contains("symlink"),
            "{linked}: the refusal is said: {err}"
        );
        assert_eq!(
            files_under(outside.path()),
            vec!["precious.txt"],
            "{linked}: gpl wrote or deleted through the link"
        );
        // Run again (everything cached, the mirror re-checked): still untouched.
        let (code, _, err) = gpl_in(p.path(), &["run", "p.gpl", "--from", "final"]);
        assert_eq!(code, expected, "{err}");
        assert_eq!(files_under(outside.path()), vec!["precious.txt"]);
    }
}

#[test]
fn a_cache_folder_linked_out_of_the_project_is_refused() {
    for linked in [".gpl", ".gpl/scratch"] {
        let p = project(&tiny(40, "1e-2"));
        let outside = tempfile::tempdir().unwrap();
        let link = p.path().join(linked);
        fs::create_dir_all(link.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();
        let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
        assert_eq!(code, 2, "{linked}: {out}{err}");
        assert!(err.contains("symlink"), "{linked}: {err}");
        assert!(
            files_under(outside.path()).is_empty(),
            "{linked}: gpl wrote through the link"
        );
    }
}

#[test]
fn a_users_file_in_a_stage_folder_survives_reruns() {
    let p = project(&tiny(40, "1e-2"));
    let (code, _, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 0, "{err}");
    let stage = p.path().join("runs/p/final");
    assert!(stage.join("classification_report.txt").is_file());
    fs::write(stage.join("notes.txt"), b"my notes").unwrap();
    fs::create_dir_all(stage.join("mine")).unwrap();
    fs::write(stage.join("mine/plot.png"), b"x").unwrap();
    for args in [vec!["run", "p.gpl"], vec!["run", "p.gpl", "--from", "a"]] {
        let (code, _, err) = gpl_in(p.path(), &args);
        assert_eq!(code, 0, "{err}");
        assert_eq!(fs::read(stage.join("notes.txt")).unwrap(), b"my notes");
        assert!(stage.join("mine/plot.png").is_file());
        assert!(stage.join("classification_report.txt").is_file());
    }
    // A file gpl wrote that the new result no longer has is removed; the user's stay.
    fs::write(
        p.path().join("p.gpl"),
        tiny(40, "1e-2").replace("  confusion\n", ""),
    )
    .unwrap();
    let (code, _, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 0, "{err}");
    assert!(!stage.join("confusion_a.png").exists());
    assert_eq!(fs::read(stage.join("notes.txt")).unwrap(), b"my notes");
}

#[test]
fn a_nan_loss_names_epoch_and_batch_and_leaves_no_empty_scratch_folder() {
    let p = project(&tiny(40, "1e30"));
    let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        err.contains("the training loss became NaN in epoch 1, batch"),
        "{err}"
    );
    let scratch = p.path().join(".gpl/scratch");
    let left: Vec<_> = fs::read_dir(&scratch)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left in .gpl/scratch: {left:?}");
}

#[test]
fn evaluate_on_one_or_two_images_fails_clearly_without_a_panic() {
    for count in [1, 2] {
        let p = project(&tiny(count, "1e-2"));
        let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
        assert_eq!(code, 1, "{count}: {out}{err}");
        assert!(!err.contains("panic"), "{count}: {err}");
        assert!(
            out.contains("the `test` part has no images to evaluate on"),
            "{count}: {out}"
        );
    }
}

#[test]
fn a_report_that_cannot_be_published_fails_the_run_and_the_summary_says_so() {
    let p = project(&tiny(40, "1e-2"));
    // Stands for a full disk: the rename onto report.html fails.
    fs::create_dir_all(p.path().join("runs/p/report.html/blocked")).unwrap();
    let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains("1 failed"), "{out}");
    assert!(err.contains("report.html"), "{err}");
}

#[test]
fn a_cached_run_does_not_rewrite_the_report() {
    use std::os::unix::fs::MetadataExt;
    let p = project(&tiny(40, "1e-2"));
    let (code, _, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 0, "{err}");
    let runs = p.path().join("runs/p");
    let before: Vec<(u64, i64)> = ["report.html", "metrics.yaml", "report/report.html"]
        .iter()
        .map(|f| {
            let m = fs::metadata(runs.join(f)).unwrap();
            (m.ino(), m.mtime_nsec())
        })
        .collect();
    let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("0 ran"), "{out}");
    let after: Vec<(u64, i64)> = ["report.html", "metrics.yaml", "report/report.html"]
        .iter()
        .map(|f| {
            let m = fs::metadata(runs.join(f)).unwrap();
            (m.ino(), m.mtime_nsec())
        })
        .collect();
    assert_eq!(before, after, "a cached run rewrote the published report");
}

/// Writes an HDF5 file with `images` (u8 of `shape`, or f32 when `float` is given) and,
/// when given, `ans` labels.
fn write_h5(path: &Path, shape: &[usize], float: Option<f32>, labels: Option<&[u8]>) {
    let file = hdf5::File::create(path).unwrap();
    let n: usize = shape.iter().product();
    match float {
        Some(value) => {
            let ds = file
                .new_dataset::<f32>()
                .shape(shape)
                .create("images")
                .unwrap();
            ds.write_raw(&vec![value; n]).unwrap();
        }
        None => {
            let ds = file
                .new_dataset::<u8>()
                .shape(shape)
                .create("images")
                .unwrap();
            ds.write_raw(&vec![7u8; n]).unwrap();
        }
    }
    if let Some(labels) = labels {
        let ds = file
            .new_dataset::<u8>()
            .shape([labels.len()])
            .create("ans")
            .unwrap();
        ds.write_raw(labels).unwrap();
    }
}

#[test]
fn data_inspect_lists_every_problem_a_run_would_meet_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // (file, image shape, float pixel value, labels, problems inspect must list)
    type Case<'a> = (
        &'a str,
        Vec<usize>,
        Option<f32>,
        Option<&'a [u8]>,
        &'a [&'a str],
    );
    let cases: [Case; 6] = [
        ("ok.h5", vec![4, 8, 8, 3], None, Some(&[0, 1, 2, 3]), &[]),
        (
            "no_labels.h5",
            vec![4, 8, 8, 3],
            None,
            None,
            &["no dataset `ans`"],
        ),
        (
            "rank5.h5",
            vec![2, 8, 8, 3, 2],
            None,
            Some(&[0, 1]),
            &["dataset `images` has shape [2, 8, 8, 3, 2]"],
        ),
        (
            "count.h5",
            vec![4, 8, 8, 3],
            None,
            Some(&[0, 1, 2]),
            &["holds 4 images but `ans` holds 3 labels"],
        ),
        (
            "label_range.h5",
            vec![2, 8, 8, 3],
            None,
            Some(&[0, 12]),
            &["label 12 at index 1"],
        ),
        (
            "absurd_and_labels.h5",
            vec![2, 8, 8, 3],
            Some(1.0e6),
            Some(&[0, 200]),
            &["pixel value 1000000", "label 200 at index 1"],
        ),
    ];
    for (name, shape, float, labels, problems) in cases {
        write_h5(&d.join(name), &shape, float, labels);
        let (code, out, err) = gpl_in(d, &["data", "inspect", name]);
        if problems.is_empty() {
            assert_eq!(code, 0, "{name}: {out}{err}");
            continue;
        }
        assert_eq!(code, 2, "{name} passed inspection: {out}{err}");
        for problem in problems {
            assert!(err.contains(problem), "{name}: `{problem}` not in {err}");
        }
        assert!(
            err.contains(&format!("{} problem(s)", problems.len())),
            "{name}: {err}"
        );
    }
}

/// A pipeline reading `data/g.h5` into a model of `input` size.
fn h5_pipeline(input: &str) -> String {
    format!(
        "dataset g {{\n  source hdf5(\"data/g.h5\", images: \"images\", labels: \"ans\")\n  classes 10\n  split holdout(train: 0.5, val: 0.25, test: 0.25, seed: 1)\n}}\n\
         model small(classes) {{\n  input {input}\n  conv 2 3x3 relu\n  maxpool 4\n  flatten\n  dense classes softmax\n}}\n\
         train a {{\n  model small(10)\n  data g.train\n  epochs 1\n}}\n"
    )
}

#[test]
fn check_reads_the_hdf5_header_and_names_file_shapes_and_model() {
    let labels: Vec<u8> = (0..8).collect();
    for (shape, data_shape) in [
        (vec![8, 69, 69], "69 x 69 x 1"),
        (vec![8, 256, 256, 3], "256 x 256 x 3"),
    ] {
        let p = project(&h5_pipeline("69 x 69 x 3"));
        fs::create_dir_all(p.path().join("data")).unwrap();
        write_h5(&p.path().join("data/g.h5"), &shape, None, Some(&labels));
        let (code, out, err) = gpl_in(p.path(), &["check", "p.gpl"]);
        assert_eq!(code, 2, "{shape:?} checked: {out}{err}");
        assert!(err.contains("gpl::shape::input"), "{err}");
        assert!(
            err.contains(&format!(
                "model `small` takes 69 x 69 x 3 but the data is {data_shape}"
            )),
            "{err}"
        );
        assert!(err.contains("data/g.h5"), "the file is named: {err}");
    }
    // A file a run could not load is a check error too, naming the file.
    let p = project(&h5_pipeline("69 x 69 x 3"));
    fs::create_dir_all(p.path().join("data")).unwrap();
    write_h5(
        &p.path().join("data/g.h5"),
        &[4, 69, 69, 3],
        None,
        Some(&[0, 1]),
    );
    let (code, _, err) = gpl_in(p.path(), &["check", "p.gpl"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("gpl::data::file"), "{err}");
    assert!(
        err.contains("holds 4 images but `ans` holds 2 labels"),
        "{err}"
    );
    // The matching file checks.
    write_h5(
        &p.path().join("data/g.h5"),
        &[8, 69, 69, 3],
        None,
        Some(&labels),
    );
    let (code, _, err) = gpl_in(p.path(), &["check", "p.gpl"]);
    assert_eq!(code, 0, "{err}");
}

#[test]
fn resize_in_the_dataset_makes_a_256_pixel_file_fit_a_69_pixel_model() {
    let labels: Vec<u8> = (0..8).collect();
    let pipeline =
        h5_pipeline("69 x 69 x 3").replace("  classes 10\n", "  classes 10\n  resize 69 x 69\n");
    let p = project(&pipeline);
    fs::create_dir_all(p.path().join("data")).unwrap();
    write_h5(
        &p.path().join("data/g.h5"),
        &[8, 256, 256, 3],
        None,
        Some(&labels),
    );
    let (code, _, err) = gpl_in(p.path(), &["check", "p.gpl"]);
    assert_eq!(code, 0, "{err}");
    let (code, out, err) = gpl_in(p.path(), &["run", "p.gpl"]);
    assert_eq!(code, 0, "{out}{err}");
    let summary = fs::read_to_string(p.path().join("runs/p/g/dataset.json")).unwrap();
    assert!(summary.contains("\"shape\":[69,69,3]"), "{summary}");
}
