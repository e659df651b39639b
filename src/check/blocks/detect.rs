//! Detect blocks: a detector's data, architecture and training length.

use crate::check::checker::Checker;
use crate::check::program::*;
use crate::check::schema::{
    Spec,
    ValueType::{Count, Data, Word},
};
use crate::lang::ast::*;

pub(super) const DETECT: &[Spec] = &[
    Spec::required("data", Data, "data fields"),
    Spec::default(
        "arch",
        Word {
            what: "detector architecture",
        },
        "ssd_mobilenet",
        "the report's better detector",
    ),
    Spec::required(
        "epochs",
        Count {
            what: "epochs",
            min: 1,
        },
        "epochs 20",
    ),
    Spec::default(
        "batch",
        Count {
            what: "batch",
            min: 1,
        },
        "8",
        "no batch written",
    ),
    super::SEED,
];

const ARCHS: &[(&str, &str)] = &[
    ("ssd_mobilenet", "ssd_mobilenet"),
    ("efficientdet", "efficientdet"),
];

impl<'a> Checker<'a> {
    pub fn detect(&mut self, b: &'a Block) {
        let s = self.statements(b, DETECT);
        let data = self.data_of(b, &s, "data");
        let arch = self.choice_of(b, &s, "arch", ARCHS);
        let epochs = self.count_of(b, &s, "epochs");
        let batch = self.count_of(b, &s, "batch");
        let seed = self.count_of(b, &s, "seed").map(|x| x as u64);
        let (Some(data), Some(arch), Some(epochs), Some(batch), Some(seed)) =
            (data, arch, epochs, batch, seed)
        else {
            return;
        };
        self.out.add(CheckedStage::Detect(Detect {
            name: b.name.text.clone(),
            data,
            arch: arch.to_string(),
            epochs,
            batch,
            seed,
            span: b.name.span,
        }));
    }
}
