//! Evaluate blocks: which models, on which data, which outputs.

use crate::check::checker::{Args, Checker};
use crate::check::program::*;
use crate::lang::ast::*;

impl<'a> Checker<'a> {
    pub fn evaluate(&mut self, b: &'a Block) {
        let s = self.statements(
            "evaluate",
            &b.body,
            &[
                "models",
                "data",
                "report",
                "confusion",
                "roc",
                "predictions",
            ],
            &[],
        );
        let data = self.data_or_header(
            b,
            &s,
            &format!("evaluate {} on galaxy10.test {{ ... }}", b.name.text),
        );
        let models: Vec<Predictor> = match self.require(b, &s, "models", "models scratch, vgg_ft") {
            Some(st) => Args::of_statement(st)
                .positional
                .iter()
                .filter_map(|v| self.predictor(v))
                .collect(),
            None => Vec::new(),
        };
        let any = ["report", "confusion", "roc", "predictions"]
            .iter()
            .any(|k| s.has(k));
        if !any {
            self.note_default(
                b,
                "outputs",
                "report, confusion, roc",
                "no output statement written",
            );
        }
        let Some(data) = data else { return };
        self.out.evaluates.push(Evaluate {
            name: b.name.text.clone(),
            models,
            data,
            report: s.has("report") || !any,
            confusion: s.has("confusion") || !any,
            roc: s.has("roc") || !any,
            predictions: s.has("predictions"),
            span: b.name.span,
        });
    }
}
