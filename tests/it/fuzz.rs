//! Mutation fuzzing on stable Rust, as part of `cargo test`.
//!
//! - The parser and checker: seeded with every `.gpl` file in the repository, each case a
//!   seed with random mutations (bytes flipped, ranges deleted or duplicated, tokens from a
//!   dictionary of the language and of hostile values inserted, lines spliced in from other
//!   seeds). A case is loaded and checked, its diagnostics rendered, its summaries printed,
//!   its stages compiled and, when it parses, its canonical layout printed.
//! - The HDF5 loader: small Galaxy10 files built with random shapes, dtypes, label and pixel
//!   values and missing datasets, and valid files with their bytes mutated, each read by the
//!   header reader, the loader, `inspect` and the validation.
//!
//! Passing means nothing panicked; errors are the expected outcome of most cases. The default
//! is a smoke run of a few seconds; `GPL_FUZZ_CASES=N` sets the cases per target and
//! `GPL_FUZZ_SEED=S` the random seed (README, "Fuzzing"). A panicking input is written to
//! `target/fuzz-crashes/` and the test fails naming it; fixed crashes live on as files in
//! `tests/fuzz/regressions/` (`.gpl` and `.h5`), replayed by every run.

use gpl::check::{load_program, summary::summary};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::fs;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

const DEFAULT_CASES: usize = 400;
const DEFAULT_H5_CASES: usize = 60;

fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every `.gpl` under the repository (target/ and hidden folders aside), sorted.
fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let mut found = Vec::new();
    let mut stack = vec![repo()];
    while let Some(dir) = stack.pop() {
        for item in fs::read_dir(&dir).unwrap().flatten() {
            let path = item.path();
            let name = item.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') || name == "target" {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if name.ends_with(".gpl") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
        .into_iter()
        .map(|p| {
            let bytes = fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect()
}

/// Words of the language and values that have broken parsers and checkers before.
const DICTIONARY: &[&str] = &[
    "dataset",
    "model",
    "train",
    "evaluate",
    "crossval",
    "ensemble",
    "balance",
    "augment",
    "callbacks",
    "explain",
    "search",
    "chain",
    "detect",
    "profile",
    "import",
    "use",
    "input",
    "conv",
    "dense",
    "maxpool",
    "flatten",
    "dropout",
    "batchnorm",
    "for",
    "in",
    "x",
    "from",
    "on",
    "source",
    "split",
    "holdout",
    "kfold",
    "drop",
    "class",
    "merge",
    "into",
    "epochs",
    "batch",
    "optimizer",
    "adam(lr: 1e-3)",
    "sgd",
    "seed",
    "data",
    "models",
    "members",
    "weights",
    "freeze",
    "until",
    "name:",
    "relu",
    "softmax",
    "same",
    "{",
    "}",
    "(",
    ")",
    "[",
    "]",
    ",",
    ":",
    ";",
    "=",
    ".",
    "\n",
    "\n\n",
    " ",
    "#",
    "\"",
    "\"\"",
    "\"stdlib/cnn.gpl\"",
    "\"/etc/passwd\"",
    "\"../../x.gpl\"",
    "0",
    "-1",
    "1e39",
    "1e-50",
    "-0",
    "NaN",
    "inf",
    "1e308",
    "18446744073709551616",
    "99999999999999999999999",
    "4294967296",
    "0.0000001",
    "65536",
    "3x3",
    "0x0",
    "69 x 69 x 3",
    "99999 x 99999 x 99999",
    "é",
    "\u{200b}",
    "\u{0}",
    "\t",
    "\r\n",
    "𝕏",
];

fn mutate(rng: &mut ChaCha8Rng, seed: &[u8], others: &[(PathBuf, Vec<u8>)]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..rng.gen_range(1..=6) {
        let len = out.len();
        let at = if len == 0 { 0 } else { rng.gen_range(0..=len) };
        match rng.gen_range(0..8) {
            0 if len > 0 => {
                let i = rng.gen_range(0..len);
                out[i] ^= 1 << rng.gen_range(0..8);
            }
            1 if len > 0 => {
                let end = (at + rng.gen_range(1..64)).min(len);
                out.drain(at.min(end)..end);
            }
            2 if len > 0 => {
                let end = (at + rng.gen_range(1..200)).min(len);
                let piece = out[at.min(end)..end].to_vec();
                let to = rng.gen_range(0..=len);
                out.splice(to..to, piece);
            }
            3 => {
                let word = DICTIONARY[rng.gen_range(0..DICTIONARY.len())];
                out.splice(at..at, word.bytes());
            }
            4 => {
                // A line from another seed.
                let (_, other) = &others[rng.gen_range(0..others.len())];
                let lines: Vec<&[u8]> = other.split(|&b| b == b'\n').collect();
                let line = lines[rng.gen_range(0..lines.len())];
                let mut piece = line.to_vec();
                piece.push(b'\n');
                out.splice(at..at, piece);
            }
            5 => out.truncate(at),
            6 => {
                // A very long run of one character: long lines, deep nesting, long names.
                let fill = *b" a{(0[\"".get(rng.gen_range(0..7)).unwrap_or(&b' ');
                let count = rng.gen_range(1..70_000);
                out.splice(at..at, std::iter::repeat_n(fill, count));
            }
            _ => {
                let word = DICTIONARY[rng.gen_range(0..DICTIONARY.len())];
                let end = (at + word.len()).min(len);
                out.splice(at..end, word.bytes());
            }
        }
    }
    out
}

/// A project folder with the stdlib, so relative and `stdlib/` imports of the seeds resolve.
fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for folder in ["stdlib", "pipelines"] {
        fs::create_dir_all(dir.path().join(folder)).unwrap();
    }
    for item in fs::read_dir(repo().join("stdlib")).unwrap().flatten() {
        fs::copy(
            item.path(),
            dir.path().join("stdlib").join(item.file_name()),
        )
        .unwrap();
    }
    dir
}

/// Everything gpl does with a pipeline short of running it. Panics are the findings.
fn exercise_pipeline(path: &Path) {
    for profile in [None, Some("quick")] {
        match load_program(path, profile) {
            Ok(program) => {
                for train in program.trains() {
                    let _ = summary(&train.name, &train.ir);
                }
                match gpl::stages::compile(&program) {
                    Ok(compiled) => {
                        let _ = compiled.plan.stages().count();
                    }
                    Err(d) => {
                        let _ = d.render_plain();
                    }
                }
            }
            Err(d) => {
                let _ = d.render_plain();
                let _ = d.render();
            }
        }
    }
    if let Ok((_, file)) = gpl::check::parse_for_fmt(path) {
        let _ = gpl::lang::fmt::format_file(&file);
    }
}

/// Runs `f` on each input; returns the ones that panicked, written to target/fuzz-crashes/.
/// The input being tried is kept in `target/fuzz-crashes/current-<target>` until the run
/// ends, so an abort (which no `catch_unwind` sees) leaves it behind.
fn find_crashes(
    target: &str,
    inputs: impl Iterator<Item = (String, Vec<u8>)>,
    f: impl Fn(&[u8]) + Sync,
) -> Vec<PathBuf> {
    let crash_dir = repo().join("target/fuzz-crashes");
    fs::create_dir_all(&crash_dir).unwrap();
    let current = crash_dir.join(format!("current-{target}"));
    let mut crashes = Vec::new();
    for (name, bytes) in inputs {
        fs::write(&current, &bytes).unwrap();
        if catch_unwind(AssertUnwindSafe(|| f(&bytes))).is_err() {
            let saved = crash_dir.join(name);
            fs::write(&saved, &bytes).unwrap();
            crashes.push(saved);
        }
    }
    let _ = fs::remove_file(&current);
    crashes
}

fn regressions(ext: &str) -> Vec<(String, Vec<u8>)> {
    let dir = repo().join("tests/fuzz/regressions");
    let mut out: Vec<(String, Vec<u8>)> = fs::read_dir(&dir)
        .map(|items| {
            items
                .flatten()
                .filter(|i| i.file_name().to_string_lossy().ends_with(ext))
                .map(|i| {
                    (
                        i.file_name().to_string_lossy().into_owned(),
                        fs::read(i.path()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn parser_and_checker_survive_mutated_pipelines() {
    let cases = setting("GPL_FUZZ_CASES", DEFAULT_CASES as u64) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(setting("GPL_FUZZ_SEED", 13));
    let seeds = seeds();
    assert!(seeds.len() >= 40, "only {} seed files", seeds.len());
    let project = project();
    let path = project.path().join("pipelines/case.gpl");
    let mut inputs: Vec<(String, Vec<u8>)> = regressions(".gpl");
    inputs.extend(seeds.iter().map(|(p, b)| {
        (
            p.file_name().unwrap().to_string_lossy().into_owned(),
            b.clone(),
        )
    }));
    for n in 0..cases {
        let (_, seed) = &seeds[rng.gen_range(0..seeds.len())];
        inputs.push((format!("case-{n}.gpl"), mutate(&mut rng, seed, &seeds)));
    }
    let total = inputs.len();
    let crashes = find_crashes("gpl", inputs.into_iter(), |bytes| {
        fs::write(&path, bytes).unwrap();
        exercise_pipeline(&path);
    });
    eprintln!(
        "fuzz: {total} pipelines checked, {} panicked",
        crashes.len()
    );
    assert!(crashes.is_empty(), "inputs that panicked: {crashes:?}");
}

/// A Galaxy10-like file with random structure: rank, sizes, dtypes, values, datasets.
fn random_h5(rng: &mut ChaCha8Rng, path: &Path) {
    let file = hdf5::File::create(path).unwrap();
    let n = rng.gen_range(0..6usize);
    let rank = rng.gen_range(0..6usize);
    let mut shape: Vec<usize> = (0..rank).map(|_| rng.gen_range(0..6)).collect();
    if let Some(first) = shape.first_mut() {
        *first = n;
    }
    let len: usize = shape.iter().product();
    match rng.gen_range(0..5) {
        0 => {
            let values: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let ds = file
                .new_dataset::<u8>()
                .shape(shape.clone())
                .create("images")
                .unwrap();
            ds.write_raw(&values).unwrap();
        }
        1 => {
            let specials = [f32::NAN, f32::INFINITY, -1.0, 0.5, 255.0, 256.0, 1e30, 1.0];
            let values: Vec<f32> = (0..len)
                .map(|_| specials[rng.gen_range(0..specials.len())])
                .collect();
            let ds = file
                .new_dataset::<f32>()
                .shape(shape.clone())
                .create("images")
                .unwrap();
            ds.write_raw(&values).unwrap();
        }
        2 => {
            let values: Vec<f64> = (0..len).map(|_| rng.gen_range(-2.0..300.0)).collect();
            let ds = file
                .new_dataset::<f64>()
                .shape(shape.clone())
                .create("images")
                .unwrap();
            ds.write_raw(&values).unwrap();
        }
        3 => {
            let values: Vec<i16> = (0..len).map(|_| rng.gen()).collect();
            let ds = file
                .new_dataset::<i16>()
                .shape(shape.clone())
                .create("images")
                .unwrap();
            ds.write_raw(&values).unwrap();
        }
        _ => {} // no images at all
    }
    let label_n = if rng.gen_bool(0.8) {
        n
    } else {
        rng.gen_range(0..6)
    };
    let label_shape: Vec<usize> = match rng.gen_range(0..4) {
        0 => vec![label_n, 1],
        1 => vec![label_n, 2],
        _ => vec![label_n],
    };
    let label_len: usize = label_shape.iter().product();
    match rng.gen_range(0..5) {
        0 | 1 => {
            let values: Vec<u8> = (0..label_len).map(|_| rng.gen_range(0..12)).collect();
            let ds = file
                .new_dataset::<u8>()
                .shape(label_shape)
                .create("ans")
                .unwrap();
            ds.write_raw(&values).unwrap();
        }
        2 => {
            let values: Vec<i64> = (0..label_len).map(|_| rng.gen_range(-3..12)).collect();
            let ds = file
                .new_dataset::<i64>()
                .shape(label_shape)
                .create("ans")
                .unwrap();
            ds.write_raw(&values).unwrap();
        }
        3 => {
            let values: Vec<f32> = (0..label_len).map(|_| rng.gen_range(0.0..10.0)).collect();
            let ds = file
                .new_dataset::<f32>()
                .shape(label_shape)
                .create("ans")
                .unwrap();
            ds.write_raw(&values).unwrap();
        }
        _ => {} // no labels
    }
}

/// Everything gpl does with an HDF5 file. Panics are the findings.
fn exercise_h5(path: &Path) {
    let _ = gpl::data::hdf5::read_header(path, "images", "ans");
    let _ = gpl::data::hdf5::load_galaxy10(path, "images", "ans");
    let _ = gpl::data::hdf5::inspect(path);
    let _ = gpl::data::hdf5::validate_galaxy10(path, "images", "ans");
}

#[test]
fn hdf5_loader_survives_malformed_files() {
    let cases = setting("GPL_FUZZ_H5_CASES", DEFAULT_H5_CASES as u64) as usize;
    let mut rng = ChaCha8Rng::seed_from_u64(setting("GPL_FUZZ_SEED", 13));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("case.h5");
    // Structured cases: files a careless export could produce.
    let mut inputs: Vec<(String, Vec<u8>)> = regressions(".h5");
    for n in 0..cases {
        random_h5(&mut rng, &path);
        inputs.push((format!("structured-{n}.h5"), fs::read(&path).unwrap()));
    }
    // Byte-level cases: a valid file with its bytes flipped, zeroed or cut.
    let valid = gpl::data::ImageSet {
        height: 8,
        width: 8,
        channels: 3,
        images: (0..4 * 8 * 8 * 3).map(|i| (i % 251) as u8).collect(),
        labels: vec![0, 1, 2, 3],
        class_names: (0..10).map(|c| format!("class {c}")).collect(),
    };
    gpl::data::hdf5::write_galaxy10_h5(&valid, &path).unwrap();
    let original = fs::read(&path).unwrap();
    for n in 0..cases {
        let mut bytes = original.clone();
        for _ in 0..rng.gen_range(1..8) {
            // Mostly in the first 4 KiB, where the superblock and object headers live.
            let limit = if rng.gen_bool(0.8) {
                bytes.len().min(4096)
            } else {
                bytes.len()
            };
            let at = rng.gen_range(0..limit);
            match rng.gen_range(0..4) {
                0 => bytes[at] ^= 1 << rng.gen_range(0..8),
                1 => bytes[at] = 0xff,
                2 => bytes[at] = 0,
                _ => bytes.truncate(at.max(8)),
            }
        }
        inputs.push((format!("mutated-{n}.h5"), bytes));
    }
    let total = inputs.len();
    let crashes = find_crashes("h5", inputs.into_iter(), |bytes| {
        fs::write(&path, bytes).unwrap();
        exercise_h5(&path);
    });
    eprintln!("fuzz: {total} HDF5 files read, {} panicked", crashes.len());
    assert!(crashes.is_empty(), "inputs that panicked: {crashes:?}");
}
