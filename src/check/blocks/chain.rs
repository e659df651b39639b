//! Chain blocks: detect, crop, classify and output steps in order.

use crate::check::checker::{Args, Checker};
use crate::check::program::*;
use crate::check::schema::{lookup, Spec, ValueType::Other};
use crate::lang::ast::*;

const DETECT: Spec = Spec::optional("detect", Other);
const CROP: Spec = Spec::optional("crop", Other);
const CLASSIFY: Spec = Spec::optional("classify", Other);
const OUTPUT: Spec = Spec::optional("output", Other);

/// The steps, each once; they run in the order written.
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
        // Reports unknown heads and repeats; the steps are read in order below.
        self.statements(b, CHAIN);
        let mut steps = Vec::new();
        for st in b.body.statements() {
            let a = Args::of_statement(st);
            // An unknown head was reported above.
            let Some(step) = lookup(STEPS, &st.head.text) else {
                continue;
            };
            match step {
                Step::Detect => {
                    let Some(v) = a.positional.first() else {
                        continue;
                    };
                    let (name, args) = match &v.kind {
                        ValueKind::Call { name, args } => (name, args.as_slice()),
                        ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
                        _ => continue,
                    };
                    if self
                        .stage_ref(name, "detector", &[BlockKind::Detect])
                        .is_none()
                    {
                        continue;
                    }
                    let ca = Args::new(args.iter(), v.span);
                    self.only_named(&ca, "detect", &["min_score"]);
                    let min_score = ca
                        .get("min_score")
                        .and_then(|x| self.ranged(x, "min_score", 0.0, 1.0, false))
                        .unwrap_or(0.5);
                    steps.push(ChainStep::Detect {
                        detector: name.text.clone(),
                        min_score,
                    });
                }
                Step::Crop => {
                    if let Some(v) = a.positional.first() {
                        if let ValueKind::Dims(d) = &v.kind {
                            if let (Some(h), Some(w)) = (
                                d.first().and_then(|x| self.count(x, "crop size", 1)),
                                d.get(1).and_then(|x| self.count(x, "crop size", 1)),
                            ) {
                                steps.push(ChainStep::Crop { size: [h, w] });
                            }
                        } else {
                            self.wrong_type(v, "a size like `69 x 69`", None);
                        }
                    }
                }
                Step::Classify => {
                    if let Some(p) = a.positional.first().and_then(|v| self.predictor(v)) {
                        steps.push(ChainStep::Classify { model: p });
                    }
                }
                Step::Output => {
                    if let Some(p) = a
                        .positional
                        .first()
                        .and_then(|v| self.string(v, "the output file"))
                    {
                        steps.push(ChainStep::Output { path: p });
                    }
                }
            }
        }
        self.out.add(CheckedStage::Chain(Chain {
            name: b.name.text.clone(),
            steps,
            span: b.name.span,
        }));
    }
}
