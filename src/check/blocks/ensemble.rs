//! Ensemble blocks: members and fixed or searched weights.

use crate::check::checker::{Args, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType::Other};
use crate::lang::ast::*;

pub(super) const ENSEMBLE: &[Spec] = &[
    Spec::required("members", Other, "members scratch: 0.6, vgg_ft: 0.4"),
    // Weights written with the members (`members a: 0.6, b: 0.4`) leave no default.
    Spec::default("weights", Other, "equal", "no weights written"),
];

impl<'a> Checker<'a> {
    pub fn ensemble(&mut self, b: &'a Block) {
        let s = self.statements(b, ENSEMBLE);
        let Some(st) = s.one("members") else {
            return;
        };
        let a = Args::of_statement(st);
        let mut members = Vec::new();
        let mut fixed = Vec::new();
        for v in &a.positional {
            // `tiny.best`: a search's best trial, which predicts like a train stage.
            if matches!(&v.kind, ValueKind::Path(p) if p.len() == 2) {
                if let Some(Predictor::SearchBest { name }) = self.predictor(v) {
                    members.push(name);
                }
                continue;
            }
            if let Some(n) = self.word(v, "a train name").cloned() {
                if self.classifier_ref(&n).is_some() {
                    members.push(n.text.clone());
                }
            }
        }
        for (n, v) in &a.named {
            if self.classifier_ref(n).is_some() {
                members.push(n.text.clone());
                if let Some(w) = self.ranged(v, "an ensemble weight", 0.0, f64::INFINITY, false) {
                    fixed.push(w);
                }
            }
        }
        if !a.named.is_empty() && !a.positional.is_empty() {
            self.err(Error::WrongType {
                expected: "every member with a weight, or none".into(),
                found: "a mix".into(),
                span: a.span,
                help: None,
            });
            return;
        }
        let weights = match (s.one("weights"), a.named.is_empty()) {
            (Some(w), true) => self.ensemble_weights(w, members.len()),
            (Some(w), false) => {
                self.err(Error::Repeated {
                    statement: "weights".into(),
                    span: w.head.span,
                    first: st.head.span,
                });
                None
            }
            (None, false) => Some(EnsembleWeights::Fixed { weights: fixed }),
            (None, true) => {
                self.default_of(b, &s, "weights");
                Some(EnsembleWeights::Fixed {
                    weights: vec![1.0 / members.len().max(1) as f64; members.len()],
                })
            }
        };
        let Some(weights) = weights else { return };
        if let EnsembleWeights::Fixed { weights } = &weights {
            if weights.iter().sum::<f64>() <= 0.0 {
                self.err(Error::OutOfRange {
                    what: "the sum of ensemble weights".into(),
                    value: "0".into(),
                    range: "(0, ∞)".into(),
                    span: a.span,
                    help: None,
                });
            }
        }
        self.out.add(CheckedStage::Ensemble(Ensemble {
            name: b.name.text.clone(),
            members,
            weights,
            span: b.name.span,
        }));
    }

    pub(super) fn ensemble_weights(&mut self, st: &Statement, n: usize) -> Option<EnsembleWeights> {
        let a = Args::of_statement(st);
        let first = a.positional.first()?;
        let is_search = match &first.kind {
            ValueKind::Path(p) => p.len() == 1 && p[0].text == "search",
            ValueKind::Call { name, .. } => name.text == "search",
            _ => false,
        };
        if is_search {
            let step = match &first.kind {
                ValueKind::Call { args, .. } => {
                    let ca = Args::new(args.iter(), first.span);
                    self.only_named(&ca, "search", &["step"]);
                    match ca.get("step") {
                        Some(v) => self.ranged(v, "search step", 0.001, 0.5, false)?,
                        None => 0.05,
                    }
                }
                _ => 0.05,
            };
            let on_ok = a
                .positional
                .get(1)
                .and_then(|v| v.as_word())
                .is_some_and(|w| w.text == "on");
            let Some(data) = a.positional.get(2).filter(|_| on_ok) else {
                self.err(Error::MissingArg {
                    what: "weights search".into(),
                    needed: "`on DATA` (e.g. `on galaxy10.val`)".into(),
                    span: a.span,
                    help: None,
                });
                return None;
            };
            let on = self.data_ref(data)?;
            return Some(EnsembleWeights::Search { on, step });
        }
        let w: Vec<f64> = a
            .positional
            .iter()
            .filter_map(|v| self.ranged(v, "an ensemble weight", 0.0, f64::INFINITY, false))
            .collect();
        if w.len() != n {
            self.err(Error::OutOfRange {
                what: "the number of weights".into(),
                value: w.len().to_string(),
                range: format!("exactly {n} (one per member)"),
                span: a.span,
                help: None,
            });
            return None;
        }
        Some(EnsembleWeights::Fixed { weights: w })
    }
}
