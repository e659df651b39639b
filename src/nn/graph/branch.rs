//! Box regression's loss (`SmoothL1`) as a graph operator. No model output trains on boxes
//! yet (`Target::Boxes` is refused): the graph tests use it, and detection heads will.
#![cfg_attr(not(test), allow(dead_code))]

use super::ops::{backward_answer, input, GradientOut, Inputs, BACKWARD};
use super::Buffer;
use crate::nn::ops::loss::smooth_l1;
use luminal::op::Operator;
use luminal::prelude::Tensor;
use std::any::Any;
use std::cell::Cell;
use std::rc::Rc;

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
