//! The plan: stage specs checked into a petgraph DAG, with a deterministic topological order
//! (Kahn's algorithm, ties broken by the order the specs were given in).

use super::fingerprint::{stage_fingerprint, ContentHash, Fingerprint};
use super::spec::{StageId, StageSpec};
use miette::Diagnostic;
use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap};
use thiserror::Error;

#[derive(Debug, Error, Diagnostic, PartialEq)]
pub enum PlanError {
    #[error("two stages are both named '{stage}'")]
    #[diagnostic(
        code(gpl::plan::duplicate_stage),
        help("stage names must be unique within a pipeline")
    )]
    DuplicateStage { stage: StageId },

    #[error("stage '{stage}' reads '{input}', which is not a stage of this pipeline")]
    #[diagnostic(
        code(gpl::plan::unknown_input),
        help("define '{input}' or remove it from the inputs of '{stage}'")
    )]
    UnknownInput { stage: StageId, input: StageId },

    #[error("stages depend on each other in a cycle: {}", cycle.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" -> "))]
    #[diagnostic(
        code(gpl::plan::cycle),
        help("a stage cannot use its own results, directly or through other stages")
    )]
    Cycle { cycle: Vec<StageId> },

    #[error("there is no stage named '{stage}'{}", suggestion.as_ref().map(|s| format!("; did you mean '{s}'?")).unwrap_or_default())]
    #[diagnostic(
        code(gpl::plan::unknown_stage),
        help("`gpl graph FILE` lists the stages")
    )]
    UnknownStage {
        stage: StageId,
        suggestion: Option<StageId>,
    },
}

/// A checked DAG of stages. Edges point from an input to the stage that reads it.
#[derive(Debug, Clone)]
pub struct Plan {
    graph: DiGraph<StageSpec, ()>,
    index: HashMap<StageId, NodeIndex>,
    order: Vec<NodeIndex>,
}

impl Plan {
    pub fn new(specs: Vec<StageSpec>) -> Result<Plan, PlanError> {
        let mut graph = DiGraph::with_capacity(specs.len(), specs.len());
        let mut index = HashMap::with_capacity(specs.len());
        for spec in specs {
            let id = spec.id.clone();
            let node = graph.add_node(spec);
            if index.insert(id.clone(), node).is_some() {
                return Err(PlanError::DuplicateStage { stage: id });
            }
        }
        let mut edges = Vec::new();
        for node in graph.node_indices() {
            let spec = &graph[node];
            for input in &spec.inputs {
                let Some(&from) = index.get(input) else {
                    return Err(PlanError::UnknownInput {
                        stage: spec.id.clone(),
                        input: input.clone(),
                    });
                };
                edges.push((from, node));
            }
        }
        for (from, to) in edges {
            // One edge per (input, stage) pair even if an input is listed twice.
            if graph.find_edge(from, to).is_none() {
                graph.add_edge(from, to, ());
            }
        }
        let order = topological_order(&graph)?;
        Ok(Plan {
            graph,
            index,
            order,
        })
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Stages in topological order (inputs before the stages reading them).
    pub fn stages(&self) -> impl Iterator<Item = &StageSpec> + '_ {
        self.order.iter().map(move |&n| &self.graph[n])
    }

    pub fn get(&self, id: &StageId) -> Option<&StageSpec> {
        self.index.get(id).map(|&n| &self.graph[n])
    }

    /// The position of a stage in [`Plan::stages`].
    pub fn position(&self, id: &StageId) -> Option<usize> {
        let node = self.index.get(id)?;
        self.order.iter().position(|n| n == node)
    }

    /// The stage, or an error that suggests the closest name.
    pub fn require(&self, id: &StageId) -> Result<&StageSpec, PlanError> {
        self.get(id).ok_or_else(|| PlanError::UnknownStage {
            stage: id.clone(),
            suggestion: closest_name(id.as_str(), self.stages().map(|s| &s.id)),
        })
    }

    /// Stages that read `id`'s outputs directly.
    pub fn dependents(&self, id: &StageId) -> Vec<&StageId> {
        let Some(&node) = self.index.get(id) else {
            return Vec::new();
        };
        let mut out: Vec<&StageId> = self
            .graph
            .neighbors_directed(node, Direction::Outgoing)
            .map(|n| &self.graph[n].id)
            .collect();
        out.sort();
        out
    }

    /// Every stage `id` depends on, directly or not (without `id`).
    pub fn ancestors(&self, id: &StageId) -> BTreeSet<StageId> {
        self.reach(id, Direction::Incoming)
    }

    /// Every stage that depends on `id`, directly or not (without `id`).
    pub fn descendants(&self, id: &StageId) -> BTreeSet<StageId> {
        self.reach(id, Direction::Outgoing)
    }

    fn reach(&self, id: &StageId, direction: Direction) -> BTreeSet<StageId> {
        let mut seen = BTreeSet::new();
        let Some(&start) = self.index.get(id) else {
            return seen;
        };
        let mut stack = vec![start];
        while let Some(node) = stack.pop() {
            for next in self.graph.neighbors_directed(node, direction) {
                if seen.insert(self.graph[next].id.clone()) {
                    stack.push(next);
                }
            }
        }
        seen
    }

    /// Stages no other stage reads from.
    pub fn roots(&self) -> Vec<&StageSpec> {
        self.stages().filter(|s| s.inputs.is_empty()).collect()
    }

    pub fn graph(&self) -> &DiGraph<StageSpec, ()> {
        &self.graph
    }

    /// A key per stage that needs no cache and no file contents: the fingerprint computed
    /// with the inputs' static keys in place of their output digests and the files' paths in
    /// place of their contents. Equal static keys mean equal fingerprints (given the same
    /// data files), so two versions of a program can be compared without running anything:
    /// "this edit touches these stages". Snapshot tests use it; the cache does not.
    pub fn static_keys(&self) -> BTreeMap<StageId, Fingerprint> {
        let mut keys: BTreeMap<StageId, Fingerprint> = BTreeMap::new();
        for spec in self.stages() {
            let inputs: Vec<(StageId, ContentHash)> = spec
                .inputs
                .iter()
                .filter_map(|id| {
                    keys.get(id).map(|k| {
                        (
                            id.clone(),
                            ContentHash::from_hash(blake3::hash(k.as_str().as_bytes())),
                        )
                    })
                })
                .collect();
            let files: Vec<(std::path::PathBuf, ContentHash)> = spec
                .files
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        ContentHash::from_hash(blake3::hash(p.to_string_lossy().as_bytes())),
                    )
                })
                .collect();
            keys.insert(spec.id.clone(), stage_fingerprint(spec, &inputs, &files));
        }
        keys
    }
}

fn topological_order(graph: &DiGraph<StageSpec, ()>) -> Result<Vec<NodeIndex>, PlanError> {
    let mut remaining: Vec<usize> = graph
        .node_indices()
        .map(|n| graph.neighbors_directed(n, Direction::Incoming).count())
        .collect();
    // Min-heap on the node index, i.e. on the order the specs were given in.
    let mut ready: BinaryHeap<std::cmp::Reverse<usize>> = remaining
        .iter()
        .enumerate()
        .filter(|(_, &d)| d == 0)
        .map(|(i, _)| std::cmp::Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(graph.node_count());
    while let Some(std::cmp::Reverse(i)) = ready.pop() {
        let node = NodeIndex::new(i);
        order.push(node);
        for next in graph.neighbors_directed(node, Direction::Outgoing) {
            remaining[next.index()] -= 1;
            if remaining[next.index()] == 0 {
                ready.push(std::cmp::Reverse(next.index()));
            }
        }
    }
    if order.len() == graph.node_count() {
        return Ok(order);
    }
    Err(PlanError::Cycle {
        cycle: find_cycle(graph, &remaining),
    })
}

/// Walks backwards from a stage left over by Kahn's algorithm until a stage repeats.
fn find_cycle(graph: &DiGraph<StageSpec, ()>, remaining: &[usize]) -> Vec<StageId> {
    let Some(start) = remaining.iter().position(|&d| d > 0) else {
        return Vec::new();
    };
    let mut path = vec![NodeIndex::new(start)];
    loop {
        let current = path[path.len() - 1];
        // A leftover stage always has a leftover input: that is why it was left over.
        let Some(previous) = graph
            .neighbors_directed(current, Direction::Incoming)
            .find(|n| remaining[n.index()] > 0)
        else {
            return path.iter().map(|&n| graph[n].id.clone()).collect();
        };
        if let Some(pos) = path.iter().position(|&n| n == previous) {
            let mut cycle: Vec<StageId> = path[pos..]
                .iter()
                .rev()
                .map(|&n| graph[n].id.clone())
                .collect();
            cycle.push(cycle[0].clone());
            return cycle;
        }
        path.push(previous);
    }
}

/// The candidate within edit distance 2 (or a third of the name) closest to `name`.
pub fn closest_name<'a>(
    name: &str,
    candidates: impl Iterator<Item = &'a StageId>,
) -> Option<StageId> {
    let limit = (name.chars().count() / 3).max(2);
    candidates
        .map(|c| (edit_distance(name, c.as_str()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)))
        .map(|(_, c)| c.clone())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(id: &str, inputs: &[&str]) -> StageSpec {
        StageSpec::new(id, "toy", json!({})).with_inputs(inputs)
    }

    #[test]
    fn orders_inputs_first_and_keeps_given_order_for_ties() {
        let plan = Plan::new(vec![spec("c", &["a", "b"]), spec("b", &[]), spec("a", &[])]).unwrap();
        let ids: Vec<&str> = plan.stages().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["b", "a", "c"]);
        assert_eq!(plan.ancestors(&"c".into()).len(), 2);
        assert_eq!(
            plan.descendants(&"a".into())
                .into_iter()
                .collect::<Vec<_>>(),
            [StageId::from("c")]
        );
    }

    #[test]
    fn rejects_unknown_inputs_duplicates_and_cycles() {
        assert_eq!(
            Plan::new(vec![spec("a", &["zz"])]).unwrap_err(),
            PlanError::UnknownInput {
                stage: "a".into(),
                input: "zz".into()
            }
        );
        assert_eq!(
            Plan::new(vec![spec("a", &[]), spec("a", &[])]).unwrap_err(),
            PlanError::DuplicateStage { stage: "a".into() }
        );
        let err = Plan::new(vec![
            spec("x", &[]),
            spec("a", &["c", "x"]),
            spec("b", &["a"]),
            spec("c", &["b"]),
        ])
        .unwrap_err();
        let PlanError::Cycle { cycle } = &err else {
            panic!("expected a cycle, got {err:?}")
        };
        assert_eq!(cycle.len(), 4, "{cycle:?}");
        assert_eq!(cycle.first(), cycle.last());
        assert!(err.to_string().contains("->"));
        assert!(matches!(
            Plan::new(vec![spec("s", &["s"])]),
            Err(PlanError::Cycle { .. })
        ));
    }

    #[test]
    fn static_keys_change_for_the_edited_stage_and_its_downstream_only() {
        let build = |patience: u64| {
            Plan::new(vec![
                StageSpec::new("data", "dataset", json!({"path": "g.h5"})),
                StageSpec::new("train", "train", json!({"patience": patience, "epochs": 3}))
                    .with_inputs(&["data"]),
                StageSpec::new("other", "train", json!({})).with_inputs(&["data"]),
                StageSpec::new("eval", "evaluate", json!({})).with_inputs(&["train"]),
            ])
            .unwrap()
            .static_keys()
        };
        let (before, after) = (build(5), build(6));
        let changed: Vec<&str> = before
            .keys()
            .filter(|k| before[*k] != after[*k])
            .map(|k| k.as_str())
            .collect();
        assert_eq!(changed, ["eval", "train"]);
        assert_eq!(build(5), before);
    }

    #[test]
    fn unknown_stage_suggests_the_closest_name() {
        let plan = Plan::new(vec![spec("scratch", &[]), spec("vgg_ft", &[])]).unwrap();
        let err = plan.require(&"scrach".into()).unwrap_err();
        assert!(err.to_string().contains("did you mean 'scratch'"), "{err}");
    }
}
