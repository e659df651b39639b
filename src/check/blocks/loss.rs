//! The `loss` statement of a train block.

use crate::check::checker::{Args, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::check::schema::{Spec, Stmts, ValueType};
use crate::lang::ast::*;

pub(super) const LOSS: Spec = Spec::default(
    "loss",
    ValueType::Other,
    "crossentropy",
    "the classification loss",
);

impl<'a> Checker<'a> {
    pub(super) fn loss(&mut self, b: &Block, s: &Stmts) -> Option<Loss> {
        let Some(st) = s.one(LOSS.name) else {
            self.default_of(b, s, LOSS.name);
            return Some(Loss {
                kind: LossKind::Crossentropy,
                class_weights: None,
                label_smoothing: 0.0,
            });
        };
        let v = self.first_arg(st)?;
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "a loss like `crossentropy(weights: partial)`", None);
                return None;
            }
        };
        let kind = self.choice_name(name, "loss", &[("crossentropy", LossKind::Crossentropy)])?;
        let a = Args::new(args.iter(), v.span);
        self.only_named(&a, "crossentropy", &["weights", "label_smoothing"]);
        let class_weights = match a.get("weights") {
            None => None,
            Some(w) => match &w.kind {
                ValueKind::List(_) => self
                    .weight_list(w, None)
                    .map(|weights| ClassWeights::Explicit { weights }),
                _ => {
                    let n = self.word(w, "a balance name, `balanced` or a list")?;
                    if n.text == "balanced" && !self.stages.contains_key("balanced") {
                        Some(ClassWeights::Balanced)
                    } else {
                        let bal = self.stage_ref(n, "balance", &[BlockKind::Balance])?;
                        if !bal
                            .body
                            .statements()
                            .any(|s| s.head.text == "weights" || s.head.text == "use")
                        {
                            self.err(Error::MissingStatement {
                                block: "balance".into(),
                                name: n.text.clone(),
                                statement: "weights".into(),
                                span: n.span,
                                help: Some(format!("add `weights balanced` to balance {}", n.text)),
                            });
                            return None;
                        }
                        Some(ClassWeights::Balance {
                            balance: n.text.clone(),
                        })
                    }
                }
            },
        };
        let label_smoothing = match a.get("label_smoothing") {
            Some(x) => self.ranged(x, "label smoothing", 0.0, 1.0, true)?,
            None => 0.0,
        };
        Some(Loss {
            kind,
            class_weights,
            label_smoothing,
        })
    }
}
