//! Per-block checks, one file per block kind: each reads its block's statements into the
//! typed settings of `program.rs`, with defaults filled in and recorded for `gpl check --explain`.
//! This file holds the readers several kinds share.

mod augment;
mod balance;
mod callbacks;
mod chain;
mod crossval;
mod dataset;
mod detect;
mod ensemble;
mod evaluate;
mod explain;
mod loss;
mod model_def;
mod optimizer;
mod search;
mod train;

use crate::check::checker::{statement_span, Args, Checker};
use crate::check::diagnostics::{suggest, Error};
use crate::check::program::*;
use crate::lang::ast::*;
use crate::lang::Span;

const MONITORS: &[&str] = &["loss", "accuracy", "val_loss", "val_accuracy"];

impl<'a> Checker<'a> {
    /// `class 1, 2 [to N | into K]`: original labels checked against the class count and
    /// the dropped classes. Returns the labels and the number after `tail` when given.
    #[allow(clippy::type_complexity)]
    fn class_list(
        &mut self,
        st: &Statement,
        classes: Option<usize>,
        dropped: &[u32],
        tail: Option<&str>,
    ) -> Option<(Vec<(u32, Span)>, Option<u32>)> {
        let a = Args::of_statement(st);
        let mut it = a.positional.iter();
        match it.next() {
            Some(v)
                if v.as_word()
                    .is_some_and(|n| n.text == "class" || n.text == "classes") => {}
            Some(v) => {
                self.wrong_type(
                    v,
                    "`class`",
                    Some(format!("write `{} class 1, 2`", st.head.text)),
                );
                return None;
            }
            None => {
                self.err(Error::MissingArg {
                    what: st.head.text.clone(),
                    needed: "`class` and labels".into(),
                    span: a.span,
                    help: None,
                });
                return None;
            }
        }
        let mut list = Vec::new();
        let mut after = None;
        while let Some(v) = it.next() {
            if let (Some(t), Some(w)) = (tail, v.as_word()) {
                if w.text == t {
                    after = it
                        .next()
                        .and_then(|x| self.count(x, "a class", 0))
                        .map(|x| x as u32);
                    break;
                }
            }
            let c = self.count(v, "a class label", 0)? as u32;
            if let Some(n) = classes {
                if c as usize >= n {
                    self.err(Error::BadClass {
                        class: c.to_string(),
                        problem: format!("does not exist (labels are 0..{})", n - 1),
                        span: v.span,
                        help: None,
                    });
                    return None;
                }
            }
            if dropped.contains(&c) {
                self.err(Error::BadClass {
                    class: c.to_string(),
                    problem: "was dropped from the dataset".into(),
                    span: v.span,
                    help: None,
                });
                return None;
            }
            list.push((c, v.span));
        }
        if list.is_empty() {
            self.err(Error::MissingArg {
                what: st.head.text.clone(),
                needed: "at least one class label".into(),
                span: a.span,
                help: None,
            });
            return None;
        }
        Some((list, after))
    }

    fn weight_list(&mut self, v: &Value, classes: Option<usize>) -> Option<Vec<f64>> {
        let ValueKind::List(items) = &v.kind else {
            self.wrong_type(v, "`balanced` or a list of weights", None);
            return None;
        };
        let w: Vec<f64> = items
            .iter()
            .filter_map(|x| self.ranged(x, "a class weight", 0.0, f64::INFINITY, false))
            .collect();
        if let Some(n) = classes {
            if w.len() != n {
                self.err(Error::OutOfRange {
                    what: "the number of class weights".into(),
                    value: w.len().to_string(),
                    range: format!("exactly {n} (one per class)"),
                    span: v.span,
                    help: None,
                });
                return None;
            }
        }
        Some(w)
    }

    pub fn first_arg<'s>(&mut self, st: &'s Statement) -> Option<&'s Value> {
        let v = st
            .call
            .iter()
            .flatten()
            .chain(st.args())
            .next()
            .map(|a| a.value());
        if v.is_none() {
            self.err(Error::MissingArg {
                what: st.head.text.clone(),
                needed: "a value".into(),
                span: statement_span(st),
                help: None,
            });
        }
        v
    }

    /// A layer by name or 1-based position.
    fn layer_ref(&mut self, v: &Value, ir: &crate::nn::ir::ModelIr) -> Option<(usize, String)> {
        if let ValueKind::Number { .. } = v.kind {
            let i = self.count(v, "layer number", 1)?;
            if i > ir.layers.len() {
                self.err(Error::OutOfRange {
                    what: "layer number".into(),
                    value: i.to_string(),
                    range: format!("1..{}", ir.layers.len()),
                    span: v.span,
                    help: None,
                });
                return None;
            }
            return Some((i - 1, ir.layers[i - 1].name.clone()));
        }
        let text = match &v.kind {
            ValueKind::Str(s) => s.clone(),
            _ => self.word(v, "a layer name")?.text.clone(),
        };
        match ir.layer_index(&text) {
            Some(i) => Some((i, text)),
            None => {
                let help = suggest(&text, ir.layers.iter().map(|l| l.name.as_str()));
                let help = Some(match help {
                    Some(h) => format!("{h} (a layer of model `{}`)", ir.name),
                    None => format!(
                        "model `{}` has no layer of that name; `gpl check` lists its layers",
                        ir.name
                    ),
                });
                self.err(Error::UnknownName {
                    what: "layer".into(),
                    name: text,
                    span: v.span,
                    help,
                });
                None
            }
        }
    }

    fn data_or_header(
        &mut self,
        b: &Block,
        s: &super::checker::Stmts,
        example: &str,
    ) -> Option<DataRef> {
        match (&b.header, s.one("data")) {
            (Some(h), _) if h.word == HeaderWord::On => self.data_ref(&h.value),
            (_, Some(st)) => self.first_arg(st).and_then(|v| self.data_ref(v)),
            _ => {
                self.err(Error::MissingStatement {
                    block: b.kind.to_string(),
                    name: b.name.text.clone(),
                    statement: "on DATA".into(),
                    span: b.name.span,
                    help: Some(format!("write `{example}`")),
                });
                None
            }
        }
    }
}
