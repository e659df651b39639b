//! What one stage is, as the planner sees it: the generic shape every stage kind maps onto.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A stage's name inside one pipeline (`scratch`, `galaxy10.test`, ...).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct StageId(pub String);

impl StageId {
    pub fn new(name: impl Into<String>) -> Self {
        StageId(name.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name as one safe path component (for `runs/<pipeline>/<stage>/`).
    pub fn file_name(&self) -> String {
        safe_file_name(&self.0)
    }
}

impl fmt::Display for StageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for StageId {
    fn from(s: &str) -> Self {
        StageId(s.to_string())
    }
}

/// Keeps letters, digits, `.`, `_` and `-`; everything else becomes `_`, so a name never
/// escapes its folder.
pub fn safe_file_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match cleaned.as_str() {
        "" | "." | ".." => format!("_{cleaned}"),
        _ => cleaned,
    }
}

/// One stage of a plan. `config` is the canonical resolved configuration: what the stage
/// computes from, with every default filled in, and nothing that does not change its result
/// (no comments, no source positions).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageSpec {
    pub id: StageId,
    /// Which executor runs it (`dataset`, `train`, `evaluate`, ...).
    pub kind: String,
    pub config: serde_json::Value,
    /// Stages whose outputs this one reads, in the order the executor expects them.
    pub inputs: Vec<StageId>,
    /// Files read from outside the cache (data files): their content is hashed. Relative
    /// paths are relative to the project root.
    pub files: Vec<PathBuf>,
    pub seed: Option<u64>,
    /// Where the stage comes from, for messages (e.g. `pipelines/galaxy10.gpl:76 train scratch`).
    pub label: Option<String>,
}

impl StageSpec {
    /// A spec with no inputs, files, seed or label.
    pub fn new(id: impl Into<String>, kind: impl Into<String>, config: serde_json::Value) -> Self {
        StageSpec {
            id: StageId(id.into()),
            kind: kind.into(),
            config,
            inputs: Vec::new(),
            files: Vec::new(),
            seed: None,
            label: None,
        }
    }

    pub fn with_inputs(mut self, inputs: &[&str]) -> Self {
        self.inputs = inputs.iter().map(|s| StageId::from(*s)).collect();
        self
    }

    pub fn with_files(mut self, files: impl IntoIterator<Item = PathBuf>) -> Self {
        self.files = files.into_iter().collect();
        self
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// `stage 'x' (label)` for messages.
    pub fn describe(&self) -> String {
        match &self.label {
            Some(label) => format!("stage '{}' ({label})", self.id),
            None => format!("stage '{}'", self.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_cannot_escape_their_folder() {
        assert_eq!(safe_file_name("galaxy10.test"), "galaxy10.test");
        assert_eq!(safe_file_name("../etc"), ".._etc");
        assert_eq!(safe_file_name(".."), "_..");
        assert_eq!(safe_file_name("a b/c"), "a_b_c");
    }
}
