//! Crossval blocks: folds, the compared trains, the paired test and its metrics.

use crate::check::checker::{Args, Checker};
use crate::check::program::*;
use crate::lang::ast::*;
use crate::lang::Name;

impl<'a> Checker<'a> {
    pub fn crossval(&mut self, b: &'a Block) {
        let s = self.statements(
            "crossval",
            &b.body,
            &[
                "data", "folds", "stratify", "seed", "compare", "test", "metrics",
            ],
            &[],
        );
        let data = self.data_or_header(
            b,
            &s,
            &format!("crossval {} on galaxy10 {{ ... }}", b.name.text),
        );
        let folds = match s.one("folds") {
            Some(st) => self.first_arg(st).and_then(|v| self.count(v, "folds", 2)),
            None => {
                self.note_default(b, "folds", 5, "the usual k");
                Some(5)
            }
        };
        let stratify = s.has("stratify");
        let seed = match s.one("seed") {
            Some(st) => self
                .first_arg(st)
                .and_then(|v| self.count(v, "seed", 0))
                .map(|x| x as u64),
            None => {
                self.note_default(b, "seed", 0, "no seed written");
                Some(0)
            }
        };
        let compare: Vec<String> = match self.require(b, &s, "compare", "compare scratch, vgg_ft") {
            Some(st) => {
                let names: Vec<Name> = Args::of_statement(st)
                    .positional
                    .iter()
                    .filter_map(|v| self.word(v, "a train name").cloned())
                    .collect();
                names
                    .into_iter()
                    .filter_map(|n| {
                        self.stage_ref(&n, "train", &[BlockKind::Train])
                            .map(|_| n.text.clone())
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let test = match s.one("test") {
            Some(st) => match self
                .first_arg(st)
                .and_then(|v| self.choice(v, "statistical test", &["wilcoxon", "paired_t", "none"]))
                .as_deref()
            {
                Some("wilcoxon") => Some(StatTest::Wilcoxon),
                Some("paired_t") => Some(StatTest::PairedT),
                Some("none") => Some(StatTest::None),
                // `choice` reported anything else.
                _ => None,
            },
            None => {
                self.note_default(b, "test", "wilcoxon", "the study's paired test");
                Some(StatTest::Wilcoxon)
            }
        };
        let metric = |name: &str| match name {
            "accuracy" => Some(CvMetric::Accuracy),
            "precision" => Some(CvMetric::Precision),
            "recall" => Some(CvMetric::Recall),
            "f1" => Some(CvMetric::F1),
            "auc" => Some(CvMetric::Auc),
            _ => None,
        };
        let metrics: Vec<CvMetric> = match s.one("metrics") {
            Some(st) if Args::of_statement(st).positional.is_empty() => {
                self.first_arg(st);
                Vec::new()
            }
            Some(st) => Args::of_statement(st)
                .positional
                .iter()
                .filter_map(|v| {
                    self.choice(
                        v,
                        "metric",
                        &["accuracy", "precision", "recall", "f1", "auc"],
                    )
                })
                .filter_map(|m| metric(&m))
                .collect(),
            None => {
                self.note_default(
                    b,
                    "metrics",
                    "accuracy, precision, recall",
                    "the report's CV table; the first is tested",
                );
                vec![CvMetric::Accuracy, CvMetric::Precision, CvMetric::Recall]
            }
        };
        let (Some(data), Some(folds), Some(seed), Some(test)) = (data, folds, seed, test) else {
            return;
        };
        if metrics.is_empty() {
            return;
        }
        self.out.crossvals.push(Crossval {
            name: b.name.text.clone(),
            data,
            folds,
            stratify,
            seed,
            compare,
            test,
            metrics,
            span: b.name.span,
        });
    }
}
