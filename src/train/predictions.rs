//! `predictions.csv`: one row per validation or test sample with its true class and the
//! predicted probability of every class, so anyone can recompute metrics in Python.
//!
//! Columns: `split,index,true,p0,p1,...`; `index` is the sample's position in its split.
//! Probabilities are written in their shortest exact f32 form, so the reader gets back
//! the very numbers the model produced.

use crate::data::ImageSet;
use crate::nn::learner::Learner;
use crate::train::error::{Result, TrainError};
use std::path::Path;

#[derive(Clone, Debug, PartialEq)]
pub struct PredictionRow {
    pub split: String,
    pub index: usize,
    pub truth: u32,
    pub probabilities: Vec<f32>,
}

/// Class probabilities for every image of `set`, `len * classes` row-major, in batches.
pub fn predict_set(
    learner: &mut dyn Learner,
    set: &ImageSet,
    batch_size: usize,
) -> Result<Vec<f32>> {
    let sample_len = set.image_len();
    let batch_size = batch_size.max(1);
    let mut out = Vec::with_capacity(set.len() * learner.classes());
    let mut buffer = Vec::with_capacity(batch_size * sample_len);
    for start in (0..set.len()).step_by(batch_size) {
        let end = (start + batch_size).min(set.len());
        buffer.clear();
        buffer.extend(
            set.images[start * sample_len..end * sample_len]
                .iter()
                .map(|&b| b as f32 / 255.0),
        );
        let probs = learner
            .predict(&buffer, end - start)
            .map_err(TrainError::learner)?;
        if probs.len() != (end - start) * learner.classes() {
            return Err(TrainError::Learner {
                message: format!(
                    "predict returned {} values for {} samples of {} classes",
                    probs.len(),
                    end - start,
                    learner.classes()
                ),
            });
        }
        out.extend_from_slice(&probs);
    }
    Ok(out)
}

/// Rows for one split from its labels and predicted probabilities.
pub fn prediction_rows(
    split: &str,
    labels: &[u32],
    probabilities: &[f32],
    classes: usize,
) -> Vec<PredictionRow> {
    labels
        .iter()
        .zip(probabilities.chunks_exact(classes.max(1)))
        .enumerate()
        .map(|(index, (&truth, p))| PredictionRow {
            split: split.to_string(),
            index,
            truth,
            probabilities: p.to_vec(),
        })
        .collect()
}

pub fn predictions_csv(rows: &[PredictionRow]) -> String {
    let classes = rows.first().map_or(0, |r| r.probabilities.len());
    let mut out = String::from("split,index,true");
    for c in 0..classes {
        out.push_str(&format!(",p{c}"));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&format!("{},{},{}", row.split, row.index, row.truth));
        for p in &row.probabilities {
            out.push_str(&format!(",{p}"));
        }
        out.push('\n');
    }
    out
}

/// Writes the rows atomically. Every row must have the same number of classes.
pub fn write_predictions_csv(path: &Path, rows: &[PredictionRow]) -> Result<()> {
    let classes = rows.first().map_or(0, |r| r.probabilities.len());
    if let Some(row) = rows
        .iter()
        .find(|r| r.probabilities.len() != classes || r.split.contains([',', '\n']))
    {
        return Err(TrainError::BadPredictions {
            path: path.to_path_buf(),
            message: format!(
                "row {} of split `{}` does not fit the table ({classes} classes)",
                row.index, row.split
            ),
        });
    }
    crate::train::write_atomic(path, predictions_csv(rows).as_bytes())
}

pub fn read_predictions_csv(path: &Path) -> Result<Vec<PredictionRow>> {
    let text = std::fs::read_to_string(path).map_err(|e| TrainError::io("read", path, e))?;
    let bad = |line: usize, message: String| TrainError::BadPredictions {
        path: path.to_path_buf(),
        message: format!("line {line}: {message}"),
    };
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').collect();
    if header.len() < 3 || header[..3] != ["split", "index", "true"] {
        return Err(bad(
            1,
            "the header must start with `split,index,true`".into(),
        ));
    }
    let classes = header.len() - 3;
    for (c, name) in header[3..].iter().enumerate() {
        if *name != format!("p{c}") {
            return Err(bad(
                1,
                format!("column {} is `{name}`, expected `p{c}`", c + 4),
            ));
        }
    }
    let mut rows = Vec::new();
    for (i, line) in lines.enumerate() {
        let line_no = i + 2;
        let cells: Vec<&str> = line.split(',').collect();
        if cells.len() != classes + 3 {
            return Err(bad(
                line_no,
                format!("{} cells, expected {}", cells.len(), classes + 3),
            ));
        }
        let probabilities = cells[3..]
            .iter()
            .map(|s| {
                s.parse::<f32>()
                    .map_err(|_| bad(line_no, format!("`{s}` is not a probability")))
            })
            .collect::<Result<Vec<f32>>>()?;
        rows.push(PredictionRow {
            split: cells[0].to_string(),
            index: cells[1]
                .parse()
                .map_err(|_| bad(line_no, format!("bad index `{}`", cells[1])))?,
            truth: cells[2]
                .parse()
                .map_err(|_| bad(line_no, format!("bad class `{}`", cells[2])))?,
            probabilities,
        });
    }
    Ok(rows)
}
