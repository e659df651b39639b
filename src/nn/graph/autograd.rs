//! The autograd compiler pass: given the loss nodes (one per model output; the objective is
//! their sum), whether parameter gradients are wanted, and the tensors whose gradients the
//! caller will read, it adds the backward operators to the graph in reverse topological
//! order.
//!
//! A node gets a backward operator only when a gradient must pass through it: it has
//! trainable parameters (and they are wanted), it is a requested tensor, or one of its
//! inputs leads to such a node. Layers below the lowest trainable one (a frozen base)
//! therefore cost no backward work at all, and frozen layers above it only pass the
//! gradient on. A tensor read by several nodes gets the sum of their gradients.

use super::ops::{BackwardRequest, SumGradients, BACKWARD, TRAINABLE};
use super::{Arena, Buffer};
use luminal::op::Operator;
use luminal::prelude::petgraph::algo::toposort;
use luminal::prelude::petgraph::Direction;
use luminal::prelude::{Compiler, Dependency, Graph, NodeIndex, ShapeTracker, ToIdsMut};
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;

pub(crate) struct Autograd {
    arena: Rc<Arena>,
    losses: Vec<NodeIndex>,
    params: bool,
    wrt: Vec<NodeIndex>,
    /// The gradient buffer of each requested tensor, filled by the pass.
    found: RefCell<HashMap<NodeIndex, Buffer>>,
}

impl Autograd {
    pub(crate) fn new(
        arena: Rc<Arena>,
        losses: Vec<NodeIndex>,
        params: bool,
        wrt: Vec<NodeIndex>,
    ) -> Autograd {
        Autograd {
            arena,
            losses,
            params,
            wrt,
            found: RefCell::new(HashMap::new()),
        }
    }

    /// The buffer that holds d loss / d (output 0 of `node`) after each execution, for a
    /// node in `wrt` that the loss depends on.
    pub(crate) fn gradient(&self, node: NodeIndex) -> Option<Buffer> {
        self.found.borrow().get(&node).cloned()
    }
}

/// The shape a forward node's output 0 is read with (a gradient has the same); a loss,
/// read by nobody, has none.
fn output_shape(graph: &Graph, node: NodeIndex) -> ShapeTracker {
    graph
        .graph
        .edges_directed(node, Direction::Outgoing)
        .find_map(|e| e.weight().as_data().map(|(_, _, s)| s))
        .unwrap_or_else(|| ShapeTracker::new(&[]))
}

/// Adds `op` reading `inputs` (node, output, shape) in order; returns its node.
fn add(
    graph: &mut Graph,
    op: Box<dyn Operator>,
    inputs: &[(NodeIndex, u8, ShapeTracker)],
) -> NodeIndex {
    let node = graph.graph.add_node(op);
    for (k, &(source, output, shape)) in inputs.iter().enumerate() {
        graph.graph.add_edge(
            source,
            node,
            Dependency::Data {
                input_order: k as u8,
                output_order: output,
                shape,
            },
        );
    }
    node
}

impl Autograd {
    fn trainable(&self, graph: &mut Graph, node: NodeIndex) -> bool {
        self.params
            && graph
                .node_custom::<bool, _>(node, TRAINABLE, ())
                .unwrap_or(false)
    }

    /// Asks `node` for its backward operator and adds it, reading `dy` (if any), the
    /// node's inputs and its output; records the gradients it produces in `pending`.
    /// Nothing is added when the node has no backward operator or nothing to compute.
    fn add_backward(
        &self,
        graph: &mut Graph,
        node: NodeIndex,
        dy: Option<(NodeIndex, u8, ShapeTracker)>,
        needs: &HashSet<NodeIndex>,
        pending: &mut HashMap<NodeIndex, Vec<(NodeIndex, u8)>>,
    ) {
        let forward_reads = graph.get_sources(node);
        let wanted: Vec<bool> = forward_reads
            .iter()
            .map(|(s, _, _)| needs.contains(s))
            .collect();
        if !wanted.contains(&true) && !self.trainable(graph, node) {
            return;
        }
        let request = BackwardRequest {
            inputs: wanted.clone(),
            params: self.params,
        };
        let Some(op) = graph.node_custom::<Box<dyn Operator>, _>(node, BACKWARD, request) else {
            return;
        };
        let out_shape = output_shape(graph, node);
        let reads: Vec<_> = dy
            .into_iter()
            .chain(forward_reads.iter().copied())
            .chain(std::iter::once((node, 0, out_shape)))
            .collect();
        let back = add(graph, op, &reads);
        // The backward operator's outputs: one per wanted input, in input order.
        let wanted_sources = forward_reads.iter().zip(&wanted).filter(|(_, w)| **w);
        for (output, ((source, _, _), _)) in wanted_sources.enumerate() {
            pending
                .entry(*source)
                .or_default()
                .push((back, output as u8));
        }
    }
}

impl Compiler for &Autograd {
    fn compile<T: ToIdsMut>(&self, graph: &mut Graph, _: T) {
        let order = toposort(&graph.graph, None).expect("model graphs are acyclic");
        // Nodes whose output gradient somebody needs.
        let mut needs = HashSet::new();
        for &node in &order {
            let inputs_need = graph
                .get_sources(node)
                .iter()
                .any(|(s, _, _)| needs.contains(s));
            if inputs_need || self.wrt.contains(&node) || self.trainable(graph, node) {
                needs.insert(node);
            }
        }
        // Gradient contributions per forward node, filled from the loss down.
        let mut pending = HashMap::new();
        for &loss in &self.losses {
            self.add_backward(graph, loss, None, &needs, &mut pending);
        }
        for &node in order.iter().rev() {
            let Some(contributions) = pending.remove(&node) else {
                continue;
            };
            let shape = output_shape(graph, node);
            let requested = self.wrt.contains(&node);
            let dy = if contributions.len() == 1 && !requested {
                let (back, output) = contributions[0];
                (back, output, shape)
            } else {
                // Several readers: their sum. A requested gradient: a copy the caller
                // keeps, since the node's own backward overwrites its input.
                let len = shape.n_elements().to_usize().expect("static shapes");
                let out = self.arena.buffer(len);
                let reads: Vec<_> = contributions.iter().map(|&(b, o)| (b, o, shape)).collect();
                let sum = add(graph, Box::new(SumGradients { out: out.clone() }), &reads);
                if requested {
                    self.found.borrow_mut().insert(node, out);
                }
                (sum, 0, shape)
            };
            self.add_backward(graph, node, Some(dy), &needs, &mut pending);
        }
    }
}
