//! Per-block checks, one file per block kind: each opens with its block's statement table
//! (`schema::Spec`, read through `schema`) and reads the statements into the typed settings of
//! `program.rs`. This file holds the readers several kinds share.

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
pub(crate) mod search;
mod train;

use crate::check::checker::{Args, Checker};
use crate::check::diagnostics::{suggest, Error};
use crate::check::schema::{Spec, ValueType};
use crate::lang::ast::*;
use crate::lang::Span;

/// `seed N`: every block that draws random numbers takes one.
const SEED: Spec = Spec::default(
    "seed",
    ValueType::Count {
        what: "seed",
        min: 0,
    },
    "0",
    "no seed written",
);

/// The metrics a callback or a search objective may watch, as the training log names them.
const MONITORS: &[(&str, &str)] = &[
    ("loss", "loss"),
    ("accuracy", "accuracy"),
    ("val_loss", "val_loss"),
    ("val_accuracy", "val_accuracy"),
];

/// What a detector's training logs: its losses and the validation COCO AP at IoU 0.5.
const DETECTOR_MONITORS: &[(&str, &str)] = &[
    ("loss", "loss"),
    ("val_loss", "val_loss"),
    ("val_map50", "val_map50"),
];

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
}

#[cfg(test)]
mod tests {
    use crate::check::schema::{Need, Spec, ValueType};

    const TABLES: &[&[Spec]] = &[
        super::dataset::DATASET,
        super::augment::AUGMENT,
        super::balance::BALANCE,
        super::train::TRAIN,
        super::callbacks::CALLBACKS,
        super::evaluate::EVALUATE,
        super::ensemble::ENSEMBLE,
        super::crossval::CROSSVAL,
        super::explain::EXPLAIN,
        super::search::SEARCH,
        super::chain::CHAIN,
        super::detect::DETECT,
    ];

    #[test]
    fn count_defaults_parse_and_names_are_unique() {
        for table in TABLES {
            for (i, spec) in table.iter().enumerate() {
                assert!(
                    table[..i].iter().all(|s| s.name != spec.name),
                    "`{}` twice in one table",
                    spec.name
                );
                if let (ValueType::Count { min, .. }, Need::Default { value, .. }) =
                    (spec.value, spec.need)
                {
                    let n: i64 = value.parse().unwrap_or(-1);
                    assert!(
                        n >= min,
                        "default of `{}` is not a count >= {min}",
                        spec.name
                    );
                }
            }
        }
    }
}
