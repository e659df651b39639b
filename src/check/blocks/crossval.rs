//! Crossval blocks: folds, the compared trains, the paired test and its metrics.

use crate::check::checker::{Args, Checker};
use crate::check::program::*;
use crate::check::schema::{
    Spec,
    ValueType::{Count, Flag, Other, Word, Words},
};
use crate::lang::ast::*;
use crate::lang::Name;

pub(super) const CROSSVAL: &[Spec] = &[
    Spec::data_on("data", "galaxy10"),
    Spec::default(
        "folds",
        Count {
            what: "folds",
            min: 2,
        },
        "5",
        "the usual k",
    ),
    Spec::optional("stratify", Flag),
    super::SEED,
    Spec::required("compare", Other, "compare scratch, vgg_ft"),
    Spec::default(
        "test",
        Word {
            what: "statistical test",
        },
        "wilcoxon",
        "the study's paired test",
    ),
    Spec::default(
        "metrics",
        Words { what: "metric" },
        "accuracy, precision, recall",
        "the report's CV table; the first is tested",
    ),
];

const TESTS: &[(&str, StatTest)] = &[
    ("wilcoxon", StatTest::Wilcoxon),
    ("paired_t", StatTest::PairedT),
    ("none", StatTest::None),
];

const METRICS: &[(&str, CvMetric)] = &[
    ("accuracy", CvMetric::Accuracy),
    ("precision", CvMetric::Precision),
    ("recall", CvMetric::Recall),
    ("f1", CvMetric::F1),
    ("auc", CvMetric::Auc),
];

impl<'a> Checker<'a> {
    pub fn crossval(&mut self, b: &'a Block) {
        let s = self.statements(b, CROSSVAL);
        let data = self.data_of(b, &s, "data");
        let folds = self.count_of(b, &s, "folds");
        let stratify = s.has("stratify");
        let seed = self.count_of(b, &s, "seed").map(|x| x as u64);
        let compare: Vec<String> = match s.one("compare") {
            Some(st) => {
                let names: Vec<Name> = Args::of_statement(st)
                    .positional
                    .iter()
                    .filter_map(|v| self.word(v, "a train name").cloned())
                    .collect();
                names
                    .into_iter()
                    .filter_map(|n| self.classifier_ref(&n).map(|_| n.text.clone()))
                    .collect()
            }
            None => Vec::new(),
        };
        let test = self.choice_of(b, &s, "test", TESTS);
        let metrics = self
            .choices_of(b, &s, "metrics", METRICS)
            .unwrap_or_default();
        let (Some(data), Some(folds), Some(seed), Some(test)) = (data, folds, seed, test) else {
            return;
        };
        if metrics.is_empty() {
            return;
        }
        self.out.add(CheckedStage::Crossval(Crossval {
            name: b.name.text.clone(),
            data,
            folds,
            stratify,
            seed,
            compare,
            test,
            metrics,
            span: b.name.span,
        }));
    }
}
