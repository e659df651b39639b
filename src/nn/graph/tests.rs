//! The autograd pass on a branching graph, against central finite differences: `x` is
//! read twice (by the add and the concatenation), so its gradient is a sum the pass must
//! add; gradients are asked of both inputs and of an intermediate tensor.
//!
//! ```text
//! x ─┬─ Add(x, w) = a ─┐
//! w ─┘                 ├─ Concat(a, x) = c ── SmoothL1(c, target)
//! x ───────────────────┘
//! ```

use super::autograd::Autograd;
use super::branch::{Add, Concat, SmoothL1};
use super::ops::Input;
use super::{Arena, Buffer};
use luminal::prelude::{Graph, NodeIndex, ShapeTracker};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::Cell;
use std::rc::Rc;

const ROWS: usize = 5;
const C: usize = 3;

struct Branching {
    graph: Graph,
    x: Buffer,
    w: Buffer,
    loss: Rc<Cell<f64>>,
    /// Gradients w.r.t. x, w and the add's output `a`.
    grads: [Buffer; 3],
    /// Nodes the pass added.
    added: usize,
}

fn shape(len: usize) -> ShapeTracker {
    ShapeTracker::new(&[len.into()])
}

fn input(graph: &mut Graph, arena: &Arena, len: usize) -> (NodeIndex, Buffer) {
    let b = arena.buffer(len);
    let node = graph.add_op(Input).finish();
    graph.set_tensor(node, 0, b.tensor());
    graph.no_delete.insert(node);
    (node, b)
}

fn branching(target: &[f32]) -> Branching {
    let arena = Rc::new(Arena::default());
    let mut graph = Graph::new();
    let n = ROWS * C;
    let (x_node, x) = input(&mut graph, &arena, n);
    let (w_node, w) = input(&mut graph, &arena, n);
    let a_node = graph
        .add_op(Add {
            arena: arena.clone(),
            out: arena.buffer(n),
        })
        .input(x_node, 0, shape(n))
        .input(w_node, 0, shape(n))
        .finish();
    let c_node = graph
        .add_op(Concat {
            arena: arena.clone(),
            ca: C,
            cb: C,
            out: arena.buffer(2 * n),
        })
        .input(a_node, 0, shape(n))
        .input(x_node, 0, shape(n))
        .finish();
    let t = arena.buffer(2 * n);
    t.borrow_mut().copy_from_slice(target);
    let loss = Rc::new(Cell::new(0.0));
    let loss_node = graph
        .add_op(SmoothL1 {
            beta: 0.5,
            target: t,
            grad: arena.buffer(2 * n),
            loss: loss.clone(),
        })
        .input(c_node, 0, shape(2 * n))
        .finish();
    let before = graph.graph.node_count();
    let pass = Autograd::new(arena, loss_node, false, vec![x_node, w_node, a_node]);
    graph.compile(&pass, ());
    let added = graph.graph.node_count() - before;
    let grads = [x_node, w_node, a_node].map(|node| pass.gradient(node).expect("requested"));
    Branching {
        graph,
        x,
        w,
        loss,
        grads,
        added,
    }
}

#[test]
fn autograd_sums_the_branches_and_matches_finite_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let n = ROWS * C;
    let values = |rng: &mut ChaCha8Rng, len| -> Vec<f32> {
        (0..len).map(|_| rng.gen_range(-2.0..2.0)).collect()
    };
    let (x0, w0, target) = (
        values(&mut rng, n),
        values(&mut rng, n),
        values(&mut rng, 2 * n),
    );
    let mut g = branching(&target);
    // Backward of the loss, the concatenation and the add, a sum for x (two readers) and
    // the kept copies of the three requested gradients (w and a have one reader each).
    assert_eq!(g.added, 3 + 3);
    let mut run = |x: &[f32], w: &[f32]| -> f64 {
        g.x.borrow_mut().copy_from_slice(x);
        g.w.borrow_mut().copy_from_slice(w);
        g.graph.execute();
        g.loss.get()
    };
    run(&x0, &w0);
    let [dx, dw, da] = g.grads.clone().map(|b| b.borrow().clone());
    let eps = 1e-3f32;
    let numeric = |run: &mut dyn FnMut(&[f32], &[f32]) -> f64, which: usize, i: usize| {
        let (mut x, mut w) = (x0.clone(), w0.clone());
        let v = if which == 0 { &mut x } else { &mut w };
        v[i] += eps;
        let up = run(&x, &w);
        let v = if which == 0 { &mut x } else { &mut w };
        v[i] -= 2.0 * eps;
        let down = run(&x, &w);
        (up - down) / (2.0 * eps as f64)
    };
    for i in 0..n {
        let (nx, nw) = (numeric(&mut run, 0, i), numeric(&mut run, 1, i));
        assert!(
            (nx - dx[i] as f64).abs() < 1e-3,
            "d/dx[{i}]: {nx} vs {}",
            dx[i]
        );
        assert!(
            (nw - dw[i] as f64).abs() < 1e-3,
            "d/dw[{i}]: {nw} vs {}",
            dw[i]
        );
        // a = x + w: the loss reads a only through the concatenation's first half.
        assert_eq!(da[i], dw[i], "d/da[{i}] is d/dw[{i}]");
    }
    // x is read twice, so its gradient differs from w's (the concatenation's second half).
    assert!(dx.iter().zip(&dw).any(|(a, b)| a != b));
}
