//! The checker's core: name tables and typed argument readers shared by the per-block checks
//! (`blocks/`, reading statements through `schema.rs`) and model instantiation (`model.rs`).

use super::diagnostics::{suggest, Error};
use super::program::*;
use crate::lang::ast::*;
use crate::lang::{Name, Span};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// Model parameters bound to values while a model body is instantiated.
pub(super) type Env = BTreeMap<String, Value>;

pub(super) struct Checker<'a> {
    pub errors: Vec<Error>,
    pub defaults: Vec<DefaultNote>,
    pub project_root: PathBuf,
    /// Every block in load order, with whether it is in the root file.
    pub blocks: Vec<(&'a Block, bool)>,
    /// Stage namespace (dataset, balance, train, ...): name -> block.
    pub stages: BTreeMap<&'a str, &'a Block>,
    pub models: BTreeMap<&'a str, &'a Block>,
    pub augment_defs: BTreeMap<&'a str, &'a Block>,
    pub callback_defs: BTreeMap<&'a str, &'a Block>,
    /// Instantiated models by `def(args)` key, so each is built (and reports errors) once.
    pub instances: BTreeMap<String, Option<crate::nn::ir::ModelIr>>,
    /// `use` cycles already reported (as sorted model names), so each is reported once.
    pub cycles: std::collections::BTreeSet<Vec<String>>,
    pub out: Resolved,
}

/// What the checker has resolved so far: the checked stages by name (becoming
/// `Program::checked`) and the definitions.
#[derive(Default)]
pub(super) struct Resolved {
    pub checked: BTreeMap<String, CheckedStage>,
    pub augments: Vec<Augment>,
    pub models: Vec<ModelDef>,
}

impl Resolved {
    pub fn add(&mut self, stage: CheckedStage) {
        self.checked.insert(stage.name().to_string(), stage);
    }
}

impl CheckedLookup for Resolved {
    fn map(&self) -> &BTreeMap<String, CheckedStage> {
        &self.checked
    }
}

/// A statement's or call's arguments split into positional values and named ones.
pub(super) struct Args<'v> {
    pub positional: Vec<&'v Value>,
    pub named: Vec<(&'v Name, &'v Value)>,
    /// Where to point when an argument is missing.
    pub span: Span,
}

impl<'v> Args<'v> {
    pub fn new(args: impl IntoIterator<Item = &'v Arg>, span: Span) -> Args<'v> {
        let mut out = Args {
            positional: Vec::new(),
            named: Vec::new(),
            span,
        };
        for a in args {
            match &a.kind {
                ArgKind::Positional(v) => out.positional.push(v),
                ArgKind::Named(n, v) => out.named.push((n, v)),
            }
        }
        out
    }

    pub fn of_statement(st: &'v Statement) -> Args<'v> {
        Args::new(
            st.call.iter().flatten().chain(st.args()),
            statement_span(st),
        )
    }

    pub fn get(&self, key: &str) -> Option<&'v Value> {
        self.named
            .iter()
            .rev()
            .find(|(n, _)| n.text == key)
            .map(|(_, v)| *v)
    }

    /// True when `word` is given as a bare positional flag (`stratify`, `restore_best`).
    pub fn has_flag(&self, word: &str) -> bool {
        self.positional
            .iter()
            .any(|v| v.as_word().is_some_and(|n| n.text == word))
    }
}

/// The head and arguments of a statement, without its body or trailing comment.
pub(super) fn statement_span(st: &Statement) -> Span {
    let mut span = st.head.span;
    if let Some(g) = st.groups.last() {
        span = span.to(g.span);
    } else if let Some(a) = st.call.as_ref().and_then(|c| c.last()) {
        span = span.to(a.span);
        span.end += 1; // the closing parenthesis
    }
    span
}

/// Short description of a value for "found ..." messages.
pub(super) fn describe(v: &Value) -> String {
    match &v.kind {
        ValueKind::Number { text, .. } => format!("the number {text}"),
        ValueKind::Str(s) => format!("the string {s:?}"),
        ValueKind::Path(p) => format!(
            "`{}`",
            p.iter()
                .map(|n| n.text.as_str())
                .collect::<Vec<_>>()
                .join(".")
        ),
        ValueKind::Call { name, .. } => format!("a call `{}(...)`", name.text),
        ValueKind::List(_) => "a list".into(),
        ValueKind::Range(..) => "a range".into(),
        ValueKind::Compare { .. } => format!("the bound `{}`", crate::lang::fmt::value(v)),
        ValueKind::Dims(_) => format!("sizes `{}`", crate::lang::fmt::value(v)),
    }
}

pub(super) fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else if x.abs() < 1e-3 {
        format!("{x:e}")
    } else {
        format!("{x}")
    }
}

impl<'a> Checker<'a> {
    pub fn err(&mut self, e: Error) {
        self.errors.push(e);
    }

    pub fn note_default(
        &mut self,
        block: &Block,
        setting: &str,
        value: impl ToString,
        reason: &str,
    ) {
        self.defaults.push(DefaultNote {
            block: format!("{} {}", block.kind, block.name.text),
            setting: setting.to_string(),
            value: value.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Reports named arguments not in `allowed`.
    pub fn only_named(&mut self, args: &Args, what: &str, allowed: &[&str]) {
        for (n, _) in &args.named {
            if !allowed.contains(&n.text.as_str()) {
                self.err(Error::UnknownArg {
                    what: what.to_string(),
                    name: n.text.clone(),
                    span: n.span,
                    help: suggest(&n.text, allowed.iter().copied()),
                });
            }
        }
    }

    pub fn wrong_type(&mut self, v: &Value, expected: &str, help: Option<String>) {
        self.err(Error::WrongType {
            expected: expected.to_string(),
            found: describe(v),
            span: v.span,
            help,
        });
    }

    /// A number the engine can hold: the run uses 32-bit floats for rates, factors and
    /// weights, so a value that overflows f32 (or a non-zero one that rounds to 0 in it)
    /// is an error here rather than a config that fails to load at run time.
    pub fn num(&mut self, v: &Value, what: &str) -> Option<f64> {
        match &v.kind {
            ValueKind::Number { value, text } => {
                let magnitude = value.abs();
                let fits = value.is_finite()
                    && magnitude <= f32::MAX as f64
                    && (magnitude == 0.0 || magnitude >= f32::MIN_POSITIVE as f64);
                if !fits {
                    self.err(Error::OutOfRange {
                        what: what.to_string(),
                        value: text.clone(),
                        range: "0, or a magnitude from 1.2e-38 to 3.4e38".into(),
                        span: v.span,
                        help: Some(
                            "gpl computes in 32-bit floats; this number does not fit one".into(),
                        ),
                    });
                    return None;
                }
                Some(*value)
            }
            _ => {
                self.wrong_type(v, "a number", Some(format!("{what} is a number")));
                None
            }
        }
    }

    pub fn int(&mut self, v: &Value, what: &str) -> Option<i64> {
        let x = self.num(v, what)?;
        if x.fract() != 0.0 {
            self.wrong_type(
                v,
                "a whole number",
                Some(format!("{what} is a whole number")),
            );
            return None;
        }
        Some(x as i64)
    }

    /// A whole number of at least `min`, a channel count at a width multiplier,
    /// `width(64, alpha)`, or a product of counts, `times(anchors, classes)` (a detector
    /// head's filters).
    pub fn count(&mut self, v: &Value, what: &str, min: i64) -> Option<usize> {
        let x = match &v.kind {
            ValueKind::Call { name, args } if name.text == "width" => {
                self.width(v, args, what)? as i64
            }
            ValueKind::Call { name, args } if name.text == "times" => {
                let a = Args::new(args.iter(), v.span);
                self.only_named(&a, "times", &[]);
                if a.positional.len() < 2 {
                    self.wrong_type(
                        v,
                        &format!("{what} like `times(anchors, classes)`"),
                        Some("`times(a, b, …)` multiplies two or more counts".into()),
                    );
                    return None;
                }
                let mut product = 1i64;
                for f in &a.positional {
                    product = product.saturating_mul(self.count(f, what, 1)? as i64);
                }
                product
            }
            _ => self.int(v, what)?,
        };
        if x < min {
            self.err(Error::OutOfRange {
                what: what.to_string(),
                value: x.to_string(),
                range: format!("{min} or more"),
                span: v.span,
                help: None,
            });
            return None;
        }
        Some(x as usize)
    }

    /// `width(channels, alpha)`: `channels · alpha` rounded to a multiple of 8 (at least 8,
    /// and never more than 10% below the product), as Keras's MobileNets scale their layers.
    fn width(&mut self, v: &Value, args: &[Arg], what: &str) -> Option<usize> {
        let a = Args::new(args.iter(), v.span);
        self.only_named(&a, "width", &[]);
        let (Some(channels), Some(alpha), 2) = (
            a.positional.first(),
            a.positional.get(1),
            a.positional.len(),
        ) else {
            self.wrong_type(
                v,
                &format!("{what} like `width(64, alpha)`"),
                Some(
                    "`width(channels, alpha)` scales a channel count by a width multiplier".into(),
                ),
            );
            return None;
        };
        let channels = self.count(channels, what, 1)?;
        let alpha = self.positive(alpha, "width multiplier")?;
        let scaled = channels as f64 * alpha;
        let mut rounded = (((scaled + 4.0) as usize) / 8 * 8).max(8);
        if (rounded as f64) < 0.9 * scaled {
            rounded += 8;
        }
        Some(rounded)
    }

    /// A number in `[lo, hi]` (or `[lo, hi)` when `open_hi`).
    pub fn ranged(
        &mut self,
        v: &Value,
        what: &str,
        lo: f64,
        hi: f64,
        open_hi: bool,
    ) -> Option<f64> {
        let x = self.num(v, what)?;
        let ok = x >= lo && (if open_hi { x < hi } else { x <= hi });
        if !ok {
            let range = if hi.is_infinite() {
                format!("{} or more", fmt_num(lo))
            } else {
                format!(
                    "[{}, {}{}",
                    fmt_num(lo),
                    fmt_num(hi),
                    if open_hi { ")" } else { "]" }
                )
            };
            self.err(Error::OutOfRange {
                what: what.to_string(),
                value: fmt_num(x),
                range,
                span: v.span,
                help: None,
            });
            return None;
        }
        Some(x)
    }

    /// A positive number (learning rates, factors).
    pub fn positive(&mut self, v: &Value, what: &str) -> Option<f64> {
        let x = self.num(v, what)?;
        if x <= 0.0 {
            self.err(Error::OutOfRange {
                what: what.to_string(),
                value: fmt_num(x),
                range: "(0, ∞)".into(),
                span: v.span,
                help: Some(format!("{what} must be greater than zero")),
            });
            return None;
        }
        Some(x)
    }

    pub fn word<'v>(&mut self, v: &'v Value, expected: &str) -> Option<&'v Name> {
        match v.as_word() {
            Some(n) => Some(n),
            None => {
                self.wrong_type(v, expected, None);
                None
            }
        }
    }

    pub fn string(&mut self, v: &Value, what: &str) -> Option<String> {
        match &v.kind {
            ValueKind::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(
                    v,
                    "a string",
                    Some(format!("write {what} in double quotes")),
                );
                None
            }
        }
    }

    /// `true`/`false` as a named value.
    pub fn boolean(&mut self, v: &Value) -> Option<bool> {
        match v.as_word().map(|n| n.text.as_str()) {
            Some("true") => Some(true),
            Some("false") => Some(false),
            _ => {
                self.wrong_type(v, "true or false", None);
                None
            }
        }
    }

    /// A flag given bare (`stratify`) or named (`stratify: false`).
    pub fn flag(&mut self, args: &Args, key: &str) -> Option<bool> {
        if args.has_flag(key) {
            return Some(true);
        }
        args.get(key).and_then(|v| self.boolean(v))
    }

    /// A stage name in the stage namespace.
    pub fn stage_ref(&mut self, name: &Name, what: &str, kinds: &[BlockKind]) -> Option<&'a Block> {
        let found = self.stages.get(name.text.as_str()).copied();
        match found {
            Some(b) if kinds.contains(&b.kind) => Some(b),
            found => {
                let candidates: Vec<&str> = self
                    .stages
                    .iter()
                    .filter(|(_, b)| kinds.contains(&b.kind))
                    .map(|(n, _)| *n)
                    .collect();
                let mut help = suggest(&name.text, candidates.iter().copied());
                if let Some(b) = found {
                    help = Some(format!("`{}` is a {} block, not {what}", name.text, b.kind));
                }
                self.err(Error::UnknownName {
                    what: what.to_string(),
                    name: name.text.clone(),
                    span: name.span,
                    help,
                });
                None
            }
        }
    }

    /// `galaxy10`, `galaxy10.test` or a balance name, holding images with one class each: a
    /// detection dataset (`voc(...)`, `fits(...)`) is refused here.
    pub fn data_ref(&mut self, v: &Value) -> Option<DataRef> {
        let r = self.data_ref_any(v)?;
        let source = self
            .stages
            .get(r.dataset())
            .and_then(|b| detection_source(b));
        if let Some(source) = source {
            self.wrong_type(
                v,
                "image-classification data",
                Some(format!(
                    "dataset `{}` reads `{source}`: detection images with boxes, which a detect block reads (or a train block with `anchors`, which trains a detector)",
                    r.dataset()
                )),
            );
            return None;
        }
        Some(r)
    }

    /// [`Checker::data_ref`] for any dataset, detection ones included.
    pub fn data_ref_any(&mut self, v: &Value) -> Option<DataRef> {
        let ValueKind::Path(parts) = &v.kind else {
            self.wrong_type(v, "a data reference like `galaxy10.train`", None);
            return None;
        };
        let first = &parts[0];
        let block = self.stage_ref(first, "dataset", &[BlockKind::Dataset, BlockKind::Balance])?;
        match (block.kind, parts.get(1), parts.len()) {
            (BlockKind::Balance, None, _) => {
                let dataset = balance_dataset(block).unwrap_or_default();
                Some(DataRef::Balance {
                    balance: first.text.clone(),
                    dataset,
                })
            }
            (BlockKind::Dataset, None, _) => Some(DataRef::Dataset {
                dataset: first.text.clone(),
            }),
            (BlockKind::Dataset, Some(part), 2) => {
                let parts = [
                    ("train", Part::Train),
                    ("val", Part::Val),
                    ("test", Part::Test),
                ];
                let parsed = self.choice_name(part, "split part", &parts)?;
                if !block.body.statements().any(|s| s.head.text == "split") {
                    self.err(Error::MissingStatement {
                        block: "dataset".into(),
                        name: first.text.clone(),
                        statement: "split".into(),
                        span: v.span,
                        help: Some(format!(
                            "`{}` refers to a split part; add `split holdout(...)` to dataset {}",
                            crate::lang::fmt::value(v),
                            first.text
                        )),
                    });
                    return None;
                }
                Some(DataRef::Split {
                    dataset: first.text.clone(),
                    part: parsed,
                })
            }
            _ => {
                self.wrong_type(v, "a dataset, `dataset.part` or a balance", None);
                None
            }
        }
    }

    /// A train or ensemble name.
    pub fn predictor(&mut self, v: &Value) -> Option<Predictor> {
        // `tiny.best`: a search's best trial.
        if let ValueKind::Path(parts) = &v.kind {
            if let [search, best] = parts.as_slice() {
                if best.text != "best" {
                    self.wrong_type(v, "a train or ensemble name, or `SEARCH.best`", None);
                    return None;
                }
                self.stage_ref(search, "search", &[BlockKind::Search])?;
                return Some(Predictor::SearchBest {
                    name: search.text.clone(),
                });
            }
        }
        let name = self.word(v, "a train or ensemble name")?;
        let block = self.stage_ref(
            name,
            "model (train or ensemble)",
            &[BlockKind::Train, BlockKind::Ensemble],
        )?;
        if block.kind == BlockKind::Train && self.is_detector(name) {
            return None;
        }
        Some(match block.kind {
            BlockKind::Ensemble => Predictor::Ensemble {
                name: name.text.clone(),
            },
            _ => Predictor::Train {
                name: name.text.clone(),
            },
        })
    }

    /// A train block that trains a classifier: detectors (train blocks with `anchors`) are
    /// refused where a classifier is wanted.
    pub fn classifier_ref(&mut self, n: &Name) -> Option<&'a Block> {
        let block = self.stage_ref(n, "train", &[BlockKind::Train])?;
        (!self.is_detector(n)).then_some(block)
    }

    /// Whether train block `n` trains a detector; reports that a classifier is wanted.
    fn is_detector(&mut self, n: &Name) -> bool {
        let detector = self.stages.get(n.text.as_str()).is_some_and(|b| {
            b.kind == BlockKind::Train && b.body.statements().any(|s| s.head.text == "anchors")
        });
        if detector {
            self.err(Error::WrongType {
                expected: "a classifier".into(),
                found: format!("the detector `{}` (a train block with `anchors`)", n.text),
                span: n.span,
                help: Some("a train block with `anchors` trains a detector: name it in a detect block's `method`; evaluate, ensembles, cross-validation, searches, explanations and a chain's `classify` take classifiers".into()),
            });
        }
        detector
    }

    pub fn resolve_path(&self, path: &str) -> PathBuf {
        let p = PathBuf::from(path);
        if p.is_absolute() {
            p
        } else {
            self.project_root.join(p)
        }
    }
}

/// `voc(...)`, `fits(...)` or `synthetic(fields, ...)` when a dataset block reads a detection
/// source, read from its syntax so the answer does not depend on the order the blocks are
/// checked in.
pub(crate) fn detection_source(block: &Block) -> Option<&'static str> {
    let st = block.body.statements().find(|s| s.head.text == "source")?;
    match &Args::of_statement(st).positional.first()?.kind {
        ValueKind::Call { name, args } => match name.text.as_str() {
            "voc" => Some("voc(...)"),
            "fits" => Some("fits(...)"),
            "synthetic" => {
                let a = Args::new(args.iter(), name.span);
                match &a.positional.first()?.kind {
                    ValueKind::Path(p) if p.len() == 1 && p[0].text == "fields" => {
                        Some("synthetic(fields, ...)")
                    }
                    _ => None,
                }
            }
            _ => None,
        },
        _ => None,
    }
}

/// The dataset a balance block draws from (its `from` reference's first name).
pub(super) fn balance_dataset(block: &Block) -> Option<String> {
    match &block.header.as_ref()?.value.kind {
        ValueKind::Path(parts) => parts.first().map(|n| n.text.clone()),
        _ => None,
    }
}
