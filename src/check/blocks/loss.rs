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
    /// A detector's loss: `focal(alpha:, gamma:)`, RetinaNet's 0.25 and 2 when left out.
    /// Returns `[alpha, gamma]`.
    pub(super) fn detector_loss(&mut self, s: &Stmts) -> Option<[f64; 2]> {
        let Some(st) = s.one(LOSS.name) else {
            return Some([0.25, 2.0]);
        };
        let v = self.first_arg(st)?;
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "a loss like `focal(alpha: 0.25, gamma: 2)`", None);
                return None;
            }
        };
        if name.text != "focal" {
            self.err(Error::Unsupported {
                what: format!("loss `{}` for a detector", name.text),
                span: name.span,
                help: Some(
                    "a detector (a train block with `anchors`) trains with `loss focal(alpha: 0.25, gamma: 2)` on its class logits and smooth-L1 on its boxes".into(),
                ),
            });
            return None;
        }
        let a = Args::new(args.iter(), v.span);
        self.only_named(&a, "focal", &["alpha", "gamma"]);
        let alpha = match a.get("alpha") {
            Some(x) => self.ranged(x, "focal alpha", 0.0, 1.0, false)?,
            None => 0.25,
        };
        let gamma = match a.get("gamma") {
            Some(x) => self.ranged(x, "focal gamma", 0.0, 10.0, false)?,
            None => 2.0,
        };
        Some([alpha, gamma])
    }

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
        if name.text == "focal" {
            self.err(Error::Unsupported {
                what: "the focal loss for a classifier".into(),
                span: name.span,
                help: Some(
                    "the focal loss trains a detector: add `anchors sizes: [...], ratios: [...]` and train on detection data".into(),
                ),
            });
            return None;
        }
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
