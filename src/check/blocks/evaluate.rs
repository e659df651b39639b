//! Evaluate blocks: which models, on which data, which outputs.

use crate::check::checker::{Args, Checker};
use crate::check::program::*;
use crate::check::schema::{
    Spec,
    ValueType::{Flag, Other},
};
use crate::lang::ast::*;

pub(super) const EVALUATE: &[Spec] = &[
    Spec::data_on("data", "galaxy10.test"),
    Spec::required("models", Other, "models scratch, vgg_ft"),
    // The outputs: with none written, the first three (see `evaluate`).
    Spec::optional("report", Flag),
    Spec::optional("confusion", Flag),
    Spec::optional("roc", Flag),
    Spec::optional("predictions", Flag),
];

impl<'a> Checker<'a> {
    pub fn evaluate(&mut self, b: &'a Block) {
        let s = self.statements(b, EVALUATE);
        let data = self.data_of(b, &s, "data");
        let models: Vec<Predictor> = match s.one("models") {
            Some(st) => Args::of_statement(st)
                .positional
                .iter()
                .filter_map(|v| self.predictor(v))
                .collect(),
            None => Vec::new(),
        };
        let any = EVALUATE
            .iter()
            .filter(|spec| matches!(spec.value, Flag))
            .any(|spec| s.has(spec.name));
        if !any {
            self.note_default(
                b,
                "outputs",
                "report, confusion, roc",
                "no output statement written",
            );
        }
        let Some(data) = data else { return };
        self.out.add(CheckedStage::Evaluate(Evaluate {
            name: b.name.text.clone(),
            models,
            data,
            report: s.has("report") || !any,
            confusion: s.has("confusion") || !any,
            roc: s.has("roc") || !any,
            predictions: s.has("predictions"),
            span: b.name.span,
        }));
    }
}
