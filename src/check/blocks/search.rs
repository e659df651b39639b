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
    Spec::optional("subject", Other),
];

const QUANTITIES: &[(&str, Quantity)] =
    &[("params", Quantity::Params), ("mflops", Quantity::Mflops)];

/// Points of the space tried at check time for one that meets the `subject to` bounds,
/// besides its two corners.
const FEASIBILITY_PROBES: usize = 512;

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
        let train = train.and_then(|n| self.classifier_ref(&n).map(|_| n.text.clone()));
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
            // `name in DOMAIN`, then `log` for a float range; anything else would be dropped.
            let mut log = false;
            if let Some(extra) = a.positional.get(2).or(a.named.first().map(|(_, v)| v)) {
                let is_log = a.positional.len() == 3
                    && a.named.is_empty()
                    && extra.as_word().is_some_and(|n| n.text == "log");
                let float_range = matches!(&dom_v.kind, ValueKind::Range(lo, hi)
                    if [lo, hi].iter().any(|v| matches!(&v.kind, ValueKind::Number { text, .. } if text.contains(['.', 'e', 'E']))));
                if !(is_log && float_range) {
                    self.err(Error::Unsupported {
                        what: if is_log {
                            "a log scale on an integer range or a choice".into()
                        } else {
                            format!(
                                "`{}` after a search dimension",
                                super::super::checker::describe(extra)
                            )
                        },
                        span: extra.span,
                        help: Some(if is_log {
                            "write the range with decimals (`1e-4..1e-1 log`, `1.0..256.0 log`)".into()
                        } else {
                            "write the dimension as `name in lo..hi`, `name in lo..hi log` or `name in [a, b, c]`".into()
                        }),
                    });
                    continue;
                }
                log = true;
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
                    if log && l <= 0.0 {
                        self.err(Error::OutOfRange {
                            what: "a log-scaled range".into(),
                            value: format!("{}..{}", fmt_num(l), fmt_num(h)),
                            range: "0 < lo <= hi".into(),
                            span: dom_v.span,
                            help: None,
                        });
                        continue;
                    }
                    if is_int(lo) && is_int(hi) && !log {
                        Domain::Int {
                            lo: l as i64,
                            hi: h as i64,
                        }
                    } else {
                        Domain::Float { lo: l, hi: h, log }
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
        let lower = self
            .instantiate(&with_dims(model_v, &lo_env), &Env::new())
            .map(|(ir, _)| ir);
        let upper = self.instantiate(&with_dims(model_v, &hi_env), &Env::new());
        let (Some(lower), Some(_)) = (lower, upper) else {
            return;
        };
        let constraints = match s.one("subject") {
            Some(st) => match self.constraints(st) {
                Some(c) => c,
                None => return,
            },
            None => Vec::new(),
        };
        if !constraints.is_empty()
            && !self.some_point_meets(
                model_v,
                &b.name.text,
                &space,
                &constraints,
                s.one("subject").and_then(bounds_span),
            )
        {
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
            constraints,
            corner: lower,
            span: b.name.span,
        }));
    }

    /// `subject to params <= 100k, mflops <= 20`.
    fn constraints(&mut self, st: &Statement) -> Option<Vec<Constraint>> {
        let a = Args::of_statement(st);
        let to_ok = a
            .positional
            .first()
            .and_then(|v| v.as_word())
            .is_some_and(|n| n.text == "to");
        let bounds = &a.positional[to_ok as usize..];
        if !to_ok || bounds.is_empty() || !a.named.is_empty() {
            self.err(Error::WrongType {
                expected: "`subject to params <= 100k, mflops <= 20`".into(),
                found: "something else".into(),
                span: a.span,
                help: None,
            });
            return None;
        }
        let mut out = Vec::new();
        for v in bounds {
            let ValueKind::Compare {
                quantity,
                op,
                bound,
            } = &v.kind
            else {
                self.wrong_type(v, "a bound like `params <= 100k` or `mflops <= 20`", None);
                return None;
            };
            let quantity = self.choice_name(quantity, "model size", QUANTITIES)?;
            let bound = self.num(bound, "the bound")?;
            out.push(Constraint {
                quantity,
                op: *op,
                bound,
            });
        }
        Some(out)
    }

    /// Whether some point of the space builds a model that meets every bound: the two
    /// corners and a seeded sample of the space are tried, so a bound no trial could meet is
    /// an error before anything trains. Reports the smallest model found when none does.
    fn some_point_meets(
        &mut self,
        model: &Value,
        search: &str,
        space: &[Dimension],
        constraints: &[Constraint],
        at: Option<Span>,
    ) -> bool {
        use rand::{Rng, SeedableRng};
        let Ok(search_space) = search_space(space) else {
            return true;
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let d = space.len();
        let units = [vec![0.0; d], vec![1.0; d]]
            .into_iter()
            .chain((0..FEASIBILITY_PROBES).map(|_| (0..d).map(|_| rng.gen::<f64>()).collect()));
        let errors_before = self.errors.len();
        let mut smallest: Option<(f64, String)> = None;
        let mut found = false;
        for u in units {
            let point = named_point(space, &search_space.from_unit(&u));
            let Some(ir) = self.instantiate_at(model, &point) else {
                continue;
            };
            if constraints.iter().all(|c| c.holds(&ir)) {
                found = true;
                break;
            }
            let size = constraints[0].measure(&ir);
            if smallest.as_ref().is_none_or(|(s, _)| size < *s) {
                let shown = point
                    .iter()
                    .map(|(n, v)| format!("{n}={}", show_value(*v)))
                    .collect::<Vec<_>>()
                    .join(" ");
                smallest = Some((size, shown));
            }
        }
        // Points that do not build are not errors of the pipeline: they are never proposed.
        self.errors.truncate(errors_before);
        if !found {
            let quantity = match constraints[0].quantity {
                Quantity::Params => "parameters",
                Quantity::Mflops => "MFLOPs",
            };
            self.err(Error::Infeasible {
                search: search.to_string(),
                bounds: constraints
                    .iter()
                    .map(Constraint::show)
                    .collect::<Vec<_>>()
                    .join(", "),
                span: at.unwrap_or(model.span),
                help: Some(match smallest {
                    Some((size, at)) => format!(
                        "the corners and {FEASIBILITY_PROBES} sampled points were tried; the fewest {quantity} found is {} (at {at}); loosen the bound or shrink the space",
                        fmt_num(size)
                    ),
                    None => "no point of the space builds a model".into(),
                }),
            });
        }
        found
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

/// The optimiser's view of a checked space.
pub fn search_space(dims: &[Dimension]) -> Result<crate::search::Space, crate::search::SpaceError> {
    use crate::search::{Dim, Domain as D, Level};
    crate::search::Space::new(
        dims.iter()
            .map(|d| Dim {
                name: d.name.clone(),
                domain: match &d.domain {
                    Domain::Int { lo, hi } => D::Int { lo: *lo, hi: *hi },
                    Domain::Float { lo, hi, log } => D::Float {
                        lo: *lo,
                        hi: *hi,
                        log: *log,
                    },
                    Domain::Choice { values } => {
                        D::Choice(values.iter().map(|v| Level::Num(*v)).collect())
                    }
                },
            })
            .collect(),
    )
}

/// A dimension's value as a number: the integer, the float, or the chosen option.
pub fn dimension_value(v: crate::search::Value, dim: &Dimension) -> f64 {
    use crate::search::Value;
    match (v, &dim.domain) {
        (Value::Int(i), _) => i as f64,
        (Value::Float(x), _) => x,
        (Value::Choice(k), Domain::Choice { values }) => values[k],
        (Value::Choice(k), _) => k as f64,
    }
}

/// From the first bound of a `subject to` statement to its last.
fn bounds_span(st: &Statement) -> Option<Span> {
    let a = Args::of_statement(st);
    let first = a.positional.get(1)?;
    Some(first.span.to(a.positional.last()?.span))
}

/// A dimension's value for people: integers as integers, others to three decimals.
fn show_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v:.3}")
    }
}

/// A point as (dimension name, value) pairs, the form models are instantiated from.
pub fn named_point(dims: &[Dimension], point: &[crate::search::Value]) -> Vec<(String, f64)> {
    dims.iter()
        .zip(point)
        .map(|(d, v)| (d.name.clone(), dimension_value(*v, d)))
        .collect()
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
