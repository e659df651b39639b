//! Block schemas as data, and typed choices.
//!
//! Each block kind lists its statements once, in a `&[Spec]` table next to its check in
//! `blocks/`: the statement's name, how its value is read, whether it is required (with an
//! example for the diagnostic), defaulted (with the value and the reason `gpl check --explain`
//! prints) or optional, and whether it may repeat. [`Checker::statements`] uses the table to
//! refuse unknown statements ("did you mean"), repeats and missing required statements; the
//! readers here (`count_of`, `data_of`, ...) read a statement by name, taking its description,
//! range and default from the same row. A word from a fixed set is read into a typed value
//! through a `&[(word, value)]` table, so the code that uses it matches exhaustively.

use super::checker::{describe, statement_span, Args, Checker};
use super::diagnostics::{suggest, Error};
use super::program::DataRef;
use crate::lang::ast::{Block, BlockKind, HeaderWord, Statement, Value, ValueKind};
use crate::lang::Name;
use std::collections::BTreeMap;

/// One statement a block accepts.
#[derive(Clone, Copy, Debug)]
pub(super) struct Spec {
    pub name: &'static str,
    pub value: ValueType,
    pub need: Need,
    /// May be written more than once (`drop class 1` / `drop class 2`).
    pub repeat: bool,
}

/// How a statement's value is read.
#[derive(Clone, Copy, Debug)]
pub(super) enum ValueType {
    /// A whole number of at least `min`, read by [`Checker::count_of`]; `what` names it in
    /// diagnostics.
    Count { what: &'static str, min: i64 },
    /// A number in `[lo, hi]` (`[lo, hi)` when `open`), read by [`Checker::number_of`].
    Number {
        what: &'static str,
        lo: f64,
        hi: f64,
        open: bool,
    },
    /// A data reference (`galaxy10`, `galaxy10.test` or a balance), read by
    /// [`Checker::data_of`].
    Data,
    /// One word of a fixed set, read by [`Checker::choice_of`] into a typed value.
    Word { what: &'static str },
    /// One or more words of a fixed set, read by [`Checker::choices_of`].
    Words { what: &'static str },
    /// No value: writing the statement turns the setting on.
    Flag,
    /// Bare (on) or `true`/`false`, read by [`Checker::switch_of`].
    Switch,
    /// Anything else (calls, lists, names, nested bodies): read by the block's own code.
    Other,
}

/// Whether a statement must be written and what leaving it out means.
#[derive(Clone, Copy, Debug)]
pub(super) enum Need {
    /// Must be written; `example` goes in the diagnostic's help.
    Required { example: &'static str },
    /// The block's data: `on DATA` in the header or this statement; `example` is a data
    /// reference for the diagnostic's help.
    RequiredOn { example: &'static str },
    /// Left out, it takes `value` (written as in a pipeline), noted with `reason`.
    Default {
        value: &'static str,
        reason: &'static str,
    },
    /// Left out, the block derives it from other settings, noted with `reason`.
    Derived { reason: &'static str },
    /// Left out, the setting is off or absent.
    Optional,
}

impl Spec {
    pub const fn required(name: &'static str, value: ValueType, example: &'static str) -> Spec {
        Spec::new(name, value, Need::Required { example })
    }

    pub const fn data_on(name: &'static str, example: &'static str) -> Spec {
        Spec::new(name, ValueType::Data, Need::RequiredOn { example })
    }

    pub const fn default(
        name: &'static str,
        value: ValueType,
        default: &'static str,
        reason: &'static str,
    ) -> Spec {
        let need = Need::Default {
            value: default,
            reason,
        };
        Spec::new(name, value, need)
    }

    pub const fn derived(name: &'static str, value: ValueType, reason: &'static str) -> Spec {
        Spec::new(name, value, Need::Derived { reason })
    }

    pub const fn optional(name: &'static str, value: ValueType) -> Spec {
        Spec::new(name, value, Need::Optional)
    }

    pub const fn repeated(name: &'static str, value: ValueType) -> Spec {
        Spec {
            repeat: true,
            ..Spec::new(name, value, Need::Optional)
        }
    }

    const fn new(name: &'static str, value: ValueType, need: Need) -> Spec {
        Spec {
            name,
            value,
            need,
            repeat: false,
        }
    }
}

/// A block's statements grouped by head, after checking them against the block's table.
pub(super) struct Stmts<'b> {
    table: &'static [Spec],
    /// Ordered by name: presets' callbacks are read in this order.
    by_head: BTreeMap<&'static str, Vec<&'b Statement>>,
}

impl<'b> Stmts<'b> {
    /// The table row of `name`. A read of a name missing from the block's table is a bug in
    /// the block's check, and every corpus case of that block kind reaches it.
    pub fn spec(&self, name: &str) -> &'static Spec {
        self.table
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("statement `{name}` is not in its block's table"))
    }

    /// The statement `name` (the last one, for a repeatable statement).
    pub fn one(&self, name: &str) -> Option<&'b Statement> {
        self.all(name).last().copied()
    }

    pub fn all(&self, name: &str) -> &[&'b Statement] {
        self.by_head
            .get(self.spec(name).name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    pub fn has(&self, name: &str) -> bool {
        !self.all(name).is_empty()
    }

    /// Every statement written, grouped by name in name order.
    pub fn written(&self) -> impl Iterator<Item = &'b Statement> + '_ {
        self.by_head.values().flatten().copied()
    }
}

/// A statement's first value, positional or named, in its call or after its head.
fn first_value(st: &Statement) -> Option<&Value> {
    let mut args = st.call.iter().flatten().chain(st.args());
    args.next().map(|a| a.value())
}

/// The row of `word` in a choice table.
pub(super) fn lookup<T: Copy>(words: &[(&str, T)], word: &str) -> Option<T> {
    words.iter().find(|(w, _)| *w == word).map(|(_, t)| *t)
}

impl<'a> Checker<'a> {
    /// Checks a block's body against its table: unknown statements, repeats of statements
    /// that may appear once, and required statements left out.
    pub fn statements<'b>(&mut self, b: &'b Block, table: &'static [Spec]) -> Stmts<'b> {
        self.statements_in(b, b.body.statements(), table)
    }

    /// [`Checker::statements`] over a list of statements (a block's own after its presets').
    pub fn statements_in<'b>(
        &mut self,
        b: &Block,
        statements: impl IntoIterator<Item = &'b Statement>,
        table: &'static [Spec],
    ) -> Stmts<'b> {
        let mut by_head: BTreeMap<&'static str, Vec<&'b Statement>> = BTreeMap::new();
        for st in statements {
            let head = st.head.text.as_str();
            let Some(spec) = table.iter().find(|s| s.name == head) else {
                self.err(Error::UnknownStatement {
                    block: b.kind.to_string(),
                    name: head.to_string(),
                    span: st.head.span,
                    help: suggest(head, table.iter().map(|s| s.name)),
                });
                continue;
            };
            if let (ValueType::Flag, Some(v)) = (spec.value, first_value(st)) {
                // A value would be read by nothing: `report false` must not turn a report on.
                self.err(Error::WrongType {
                    expected: format!("`{head}` alone"),
                    found: describe(v),
                    span: v.span,
                    help: Some(format!(
                        "`{head}` takes no value; leave the statement out to turn it off"
                    )),
                });
                continue;
            }
            let entry = by_head.entry(spec.name).or_default();
            if let Some(first) = entry.first() {
                if !spec.repeat {
                    self.err(Error::Repeated {
                        statement: head.to_string(),
                        span: st.head.span,
                        first: first.head.span,
                    });
                    continue;
                }
            }
            entry.push(st);
        }
        let on = b.header.as_ref().filter(|h| h.word == HeaderWord::On);
        for spec in table {
            let written = by_head.get(spec.name).and_then(|v| v.first());
            if let (Need::RequiredOn { .. }, Some(st), Some(h)) = (spec.need, written, on) {
                // The header wins, so the statement would be read by nothing.
                self.err(Error::Repeated {
                    statement: spec.name.to_string(),
                    span: st.head.span,
                    first: h.value.span,
                });
            }
            let written = written.is_some();
            let (statement, help) = match spec.need {
                Need::Required { example } if !written => {
                    (spec.name.to_string(), format!("add e.g. `{example}`"))
                }
                Need::RequiredOn { example } if !written && on.is_none() => {
                    let example = format!("{} {} on {example} {{ ... }}", b.kind, b.name.text);
                    ("on DATA".to_string(), format!("write `{example}`"))
                }
                _ => continue,
            };
            self.err(Error::MissingStatement {
                block: b.kind.to_string(),
                name: b.name.text.clone(),
                statement,
                span: b.name.span,
                help: Some(help),
            });
        }
        Stmts { table, by_head }
    }

    /// Notes the default of `name` for `gpl check --explain` and returns its text.
    pub fn default_of(&mut self, b: &Block, s: &Stmts, name: &str) -> &'static str {
        let spec = s.spec(name);
        let Need::Default { value, reason } = spec.need else {
            panic!("statement `{name}` has no default in its block's table");
        };
        self.note_default(b, spec.name, value, reason);
        value
    }

    /// Notes a derived default of `name` (its value computed by the block).
    pub fn derived_of(&mut self, b: &Block, s: &Stmts, name: &str, value: impl ToString) {
        let spec = s.spec(name);
        let Need::Derived { reason } = spec.need else {
            panic!("statement `{name}` is not derived in its block's table");
        };
        self.note_default(b, spec.name, value, reason);
    }

    /// A `Count` statement: its value, its default when left out, or `None` (reported).
    pub fn count_of(&mut self, b: &Block, s: &Stmts, name: &str) -> Option<usize> {
        let ValueType::Count { what, min } = s.spec(name).value else {
            panic!("statement `{name}` is not a count in its block's table");
        };
        match s.one(name) {
            Some(st) => self.first_arg(st).and_then(|v| self.count(v, what, min)),
            None => match s.spec(name).need {
                // Every table's count defaults parse: `blocks::tests` checks them.
                Need::Default { .. } => self.default_of(b, s, name).parse().ok(),
                _ => None,
            },
        }
    }

    /// A `Number` statement's value (its first positional argument), if written.
    pub fn number_of(&mut self, s: &Stmts, name: &str) -> Option<f64> {
        let ValueType::Number { what, lo, hi, open } = s.spec(name).value else {
            panic!("statement `{name}` is not a number in its block's table");
        };
        let v = self.positional_of(s.one(name)?)?;
        self.ranged(v, what, lo, hi, open)
    }

    /// A `Switch` statement: bare is on, else `true` or `false`; `None` when not written.
    pub fn switch_of(&mut self, s: &Stmts, name: &str) -> Option<bool> {
        debug_assert!(matches!(s.spec(name).value, ValueType::Switch));
        let st = s.one(name)?;
        Some(match Args::of_statement(st).positional.first() {
            None => true,
            Some(v) => self.boolean(v).unwrap_or(false),
        })
    }

    /// A `Data` statement, or for `RequiredOn` the header's `on DATA`, which wins.
    pub fn data_of(&mut self, b: &Block, s: &Stmts, name: &str) -> Option<DataRef> {
        let spec = s.spec(name);
        debug_assert!(matches!(spec.value, ValueType::Data));
        // Detect blocks read detection datasets; every other block, images with a class each.
        let read = |this: &mut Self, v: &Value| match b.kind {
            BlockKind::Detect => this.data_ref_any(v),
            // A train block with anchors trains a detector on images with boxes.
            BlockKind::Train if b.body.statements().any(|s| s.head.text == "anchors") => {
                this.data_ref_any(v)
            }
            _ => this.data_ref(v),
        };
        if let (Need::RequiredOn { .. }, Some(h)) = (spec.need, &b.header) {
            if h.word == HeaderWord::On {
                return read(self, &h.value);
            }
        }
        let st = s.one(name)?;
        self.first_arg(st).and_then(|v| read(self, v))
    }

    /// A `Word` statement read through `words`; its default (a word of `words`) when left out.
    pub fn choice_of<T: Copy>(
        &mut self,
        b: &Block,
        s: &Stmts,
        name: &str,
        words: &[(&str, T)],
    ) -> Option<T> {
        let ValueType::Word { what } = s.spec(name).value else {
            panic!("statement `{name}` is not a word in its block's table");
        };
        match s.one(name) {
            Some(st) => self.first_arg(st).and_then(|v| self.choice(v, what, words)),
            None => match s.spec(name).need {
                Need::Default { .. } => {
                    let default = self.default_of(b, s, name);
                    self.default_word(name, default, words)
                }
                _ => None,
            },
        }
    }

    /// A `Words` statement read through `words`; its default (words of `words` joined by
    /// ", ") when left out. `None` when left out without a default, or written empty.
    pub fn choices_of<T: Copy>(
        &mut self,
        b: &Block,
        s: &Stmts,
        name: &str,
        words: &[(&str, T)],
    ) -> Option<Vec<T>> {
        let ValueType::Words { what } = s.spec(name).value else {
            panic!("statement `{name}` is not a word list in its block's table");
        };
        match s.one(name) {
            Some(st) => {
                let a = Args::of_statement(st);
                if a.positional.is_empty() {
                    self.missing_value(st);
                    return None;
                }
                let read = a
                    .positional
                    .iter()
                    .filter_map(|v| self.choice(v, what, words));
                Some(read.collect())
            }
            None => match s.spec(name).need {
                Need::Default { .. } => {
                    let default = self.default_of(b, s, name);
                    let read = default
                        .split(", ")
                        .map(|w| self.default_word(name, w, words));
                    read.collect()
                }
                _ => None,
            },
        }
    }

    /// A word of a table's default, which must be one of `words`.
    fn default_word<T: Copy>(&mut self, name: &str, word: &str, words: &[(&str, T)]) -> Option<T> {
        let found = lookup(words, word);
        if found.is_none() {
            self.err(Error::bug(format!(
                "the default `{word}` of statement `{name}` is not one of its words"
            )));
        }
        found
    }

    /// One of `words`, as a bare word (strings are accepted too), read into its value.
    pub fn choice<T: Copy>(&mut self, v: &Value, what: &str, words: &[(&str, T)]) -> Option<T> {
        let text = match &v.kind {
            ValueKind::Str(s) => s.clone(),
            _ => self.word(v, &format!("{what} (a name)"))?.text.clone(),
        };
        self.choose(&text, v.span, what, words)
    }

    /// A call's or a statement's name as one of `words`.
    pub fn choice_name<T: Copy>(&mut self, n: &Name, what: &str, words: &[(&str, T)]) -> Option<T> {
        self.choose(&n.text, n.span, what, words)
    }

    fn choose<T: Copy>(
        &mut self,
        text: &str,
        span: crate::lang::Span,
        what: &str,
        words: &[(&str, T)],
    ) -> Option<T> {
        let found = lookup(words, text);
        if found.is_none() {
            self.err(Error::UnknownName {
                what: what.to_string(),
                name: text.to_string(),
                span,
                help: suggest(text, words.iter().map(|(w, _)| *w)),
            });
        }
        found
    }

    /// A statement's first value, or a "needs a value" diagnostic.
    pub fn first_arg<'s>(&mut self, st: &'s Statement) -> Option<&'s Value> {
        let v = first_value(st);
        if v.is_none() {
            self.missing_value(st);
        }
        v
    }

    /// A statement's first positional value, or a "needs a value" diagnostic.
    pub fn positional_of<'s>(&mut self, st: &'s Statement) -> Option<&'s Value> {
        let v = Args::of_statement(st).positional.first().copied();
        if v.is_none() {
            self.missing_value(st);
        }
        v
    }

    fn missing_value(&mut self, st: &Statement) {
        self.err(Error::MissingArg {
            what: st.head.text.clone(),
            needed: "a value".into(),
            span: statement_span(st),
            help: None,
        });
    }
}
