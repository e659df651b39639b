//! Balance blocks: down- and oversampling, class weights, presets merged with `use`.

use crate::check::checker::{Args, Checker};
use crate::check::diagnostics::{suggest, Error};
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType};
use crate::lang::ast::*;

pub(super) const BALANCE: &[Spec] = &[
    Spec::repeated("downsample", ValueType::Other),
    Spec::repeated("oversample", ValueType::Other),
    Spec::optional("weights", ValueType::Other),
    super::SEED,
    // A preset's statements are read as if written here, before the block's own.
    Spec::repeated("use", ValueType::Other),
];

impl<'a> Checker<'a> {
    pub fn balance(&mut self, b: &'a Block) {
        let Some(header) = &b.header else {
            // A preset without `from`: checked where a balance `use`s it.
            return;
        };
        let Some(from) = self.data_ref(&header.value) else {
            return;
        };
        if matches!(from, DataRef::Balance { .. }) {
            self.wrong_type(
                &header.value,
                "a dataset or split part (not another balance)",
                None,
            );
            return;
        }
        // Statements of `use`d presets come first; the block's own replace a preset's of the same kind.
        let mut body_sts: Vec<&'a Statement> = Vec::new();
        for st in b.body.statements() {
            if st.head.text == "use" {
                let preset = Args::of_statement(st)
                    .positional
                    .first()
                    .and_then(|v| v.as_word())
                    .cloned();
                let own: Vec<&str> = b.body.statements().map(|s| s.head.text.as_str()).collect();
                match preset
                    .as_ref()
                    .and_then(|n| self.stage_ref(n, "balance preset", &[BlockKind::Balance]))
                {
                    Some(p) if p.header.is_none() => body_sts.extend(
                        p.body
                            .statements()
                            .filter(|s| !own.contains(&s.head.text.as_str())),
                    ),
                    Some(_) => self.err(Error::WrongType {
                        expected: "a balance preset (a balance block without `from`)".into(),
                        found: "a balance stage".into(),
                        span: st.span,
                        help: None,
                    }),
                    None => {}
                }
            }
        }
        body_sts.extend(b.body.statements());
        let s = self.statements_in(b, body_sts, BALANCE);
        let dataset = self.out.dataset(from.dataset()).cloned();
        let classes = dataset.as_ref().and_then(|d| d.source_classes);
        let dropped = dataset.as_ref().map(|d| d.drop.clone()).unwrap_or_default();
        let map = dataset
            .as_ref()
            .map(|d| d.label_map.clone())
            .unwrap_or_default();
        let downsample = s
            .all("downsample")
            .iter()
            .filter_map(|st| self.resample(st, classes, &dropped, &map))
            .collect();
        let mut oversample = Vec::new();
        for st in s.all("oversample") {
            let Some(r) = self.resample(st, classes, &dropped, &map) else {
                continue;
            };
            if r.using.is_none() {
                self.note_default(
                    b,
                    "oversample.using",
                    "none",
                    "added copies are exact duplicates",
                );
            }
            oversample.push(r);
        }
        let weights = s.one("weights").and_then(|st| {
            let a = Args::of_statement(st);
            match a.positional.first() {
                Some(v) if v.as_word().is_some_and(|n| n.text == "balanced") => {
                    Some(WeightsSpec::Balanced)
                }
                Some(v) => self
                    .weight_list(v, dataset.as_ref().and_then(|d| d.classes))
                    .map(|w| WeightsSpec::Explicit { weights: w }),
                None => {
                    self.err(Error::MissingArg {
                        what: "weights".into(),
                        needed: "`balanced` or a list".into(),
                        span: a.span,
                        help: None,
                    });
                    None
                }
            }
        });
        // A bad seed is reported; the program is refused, so the stand-in is never run.
        let seed = self.count_of(b, &s, "seed").unwrap_or(0) as u64;
        let out = Balance {
            name: b.name.text.clone(),
            from,
            downsample,
            oversample,
            weights,
            seed,
            span: b.name.span,
        };
        self.out.add(CheckedStage::Balance(out));
    }

    pub(super) fn resample(
        &mut self,
        st: &Statement,
        classes: Option<usize>,
        dropped: &[u32],
        map: &[Option<usize>],
    ) -> Option<Resample> {
        let a = Args::of_statement(st);
        let (list, to) = self.class_list(st, classes, dropped, Some("to"))?;
        let Some(to) = to else {
            self.err(Error::MissingArg {
                what: st.head.text.clone(),
                needed: "a target count (`to 1200`)".into(),
                span: a.span,
                help: None,
            });
            return None;
        };
        let mut using = None;
        let pos = &a.positional;
        if let Some(i) = pos
            .iter()
            .position(|v| v.as_word().is_some_and(|n| n.text == "using"))
        {
            if let Some(n) = pos.get(i + 1).and_then(|v| v.as_word()) {
                if self.augment_defs.contains_key(n.text.as_str()) {
                    using = Some(n.text.clone());
                } else {
                    let help = suggest(&n.text, self.augment_defs.keys().copied());
                    self.err(Error::UnknownName {
                        what: "augment preset".into(),
                        name: n.text.clone(),
                        span: n.span,
                        help,
                    });
                    return None;
                }
            }
        }
        let mapped = list
            .iter()
            .map(|(c, _)| {
                map.get(*c as usize)
                    .copied()
                    .flatten()
                    .unwrap_or(*c as usize)
            })
            .collect();
        Some(Resample {
            classes: mapped,
            original: list.iter().map(|(c, _)| *c).collect(),
            to: to as usize,
            using,
        })
    }
}
