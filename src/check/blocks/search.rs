//! Search blocks: a model's hyperparameter space, the strategy and the objective.

use super::MONITORS;
use crate::check::checker::{fmt_num, Args, Checker, Env};
use crate::check::diagnostics::Error;
use crate::check::model::subst;
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType::Other};
use crate::lang::ast::*;
use crate::lang::{Name, Span};

pub(super) const SEARCH: &[Spec] = &[
    Spec::required("model", Other, "model tiny_net"),
    Spec::required("train", Other, "train scratch"),
    Spec::required("space", Other, "space { f1 in 8..64 }"),
    Spec::default(
        "strategy",
        Other,
        "random(trials: 20, seed: 0)",
        "no strategy written",
    ),
    Spec::default(
        "objective",
        Other,
        "maximize val_accuracy",
        "no objective written",
    ),
];

const STRATEGIES: &[(&str, StrategyKind)] = &[
    ("bayes", StrategyKind::Bayes),
    ("random", StrategyKind::Random),
    ("grid", StrategyKind::Grid),
];

const DIRECTIONS: &[(&str, Mode)] = &[("maximize", Mode::Max), ("minimize", Mode::Min)];

impl<'a> Checker<'a> {
    pub fn search(&mut self, b: &'a Block) {
        let s = self.statements(b, SEARCH);
        let (Some(model_st), Some(train_st), Some(space_st)) =
            (s.one("model"), s.one("train"), s.one("space"))
        else {
            return;
        };
        let Some(model_v) = self.first_arg(model_st) else {
            return;
        };
        let train = self
            .first_arg(train_st)
            .and_then(|v| self.word(v, "a train name"))
            .cloned();
        let train = train.and_then(|n| {
            self.stage_ref(&n, "train", &[BlockKind::Train])
                .map(|_| n.text.clone())
        });
        let mut space = Vec::new();
        let mut lo_env = Env::new();
        let mut hi_env = Env::new();
        for st in space_st.body.iter().flat_map(|b| b.statements()) {
            let a = Args::of_statement(st);
            let in_ok = a
                .positional
                .first()
                .and_then(|v| v.as_word())
                .is_some_and(|n| n.text == "in");
            let Some(dom_v) = a.positional.get(1).filter(|_| in_ok) else {
                self.err(Error::WrongType {
                    expected: "`name in lo..hi` or `name in [a, b]`".into(),
                    found: "something else".into(),
                    span: a.span,
                    help: None,
                });
                continue;
            };
            // Only `name in DOMAIN`: anything after it (`log`, a step) would be dropped.
            if let Some(extra) = a.positional.get(2).or(a.named.first().map(|(_, v)| v)) {
                let log = extra.as_word().is_some_and(|n| n.text == "log");
                self.err(Error::Unsupported {
                    what: if log {
                        "a log-scaled range".into()
                    } else {
                        format!(
                            "`{}` after a search dimension",
                            super::super::checker::describe(extra)
                        )
                    },
                    span: extra.span,
                    help: Some(
                        "write the dimension as `name in lo..hi` or `name in [a, b, c]`".into(),
                    ),
                });
                continue;
            }
            // Corner values carry the dimension's span, so errors point at its line's name.
            let at = |v: &Value, span: Span| -> Value {
                Value {
                    kind: v.kind.clone(),
                    span,
                }
            };
            let domain = match &dom_v.kind {
                ValueKind::Range(lo, hi) => {
                    let is_int = |v: &Value| matches!(&v.kind, ValueKind::Number { text, .. } if !text.contains(['.', 'e', 'E']));
                    let (Some(l), Some(h)) =
                        (self.num(lo, "range start"), self.num(hi, "range end"))
                    else {
                        continue;
                    };
                    if l > h {
                        self.err(Error::OutOfRange {
                            what: "the range".into(),
                            value: format!("{}..{}", fmt_num(l), fmt_num(h)),
                            range: "lo <= hi".into(),
                            span: dom_v.span,
                            help: None,
                        });
                        continue;
                    }
                    lo_env.insert(st.head.text.clone(), at(lo, st.head.span));
                    hi_env.insert(st.head.text.clone(), at(hi, st.head.span));
                    if is_int(lo) && is_int(hi) {
                        Domain::Int {
                            lo: l as i64,
                            hi: h as i64,
                        }
                    } else {
                        Domain::Float { lo: l, hi: h }
                    }
                }
                ValueKind::List(items) if !items.is_empty() => {
                    let values: Vec<f64> = items
                        .iter()
                        .filter_map(|v| self.num(v, "a choice"))
                        .collect();
                    lo_env.insert(st.head.text.clone(), at(&items[0], st.head.span));
                    hi_env.insert(
                        st.head.text.clone(),
                        at(&items[items.len() - 1], st.head.span),
                    );
                    Domain::Choice { values }
                }
                _ => {
                    self.wrong_type(dom_v, "a range `8..64` or a list `[3, 5, 7]`", None);
                    continue;
                }
            };
            space.push(Dimension {
                name: st.head.text.clone(),
                domain,
            });
        }
        // The corners of the space must build: catches a kernel too big for the smallest map.
        let built = self
            .instantiate(&with_dims(model_v, &lo_env), &Env::new())
            .is_some()
            && self
                .instantiate(&with_dims(model_v, &hi_env), &Env::new())
                .is_some();
        if !built {
            return;
        }
        let strategy = match s.one("strategy") {
            Some(st) => self.strategy(st),
            // The value of SEARCH's default.
            None => {
                self.default_of(b, &s, "strategy");
                Some(Strategy {
                    kind: StrategyKind::Random,
                    trials: 20,
                    init: 0,
                    seed: 0,
                })
            }
        };
        let objective = match s.one("objective") {
            Some(st) => {
                let a = Args::of_statement(st);
                let mode = a
                    .positional
                    .first()
                    .and_then(|v| self.choice(v, "objective direction", DIRECTIONS));
                let metric = a
                    .positional
                    .get(1)
                    .and_then(|v| self.choice(v, "metric", MONITORS));
                match (mode, metric) {
                    (Some(mode), Some(metric)) => Some(Objective {
                        mode,
                        metric: metric.to_string(),
                    }),
                    _ => None,
                }
            }
            // The value of SEARCH's default.
            None => {
                self.default_of(b, &s, "objective");
                Some(Objective {
                    mode: Mode::Max,
                    metric: "val_accuracy".into(),
                })
            }
        };
        let model = match &model_v.kind {
            ValueKind::Call { name, .. } => name.text.clone(),
            _ => crate::lang::fmt::value(model_v),
        };
        let fixed = match &model_v.kind {
            ValueKind::Call { args, .. } => args
                .iter()
                .filter_map(|a| {
                    a.name()
                        .map(|n| (n.text.clone(), crate::lang::fmt::value(a.value())))
                })
                .collect(),
            _ => Vec::new(),
        };
        let (Some(train), Some(strategy), Some(objective)) = (train, strategy, objective) else {
            return;
        };
        self.out.add(CheckedStage::Search(Search {
            name: b.name.text.clone(),
            model,
            train,
            fixed,
            space,
            strategy,
            objective,
            span: b.name.span,
        }));
    }

    pub(super) fn strategy(&mut self, st: &Statement) -> Option<Strategy> {
        let v = self.first_arg(st)?;
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "a strategy like `bayes(trials: 30, init: 8)`", None);
                return None;
            }
        };
        let kind = self.choice_name(name, "search strategy", STRATEGIES)?;
        let a = Args::new(args.iter(), v.span);
        self.only_named(&a, &name.text, &["trials", "init", "seed"]);
        let trials = a
            .get("trials")
            .map(|x| self.count(x, "trials", 1))
            .unwrap_or(Some(20))?;
        let init = a
            .get("init")
            .map(|x| self.count(x, "initial random trials", 0))
            .unwrap_or(Some(if kind == StrategyKind::Bayes { 5 } else { 0 }))?;
        let seed = a
            .get("seed")
            .map(|x| self.count(x, "seed", 0))
            .unwrap_or(Some(0))? as u64;
        if init > trials {
            self.err(Error::OutOfRange {
                what: "init".into(),
                value: init.to_string(),
                range: format!("at most trials ({trials})"),
                span: v.span,
                help: None,
            });
            return None;
        }
        Some(Strategy {
            kind,
            trials,
            init,
            seed,
        })
    }
}

impl Checker<'_> {
    /// `model` with each dimension of `point` bound to its value (a search trial).
    pub(crate) fn instantiate_at(
        &mut self,
        model: &Value,
        point: &[(String, f64)],
    ) -> Option<crate::nn::ir::ModelIr> {
        let env: Env = point
            .iter()
            .map(|(name, x)| {
                let value = Value {
                    kind: ValueKind::Number {
                        text: fmt_num(*x),
                        value: *x,
                    },
                    span: model.span,
                };
                (name.clone(), value)
            })
            .collect();
        self.instantiate(&with_dims(model, &env), &Env::new())
            .map(|(ir, _)| ir)
    }
}

/// `model(args)` with extra named arguments (a search corner).
fn with_dims(model: &Value, dims: &Env) -> Value {
    let (name, mut args) = match &model.kind {
        ValueKind::Call { name, args } => (name.clone(), args.clone()),
        ValueKind::Path(p) => (p[0].clone(), Vec::new()),
        _ => return model.clone(),
    };
    for (k, v) in dims {
        args.push(Arg {
            kind: ArgKind::Named(
                Name {
                    text: k.clone(),
                    span: v.span,
                },
                subst(v, &Env::new()),
            ),
            span: v.span,
        });
    }
    Value {
        kind: ValueKind::Call { name, args },
        span: model.span,
    }
}
