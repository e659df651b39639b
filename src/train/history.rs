//! Per-epoch training history and its `history.csv`.
//!
//! Epochs are numbered from 1 here and in the CSV (Keras's CSVLogger counts from 0), the
//! way a reader of a report counts them. `lr` is the rate the epoch trained with, before
//! any reduction ReduceLROnPlateau made at its end.

use crate::train::error::{Result, TrainError};
use serde::{Deserialize, Serialize};
use std::path::Path;

// `History` also derives serde for whoever wants it as JSON or YAML; checkpoints store it
// as CSV text instead, whose numbers read back bit-exactly.

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// 1-based.
    pub epoch: usize,
    /// Mean over the epoch's samples of the weighted training loss plus penalties.
    #[serde(with = "crate::train::float_serde::readable")]
    pub loss: f64,
    pub accuracy: f64,
    /// Unweighted crossentropy on the validation set plus penalties (Keras's `val_loss`).
    #[serde(with = "crate::train::float_serde::readable::option")]
    pub val_loss: Option<f64>,
    pub val_accuracy: Option<f64>,
    pub lr: f32,
    /// Wall time of training and validation in this epoch.
    pub seconds: f64,
    /// A detector's validation COCO AP at IoU 0.5 (its `accuracy` columns are NaN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_map50: Option<f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct History {
    pub epochs: Vec<EpochRecord>,
}

const HEADER: &str = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds";
/// A detector's history: the same columns and its validation mAP@0.5 last.
const DETECTOR_HEADER: &str = "epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds,val_map50";

impl History {
    pub fn len(&self) -> usize {
        self.epochs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.epochs.is_empty()
    }

    /// One row per epoch; empty cells where there was no validation set. Numbers are
    /// written in their shortest exact form, so reading the file back gives the same values.
    pub fn to_csv(&self) -> String {
        let detector = self.epochs.iter().any(|r| r.val_map50.is_some());
        let mut out = String::from(if detector { DETECTOR_HEADER } else { HEADER });
        out.push('\n');
        let opt = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
        for r in &self.epochs {
            out.push_str(&format!(
                "{},{},{},{},{},{},{}",
                r.epoch,
                r.loss,
                r.accuracy,
                opt(r.val_loss),
                opt(r.val_accuracy),
                r.lr,
                r.seconds
            ));
            if detector {
                out.push_str(&format!(",{}", opt(r.val_map50)));
            }
            out.push('\n');
        }
        out
    }

    pub fn write_csv(&self, path: &Path) -> Result<()> {
        crate::train::write_atomic(path, self.to_csv().as_bytes())
    }

    pub fn read_csv(path: &Path) -> Result<History> {
        let text = std::fs::read_to_string(path).map_err(|e| TrainError::io("read", path, e))?;
        Self::from_csv(&text, path)
    }

    /// Parses `to_csv`'s output exactly (`path` only names the source in errors).
    pub fn from_csv(text: &str, path: &Path) -> Result<History> {
        let bad = |line: usize, message: String| TrainError::BadHistory {
            path: path.to_path_buf(),
            message: format!("line {line}: {message}"),
        };
        let mut lines = text.lines();
        let columns = match lines.next() {
            Some(HEADER) => 7,
            Some(DETECTOR_HEADER) => 8,
            _ => return Err(bad(1, format!("the header must be `{HEADER}`"))),
        };
        let mut epochs = Vec::new();
        for (i, line) in lines.enumerate() {
            let cells: Vec<&str> = line.split(',').collect();
            if cells.len() != columns {
                return Err(bad(
                    i + 2,
                    format!("{} cells, expected {columns}", cells.len()),
                ));
            }
            let num = |s: &str| {
                crate::train::float_serde::parse(s)
                    .ok_or_else(|| bad(i + 2, format!("`{s}` is not a number")))
            };
            let opt = |s: &str| {
                if s.is_empty() {
                    Ok(None)
                } else {
                    num(s).map(Some)
                }
            };
            epochs.push(EpochRecord {
                epoch: cells[0]
                    .parse()
                    .map_err(|_| bad(i + 2, format!("bad epoch `{}`", cells[0])))?,
                loss: num(cells[1])?,
                accuracy: num(cells[2])?,
                val_loss: opt(cells[3])?,
                val_accuracy: opt(cells[4])?,
                // Parsed as f32 directly: the cell is the f32's shortest form.
                lr: cells[5]
                    .parse()
                    .map_err(|_| bad(i + 2, format!("bad rate `{}`", cells[5])))?,
                seconds: num(cells[6])?,
                val_map50: match cells.get(7) {
                    Some(cell) => opt(cell)?,
                    None => None,
                },
            });
        }
        Ok(History { epochs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_round_trips_exactly() {
        let history = History {
            epochs: vec![
                EpochRecord {
                    epoch: 1,
                    loss: 2.302585092994047,
                    accuracy: 0.1,
                    val_loss: Some(f64::INFINITY),
                    val_accuracy: Some(0.125),
                    lr: 1e-3,
                    seconds: 0.25,
                    val_map50: None,
                },
                EpochRecord {
                    epoch: 2,
                    loss: 1.0 / 3.0,
                    accuracy: 0.5,
                    val_loss: None,
                    val_accuracy: None,
                    lr: 5e-4,
                    seconds: 1.5,
                    val_map50: None,
                },
            ],
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.csv");
        history.write_csv(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("epoch,loss,accuracy,val_loss,val_accuracy,lr,seconds\n1,2.302585092994047,0.1,inf,0.125,0.001,0.25\n"), "{text}");
        assert_eq!(History::read_csv(&path).unwrap(), history);
    }

    #[test]
    fn a_detector_history_round_trips_with_its_map_column() {
        let mut history = History {
            epochs: vec![EpochRecord {
                epoch: 1,
                loss: 0.75,
                accuracy: f64::NAN,
                val_loss: Some(0.5),
                val_accuracy: None,
                lr: 1e-3,
                seconds: 2.0,
                val_map50: Some(0.625),
            }],
        };
        let text = history.to_csv();
        assert!(text.starts_with(DETECTOR_HEADER), "{text}");
        assert!(text.ends_with(",0.625\n"), "{text}");
        let back = History::from_csv(&text, Path::new("h.csv")).unwrap();
        assert!(back.epochs[0].accuracy.is_nan());
        history.epochs[0].accuracy = 0.0;
        let mut back = back;
        back.epochs[0].accuracy = 0.0;
        assert_eq!(back, history);
    }
}
