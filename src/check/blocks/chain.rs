//! Chain blocks: detect, crop, classify and output steps in order.

use crate::check::checker::{Args, Checker};
use crate::check::program::*;
use crate::lang::ast::*;

impl<'a> Checker<'a> {
    pub fn chain(&mut self, b: &'a Block) {
        // Reports unknown heads; the steps are read in order below.
        self.statements(
            "chain",
            &b.body,
            &["detect", "crop", "classify", "output"],
            &[],
        );
        let mut steps = Vec::new();
        for st in b.body.statements() {
            let a = Args::of_statement(st);
            match st.head.text.as_str() {
                "detect" => {
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
                "crop" => {
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
                "classify" => {
                    if let Some(p) = a.positional.first().and_then(|v| self.predictor(v)) {
                        steps.push(ChainStep::Classify { model: p });
                    }
                }
                "output" => {
                    if let Some(p) = a
                        .positional
                        .first()
                        .and_then(|v| self.string(v, "the output file"))
                    {
                        steps.push(ChainStep::Output { path: p });
                    }
                }
                _ => {}
            }
        }
        self.out.chains.push(Chain {
            name: b.name.text.clone(),
            steps,
            span: b.name.span,
        });
    }
}
