//! `gpl graph`: the plan as a terminal tree or as Graphviz DOT, each stage marked with its
//! cache state.

use super::fingerprint::Fingerprint;
use super::graph::Plan;
use super::spec::{StageId, StageSpec};
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write;

/// What a stage would do if the plan ran now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StageState {
    /// A verified cache entry exists for its fingerprint.
    Cached(Fingerprint),
    /// Its fingerprint is known (or cannot be computed, e.g. a file is missing) and no valid
    /// entry exists: it would run.
    Dirty {
        fingerprint: Option<Fingerprint>,
        reason: String,
    },
    /// An input is dirty, so its fingerprint is known only once that input has run (it may
    /// still turn out cached if the input's outputs come out byte-identical).
    AfterUpstream,
}

impl StageState {
    pub fn label(&self) -> &'static str {
        match self {
            StageState::Cached(_) => "cached",
            StageState::Dirty { .. } => "dirty",
            StageState::AfterUpstream => "dirty (upstream)",
        }
    }

    pub fn fingerprint(&self) -> Option<&Fingerprint> {
        match self {
            StageState::Cached(fp) => Some(fp),
            StageState::Dirty { fingerprint, .. } => fingerprint.as_ref(),
            StageState::AfterUpstream => None,
        }
    }
}

fn describe(spec: &StageSpec, states: &BTreeMap<StageId, StageState>) -> String {
    let mut line = format!("{}  [{}]", spec.id, spec.kind);
    match states.get(&spec.id) {
        Some(state) => {
            let _ = write!(line, "  {}", state.label());
            if let Some(fp) = state.fingerprint() {
                let _ = write!(line, "  {}", fp.short());
            }
            if let StageState::Dirty { reason, .. } = state {
                let _ = write!(line, "  ({reason})");
            }
        }
        None => line.push_str("  ?"),
    }
    line
}

/// The DAG as an indented tree from the stages without inputs. A stage with several inputs
/// appears under each; its subtree is drawn the first time and marked `(*)` afterwards.
pub fn render_tree(plan: &Plan, states: &BTreeMap<StageId, StageState>) -> String {
    let mut out = String::new();
    let mut drawn = HashSet::new();
    for root in plan.roots() {
        draw(plan, states, root, "", None, &mut drawn, &mut out);
    }
    out
}

fn draw<'a>(
    plan: &'a Plan,
    states: &BTreeMap<StageId, StageState>,
    spec: &'a StageSpec,
    prefix: &str,
    is_last: Option<bool>,
    drawn: &mut HashSet<&'a StageId>,
    out: &mut String,
) {
    let (branch, child_prefix) = match is_last {
        None => ("", String::new()),
        Some(true) => ("└── ", format!("{prefix}    ")),
        Some(false) => ("├── ", format!("{prefix}│   ")),
    };
    if !drawn.insert(&spec.id) {
        let _ = writeln!(out, "{prefix}{branch}{} (*)", spec.id);
        return;
    }
    let _ = writeln!(out, "{prefix}{branch}{}", describe(spec, states));
    let children: Vec<&StageSpec> = plan
        .stages()
        .filter(|s| s.inputs.contains(&spec.id))
        .collect();
    for (i, child) in children.iter().enumerate() {
        draw(
            plan,
            states,
            child,
            &child_prefix,
            Some(i + 1 == children.len()),
            drawn,
            out,
        );
    }
}

/// Graphviz DOT: one box per stage (green cached, orange dirty, grey waiting on upstream).
pub fn render_dot(plan: &Plan, name: &str, states: &BTreeMap<StageId, StageState>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph {} {{", quote(name));
    out.push_str(
        "  rankdir=LR;\n  node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\"];\n",
    );
    for spec in plan.stages() {
        let state = states.get(&spec.id);
        let (label, color) = match state {
            Some(StageState::Cached(_)) => ("cached", "#c8e6c9"),
            Some(StageState::Dirty { .. }) => ("dirty", "#ffe0b2"),
            Some(StageState::AfterUpstream) => ("dirty (upstream)", "#eeeeee"),
            None => ("?", "#ffffff"),
        };
        let text = format!("{}\n{}\n{}", spec.id, spec.kind, label);
        let _ = writeln!(
            out,
            "  {} [label={}, fillcolor=\"{color}\"];",
            quote(spec.id.as_str()),
            quote(&text)
        );
    }
    for spec in plan.stages() {
        for input in &spec.inputs {
            let _ = writeln!(
                out,
                "  {} -> {};",
                quote(input.as_str()),
                quote(spec.id.as_str())
            );
        }
    }
    out.push_str("}\n");
    out
}

fn quote(text: &str) -> String {
    let mut q = String::with_capacity(text.len() + 2);
    q.push('"');
    for c in text.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn plan() -> Plan {
        Plan::new(vec![
            StageSpec::new("data", "dataset", json!({})),
            StageSpec::new("a", "train", json!({})).with_inputs(&["data"]),
            StageSpec::new("b", "train", json!({})).with_inputs(&["data"]),
            StageSpec::new("eval", "evaluate", json!({})).with_inputs(&["a", "b"]),
        ])
        .unwrap()
    }

    #[test]
    fn tree_draws_shared_stages_once() {
        let fp = Fingerprint::parse(&"0".repeat(64)).unwrap();
        let mut states = BTreeMap::new();
        states.insert(StageId::from("data"), StageState::Cached(fp));
        states.insert(
            StageId::from("a"),
            StageState::Dirty {
                fingerprint: None,
                reason: "not in cache".into(),
            },
        );
        states.insert(StageId::from("b"), StageState::AfterUpstream);
        states.insert(StageId::from("eval"), StageState::AfterUpstream);
        let tree = render_tree(&plan(), &states);
        let expected = "\
data  [dataset]  cached  000000000000
├── a  [train]  dirty  (not in cache)
│   └── eval  [evaluate]  dirty (upstream)
└── b  [train]  dirty (upstream)
    └── eval (*)
";
        assert_eq!(tree, expected);
    }

    #[test]
    fn dot_has_every_node_and_edge() {
        let dot = render_dot(&plan(), "quick \"run\"", &BTreeMap::new());
        assert!(dot.starts_with("digraph \"quick \\\"run\\\"\" {"));
        assert_eq!(dot.matches(" -> ").count(), 4);
        assert!(dot.contains("\"a\" -> \"eval\";"));
    }
}
