//! `ProbMatrix`: a model's predicted class probabilities, n samples × C classes, row-major f64.
//! Construction checks the shape and that every value is finite, so the metrics never see NaN.

use serde::{Deserialize, Serialize};

use super::EvalError;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbMatrix {
    rows: usize,
    classes: usize,
    values: Vec<f64>,
}

impl ProbMatrix {
    /// Wraps row-major values; `values.len()` must be `rows * classes`.
    pub fn new(rows: usize, classes: usize, values: Vec<f64>) -> Result<Self, EvalError> {
        if classes == 0 {
            return Err(EvalError::NoClasses { classes });
        }
        if rows.checked_mul(classes) != Some(values.len()) {
            return Err(EvalError::ShapeMismatch {
                values: values.len(),
                rows,
                classes,
            });
        }
        if let Some(at) = values.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::NonFinite {
                row: at / classes,
                class: at % classes,
                value: values[at],
            });
        }
        Ok(Self {
            rows,
            classes,
            values,
        })
    }

    /// Widens f32 model outputs to f64 (exactly), so the metrics match a float64 reference.
    pub fn from_f32(rows: usize, classes: usize, values: &[f32]) -> Result<Self, EvalError> {
        Self::new(
            rows,
            classes,
            values.iter().map(|&v| f64::from(v)).collect(),
        )
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn values(&self) -> &[f64] {
        &self.values
    }

    pub fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.classes..(i + 1) * self.classes]
    }

    /// The scores of one class across all samples.
    pub fn column(&self, class: usize) -> Vec<f64> {
        (0..self.rows)
            .map(|i| self.values[i * self.classes + class])
            .collect()
    }

    /// Predicted class per sample: the first index of the row maximum, as numpy's argmax.
    pub fn argmax(&self) -> Vec<u32> {
        (0..self.rows)
            .map(|i| {
                let row = self.row(i);
                let mut best = 0;
                for (k, &v) in row.iter().enumerate().skip(1) {
                    if v > row[best] {
                        best = k;
                    }
                }
                best as u32
            })
            .collect()
    }

    /// Checks that labels pair with the rows and index a column.
    pub fn check_labels(&self, y_true: &[u32]) -> Result<(), EvalError> {
        if y_true.len() != self.rows {
            return Err(EvalError::LengthMismatch {
                labels: y_true.len(),
                rows: self.rows,
            });
        }
        if self.rows == 0 {
            return Err(EvalError::Empty {
                what: "the prediction set",
            });
        }
        if let Some(sample) = y_true.iter().position(|&y| y as usize >= self.classes) {
            return Err(EvalError::LabelOutOfRange {
                sample,
                label: y_true[sample],
                classes: self.classes,
            });
        }
        Ok(())
    }
}
