//! Training stages: the epoch loop, Keras-exact callbacks, history, checkpoints, predictions,
//! weight import/export and freezing.
//!
//! Everything here talks to the compute engine through `nn::learner::Learner` only, so it is
//! tested with the small learner in `testing` and runs unchanged on `nn::Network`.

pub mod callbacks;
pub mod detection;
pub mod error;
pub mod fit;
pub mod history;
pub mod predictions;
pub mod testing;
pub mod weights;

pub use error::TrainError;

use std::path::Path;

/// Writes `bytes` to `path` through a temporary file in the same directory and a rename,
/// so readers never see a half-written file.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> error::Result<()> {
    crate::fsutil::write_atomic(path, bytes).map_err(|e| TrainError::io("write", path, e))
}

/// Serde for f64 values that must survive JSON exactly (callback states in checkpoints)
/// or that may be infinite or NaN (a callback's starting "best", a diverged loss).
///
/// Values are written as strings in Rust's shortest round-trip form ("0.1", "inf", "nan"):
/// serde_json's own float parser (without its `float_roundtrip` feature) can be one unit in
/// the last place off, which would break bit-exact resume. Numbers are accepted on input.
pub(crate) mod float_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*value))
    }

    pub fn format(value: f64) -> String {
        if value.is_nan() {
            "nan".into()
        } else if value.is_infinite() {
            if value > 0.0 {
                "inf".into()
            } else {
                "-inf".into()
            }
        } else {
            value.to_string()
        }
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Number(f64),
        Text(String),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Number(v) => Ok(v),
            Repr::Text(t) => {
                parse(&t).ok_or_else(|| serde::de::Error::custom(format!("not a number: {t}")))
            }
        }
    }

    pub fn parse(text: &str) -> Option<f64> {
        match text {
            "nan" => Some(f64::NAN),
            "inf" => Some(f64::INFINITY),
            "-inf" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        }
    }

    /// An f32 (a learning rate) as its shortest decimal string, parsed back as f32 directly.
    pub mod f32_exact {
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(value: &f32, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(&value.to_string())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
            let text = String::deserialize(d)?;
            text.parse()
                .map_err(|_| serde::de::Error::custom(format!("not a number: {text}")))
        }
    }

    /// For public records read by people and other tools: finite values stay JSON
    /// numbers; only non-finite ones become strings.
    pub mod readable {
        use serde::{Deserializer, Serializer};

        pub fn serialize<S: Serializer>(value: &f64, s: S) -> Result<S::Ok, S::Error> {
            if value.is_finite() {
                s.serialize_f64(*value)
            } else {
                s.serialize_str(&super::format(*value))
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            super::deserialize(d)
        }

        pub mod option {
            use serde::{Deserialize, Deserializer, Serializer};

            pub fn serialize<S: Serializer>(value: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
                match value {
                    Some(v) => super::serialize(v, s),
                    None => s.serialize_none(),
                }
            }

            pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
                #[derive(Deserialize)]
                struct Wrapped(#[serde(with = "super")] f64);
                Ok(Option::<Wrapped>::deserialize(d)?.map(|w| w.0))
            }
        }
    }
}
