//! Operators that join branches (`Add`, `Concat`) and regress boxes (`SmoothL1`). The
//! model IR is a layer list, so no model graph builds them yet: the graph tests do (the
//! autograd pass on a branching graph), and detection heads will.
#![cfg_attr(not(test), allow(dead_code))]

use super::ops::{backward_answer, input, BackwardRequest, GradientOut, Inputs, BACKWARD};
use super::{Arena, Buffer};
use crate::nn::ops::loss::smooth_l1;
use crate::nn::ops::shape::{add_forward, concat_backward, concat_forward};
use luminal::op::Operator;
use luminal::prelude::Tensor;
use std::any::Any;
use std::cell::Cell;
use std::rc::Rc;

/// Element-wise `a + b` (a residual join).
#[derive(Debug, PartialEq)]
pub(crate) struct Add {
    pub(crate) arena: Rc<Arena>,
    pub(crate) out: Buffer,
}

impl Operator for Add {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let (a, b) = (input(&inp, 0).borrow(), input(&inp, 1).borrow());
        add_forward(&a, &b, &mut self.out.borrow_mut());
        vec![self.out.tensor()]
    }

    fn custom(&mut self, key: &str, request: Box<dyn Any>) -> Option<Box<dyn Any>> {
        let request = (key == BACKWARD).then_some(request)?;
        let request = request.downcast::<BackwardRequest>().ok()?;
        let len = self.out.borrow().len();
        backward_answer(AddBackward {
            grads: request
                .inputs
                .iter()
                .filter(|w| **w)
                .map(|_| self.arena.buffer(len))
                .collect(),
        })
    }
}

/// The gradient of an add reaches each wanted input unchanged.
#[derive(Debug, PartialEq)]
struct AddBackward {
    grads: Vec<Buffer>,
}

impl Operator for AddBackward {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let dy = input(&inp, 0).borrow();
        for g in &self.grads {
            g.borrow_mut().copy_from_slice(&dy);
        }
        self.grads.iter().map(Buffer::tensor).collect()
    }
}

/// Concatenation along the channel (last) axis: rows of `ca` and `cb` into rows of `ca + cb`.
#[derive(Debug, PartialEq)]
pub(crate) struct Concat {
    pub(crate) arena: Rc<Arena>,
    pub(crate) ca: usize,
    pub(crate) cb: usize,
    pub(crate) out: Buffer,
}

impl Operator for Concat {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let (a, b) = (input(&inp, 0).borrow(), input(&inp, 1).borrow());
        concat_forward(self.ca, self.cb, &a, &b, &mut self.out.borrow_mut());
        vec![self.out.tensor()]
    }

    fn custom(&mut self, key: &str, request: Box<dyn Any>) -> Option<Box<dyn Any>> {
        let request = (key == BACKWARD).then_some(request)?;
        let request = request.downcast::<BackwardRequest>().ok()?;
        let rows = self.out.borrow().len() / (self.ca + self.cb);
        backward_answer(ConcatBackward {
            ca: self.ca,
            cb: self.cb,
            da: self.arena.buffer(rows * self.ca),
            db: self.arena.buffer(rows * self.cb),
            wanted: [request.inputs[0], request.inputs[1]],
        })
    }
}

/// Splits the gradient of a concatenation back into its two inputs' parts.
#[derive(Debug, PartialEq)]
struct ConcatBackward {
    ca: usize,
    cb: usize,
    da: Buffer,
    db: Buffer,
    wanted: [bool; 2],
}

impl Operator for ConcatBackward {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        concat_backward(
            self.ca,
            self.cb,
            &input(&inp, 0).borrow(),
            &mut self.da.borrow_mut(),
            &mut self.db.borrow_mut(),
        );
        [&self.da, &self.db]
            .into_iter()
            .zip(self.wanted)
            .filter(|(_, w)| *w)
            .map(|(b, _)| b.tensor())
            .collect()
    }
}

/// Mean smooth-L1 (Huber, threshold `beta`) of the input against `target` (box regression).
#[derive(Debug, PartialEq)]
pub(crate) struct SmoothL1 {
    pub(crate) beta: f64,
    pub(crate) target: Buffer,
    pub(crate) grad: Buffer,
    /// The loss of the last execution.
    pub(crate) loss: Rc<Cell<f64>>,
}

impl Operator for SmoothL1 {
    fn process(&mut self, inp: Inputs) -> Vec<Tensor> {
        let loss = smooth_l1(
            self.beta,
            &input(&inp, 0).borrow(),
            &self.target.borrow(),
            &mut self.grad.borrow_mut(),
        );
        self.loss.set(loss);
        vec![self.grad.tensor()]
    }

    fn custom(&mut self, key: &str, _: Box<dyn Any>) -> Option<Box<dyn Any>> {
        (key == BACKWARD).then_some(())?;
        backward_answer(GradientOut {
            name: "SmoothL1Backward",
            source: self.grad.clone(),
            grad: self.grad.clone(),
        })
    }
}
