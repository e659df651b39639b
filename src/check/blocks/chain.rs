//! Chain blocks: detect, then crop a stamp around each detection, classify it, and write the
//! catalogue. Each step at most once; `detect` is required, `crop` only makes sense with
//! `classify`.

use crate::check::checker::{Args, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::check::schema::{lookup, Spec, ValueType::Other};
use crate::lang::ast::*;
use crate::lang::Span;

const DETECT: Spec = Spec::required("detect", Other, "detect finder(min_score: 0.5)");
const CROP: Spec = Spec::optional("crop", Other);
const CLASSIFY: Spec = Spec::optional("classify", Other);
const OUTPUT: Spec = Spec::default(
    "output",
    Other,
    "\"catalog.csv\"",
    "the catalogue's file name in the chain's folder",
);

pub(super) const CHAIN: &[Spec] = &[DETECT, CROP, CLASSIFY, OUTPUT];

#[derive(Clone, Copy)]
enum Step {
    Detect,
    Crop,
    Classify,
    Output,
}

const STEPS: &[(&str, Step)] = &[
    (DETECT.name, Step::Detect),
    (CROP.name, Step::Crop),
    (CLASSIFY.name, Step::Classify),
    (OUTPUT.name, Step::Output),
];

impl<'a> Checker<'a> {
    pub fn chain(&mut self, b: &'a Block) {
        // Reports unknown heads, repeats and a missing `detect`; the steps are read below.
        let s = self.statements(b, CHAIN);
        let mut detector = None;
        let mut crop: Option<([usize; 2], Span)> = None;
        let mut classify = None;
        let mut output = None;
        for st in b.body.statements() {
            let a = Args::of_statement(st);
            // An unknown head was reported above.
            let Some(step) = lookup(STEPS, &st.head.text) else {
                continue;
            };
            let Some(v) = a.positional.first() else {
                continue;
            };
            match step {
                Step::Detect => detector = self.chain_detector(v),
                Step::Crop => {
                    if let ValueKind::Dims(d) = &v.kind {
                        if let (Some(h), Some(w), 2) = (
                            d.first().and_then(|x| self.count(x, "crop size", 1)),
                            d.get(1).and_then(|x| self.count(x, "crop size", 1)),
                            d.len(),
                        ) {
                            crop = Some(([h, w], v.span));
                        }
                    } else {
                        self.wrong_type(v, "a size like `69 x 69`", None);
                    }
                }
                Step::Classify => {
                    if let Some(p) = self.predictor(v) {
                        self.check_classifier_channels(&p, v);
                        classify = Some(p);
                    }
                }
                Step::Output => output = self.catalog_name(v),
            }
        }
        if let (Some((_, span)), None) = (crop, &classify) {
            self.err(Error::Unsupported {
                what: "`crop` without `classify`".into(),
                span,
                help: Some(
                    "stamps are cut only for a classifier; add `classify MODEL` or drop `crop`"
                        .into(),
                ),
            });
            return;
        }
        if s.one("output").is_none() {
            self.default_of(b, &s, "output");
            output = Some("catalog.csv".into());
        }
        let (Some((detector, min_score, min_size)), Some(output)) = (detector, output) else {
            return;
        };
        self.out.add(CheckedStage::Chain(Chain {
            name: b.name.text.clone(),
            detector,
            min_score,
            min_size,
            crop: crop.map(|(c, _)| c),
            classify,
            output,
            span: b.name.span,
        }));
    }

    /// `detect finder(min_score: 0.5, min_size: 3)` or `detect finder`.
    fn chain_detector(&mut self, v: &Value) -> Option<(String, f64, f64)> {
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "a detect block like `finder(min_score: 0.5)`", None);
                return None;
            }
        };
        self.stage_ref(name, "detector", &[BlockKind::Detect])?;
        let ca = Args::new(args.iter(), v.span);
        self.only_named(&ca, "detect", &["min_score", "min_size"]);
        let min_score = match ca.get("min_score") {
            Some(x) => self.ranged(x, "min_score", 0.0, 1.0, false)?,
            None => 0.5,
        };
        let min_size = match ca.get("min_size") {
            Some(x) => self.ranged(x, "min_size", 0.0, f64::INFINITY, false)?,
            None => 0.0,
        };
        Some((name.text.clone(), min_score, min_size))
    }

    /// The catalogue's file name: a plain `NAME.csv`, written inside the chain's folder.
    fn catalog_name(&mut self, v: &Value) -> Option<String> {
        let name = self.string(v, "the output file")?;
        let plain = !name.is_empty()
            && !name.contains(['/', '\\'])
            && !name.starts_with('.')
            && name.ends_with(".csv")
            && name.len() > 4;
        if !plain {
            self.wrong_type(
                v,
                "a file name like \"catalog.csv\"",
                Some(
                    "the catalogue goes in the chain's folder under runs/; give a plain name ending in .csv (a .fits table is written beside it)".into(),
                ),
            );
            return None;
        }
        Some(name)
    }

    /// Fields are colour images: a classifier must take 3 channels.
    fn check_classifier_channels(&mut self, p: &Predictor, v: &Value) {
        let input = match p {
            Predictor::Train { name } => self.out.train(name).map(|t| t.ir.input.clone()),
            Predictor::SearchBest { name } => self.out.search(name).map(|s| s.corner.input.clone()),
            Predictor::Ensemble { name } => self
                .out
                .ensemble(name)
                .and_then(|e| e.members.first().cloned())
                .and_then(|m| {
                    self.out
                        .train(&m)
                        .map(|t| t.ir.input.clone())
                        .or_else(|| self.out.search(&m).map(|s| s.corner.input.clone()))
                }),
        };
        if let Some(input) = input {
            if input.len() == 3 && input[2] != 3 {
                self.err(Error::Unsupported {
                    what: format!(
                        "classifying colour stamps with `{}`, whose input has {} channel(s)",
                        p.name(),
                        input[2]
                    ),
                    span: v.span,
                    help: Some("the chain cuts 3-channel stamps from the fields; classify with a model whose input is H x W x 3".into()),
                });
            }
        }
    }
}
