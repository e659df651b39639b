//! The `optimizer` statement of a train block, with Keras's defaults per optimizer.

use crate::check::checker::{fmt_num, Args, Checker};
use crate::check::program::*;
use crate::check::schema::{Spec, Stmts, ValueType};
use crate::lang::ast::*;

pub(super) const OPTIMIZER: Spec = Spec::default(
    "optimizer",
    ValueType::Other,
    "adam(lr: 0.001, beta1: 0.9, beta2: 0.999, eps: 1e-7)",
    "Keras's Adam defaults",
);

const OPTIMIZERS: &[(&str, OptimizerKind)] = &[
    ("adam", OptimizerKind::Adam),
    ("adamw", OptimizerKind::Adamw),
    ("sgd", OptimizerKind::Sgd),
    ("rmsprop", OptimizerKind::Rmsprop),
];

impl<'a> Checker<'a> {
    pub(super) fn optimizer(&mut self, b: &Block, s: &Stmts) -> Option<Optimizer> {
        let mut o = Optimizer {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            rho: 0.9,
            eps: 1e-7,
        };
        // The default written in OPTIMIZER is the value of `o` here.
        let Some(st) = s.one(OPTIMIZER.name) else {
            self.default_of(b, s, OPTIMIZER.name);
            return Some(o);
        };
        let v = self.first_arg(st)?;
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "an optimizer like `adam(lr: 1e-3)`", None);
                return None;
            }
        };
        let a = Args::new(args.iter(), v.span);
        let kind = self.choice_name(name, "optimizer", OPTIMIZERS)?;
        let (allowed, default_lr): (&[&str], f64) = match kind {
            OptimizerKind::Adam => (&["lr", "beta1", "beta2", "eps"], 1e-3),
            OptimizerKind::Adamw => (&["lr", "beta1", "beta2", "eps", "weight_decay"], 1e-3),
            OptimizerKind::Sgd => (&["lr", "momentum", "nesterov"], 1e-2),
            OptimizerKind::Rmsprop => (&["lr", "rho", "momentum", "eps"], 1e-3),
        };
        self.only_named(&a, &name.text, allowed);
        o.kind = kind;
        if kind == OptimizerKind::Adamw {
            o.weight_decay = 0.004;
        }
        let opt = name.text.clone();
        o.lr = match a
            .positional
            .iter()
            .copied()
            .find(|v| v.as_word().is_none())
            .or(a.get("lr"))
        {
            Some(x) => self.positive(x, "learning rate")?,
            None => {
                self.note_default(
                    b,
                    "optimizer.lr",
                    fmt_num(default_lr),
                    &format!("Keras's {opt} default"),
                );
                default_lr
            }
        };
        let fields: [(&str, &mut f64, f64, f64, bool); 5] = [
            ("beta1", &mut o.beta1, 0.0, 1.0, true),
            ("beta2", &mut o.beta2, 0.0, 1.0, true),
            ("eps", &mut o.eps, 0.0, 1.0, false),
            ("momentum", &mut o.momentum, 0.0, 1.0, true),
            ("rho", &mut o.rho, 0.0, 1.0, true),
        ];
        for (key, slot, lo, hi, open) in fields {
            if !allowed.contains(&key) {
                continue;
            }
            match a.get(key) {
                Some(x) => *slot = self.ranged(x, key, lo, hi, open)?,
                None => self.defaults.push(DefaultNote {
                    block: format!("train {}", b.name.text),
                    setting: format!("optimizer.{key}"),
                    value: fmt_num(*slot),
                    reason: format!("Keras's {opt} default"),
                }),
            }
        }
        if let Some(x) = a.get("weight_decay") {
            o.weight_decay = self.ranged(x, "weight decay", 0.0, 1.0, false)?;
        }
        o.nesterov = self.flag(&a, "nesterov").unwrap_or(false);
        Some(o)
    }
}
