//! The autograd pass on a branching model graph, against central finite differences. The
//! input is read by two layers and `a` by the add and the concatenation, so their gradients
//! are sums the pass must add; gradients are asked of the input and of `a`, and the loss is
//! the box regression's smooth-L1 on the concatenation (one positive anchor per sample):
//!
//! ```text
//! input ─┬─ dense a ─┬──────────── add(a, b) ─┐
//!        └─ dense b ─┴─(b)                    ├─ concat(add, a) ── OutputLoss(Boxes)
//!                    a ───────────────────────┘
//! ```

use super::autograd::Autograd;
use super::ops::{Input, LayerForward, LossKind, OutputLoss, Targets};
use super::{Buffer, Context};
use crate::nn::ir::{Activation, LayerOp, LayerSpec, ModelIr, Regularizer, Source};
use crate::nn::model::Model;
use luminal::prelude::{Graph, NodeIndex, ShapeTracker};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::rc::Rc;

const N: usize = 3;
const FEATURES: usize = 4;
/// Two units each: the concatenation is one anchor's 4 box values.
const UNITS: usize = 2;

fn dense(name: &str, from: &[&str]) -> LayerSpec {
    LayerSpec {
        name: Some(name.into()),
        op: LayerOp::Dense {
            units: UNITS,
            activation: Activation::Tanh,
            regularizer: Regularizer::default(),
        },
        from: from.iter().map(|s| s.to_string()).collect(),
    }
}

fn join(name: &str, op: LayerOp, from: &[&str]) -> LayerSpec {
    LayerSpec {
        name: Some(name.into()),
        op,
        from: from.iter().map(|s| s.to_string()).collect(),
    }
}

struct Branching {
    graph: Graph,
    x: Buffer,
    targets: Rc<Targets>,
    /// Gradients w.r.t. the input and the output of `a`.
    grads: [Buffer; 2],
    /// Nodes the pass added.
    added: usize,
}

fn branching(target: &[f32]) -> Branching {
    let ir = ModelIr::build_graph(
        "fork",
        vec![FEATURES],
        vec![
            dense("a", &["input"]),
            dense("b", &["input"]),
            join("sum", LayerOp::Add, &["a", "b"]),
            join("cat", LayerOp::Concat, &["sum", "a"]),
        ],
        Vec::new(),
    )
    .expect("valid graph");
    assert_eq!(ir.layers[3].output, vec![2 * UNITS]);
    let model = Rc::new(RefCell::new(Model::build(&ir, 5).expect("model builds")));
    let ctx = Rc::new(Context::new(model.clone(), N, false));
    let mut graph = Graph::new();
    let x = ctx.buffer(N * FEATURES);
    let x_node = graph.add_op(Input).finish();
    graph.set_tensor(x_node, 0, x.tensor());
    graph.no_delete.insert(x_node);
    let mut nodes: Vec<NodeIndex> = Vec::new();
    for (i, layer) in ir.layers.iter().enumerate() {
        let mut op = graph.add_op(LayerForward {
            ctx: ctx.clone(),
            layer: i,
            train: false,
            out: ctx.buffer(N * layer.output.iter().product::<usize>()),
        });
        for s in &layer.inputs {
            let (node, len) = match *s {
                Source::Input => (x_node, FEATURES),
                Source::Layer(j) => (nodes[j], ir.layers[j].output.iter().product()),
            };
            op = op.input(node, 0, ShapeTracker::new(&[N.into(), len.into()]));
        }
        nodes.push(op.finish());
    }
    let targets = Rc::new(Targets::new(&ctx, 2 * UNITS));
    targets.kind.set(LossKind::Boxes { beta: 0.5 });
    targets.boxes.borrow_mut().extend_from_slice(target);
    targets
        .anchor_labels
        .borrow_mut()
        .extend_from_slice(&[1; N]);
    targets.weights.borrow_mut().fill(1.0);
    let loss_node = graph
        .add_op(OutputLoss {
            targets: targets.clone(),
        })
        .input(
            nodes[3],
            0,
            ShapeTracker::new(&[N.into(), (2 * UNITS).into()]),
        )
        .finish();
    let before = graph.graph.node_count();
    let pass = Autograd::new(
        ctx.arena.clone(),
        vec![loss_node],
        false,
        vec![x_node, nodes[0]],
    );
    graph.compile(&pass, ());
    let added = graph.graph.node_count() - before;
    let grads = [x_node, nodes[0]].map(|node| pass.gradient(node).expect("requested"));
    Branching {
        graph,
        x,
        targets,
        grads,
        added,
    }
}

#[test]
fn autograd_sums_the_branches_and_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let values = |rng: &mut ChaCha8Rng, len| -> Vec<f32> {
        (0..len).map(|_| rng.gen_range(-2.0..2.0)).collect()
    };
    let (x0, target) = (
        values(&mut rng, N * FEATURES),
        values(&mut rng, N * 2 * UNITS),
    );
    let mut g = branching(&target);
    // Backward of the loss and of the four layers, the sums for `a` (two readers) and the
    // input (two readers; also requested, so kept).
    assert_eq!(g.added, 1 + 4 + 2);
    let mut run = |x: &[f32]| -> f64 {
        g.x.borrow_mut().copy_from_slice(x);
        g.graph.execute();
        g.targets.loss.get()
    };
    run(&x0);
    let [dx, da] = g.grads.clone().map(|b| b.borrow().clone());
    assert!(da.iter().any(|v| *v != 0.0));
    let eps = 1e-3f32;
    for i in 0..x0.len() {
        let mut x = x0.clone();
        x[i] += eps;
        let up = run(&x);
        x[i] -= 2.0 * eps;
        let down = run(&x);
        let numeric = (up - down) / (2.0 * eps as f64);
        assert!(
            (numeric - dx[i] as f64).abs() < 1e-3,
            "d/dx[{i}]: {numeric} vs {}",
            dx[i]
        );
    }
}
