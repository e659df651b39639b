//! Detect blocks: a detector's data, architecture and training length.

use crate::check::checker::Checker;
use crate::check::program::*;
use crate::lang::ast::*;

impl<'a> Checker<'a> {
    pub fn detect(&mut self, b: &'a Block) {
        let s = self.statements(
            "detect",
            &b.body,
            &["data", "arch", "epochs", "batch", "seed"],
            &[],
        );
        let data = self
            .require(b, &s, "data", "data fields")
            .and_then(|st| self.first_arg(st))
            .and_then(|v| self.data_ref(v));
        let arch = match s.one("arch") {
            Some(st) => self.first_arg(st).and_then(|v| {
                self.choice(
                    v,
                    "detector architecture",
                    &["ssd_mobilenet", "efficientdet"],
                )
            }),
            None => {
                self.note_default(b, "arch", "ssd_mobilenet", "the report's better detector");
                Some("ssd_mobilenet".into())
            }
        };
        let epochs = self
            .require(b, &s, "epochs", "epochs 20")
            .and_then(|st| self.first_arg(st))
            .and_then(|v| self.count(v, "epochs", 1));
        let batch = s
            .one("batch")
            .and_then(|st| self.first_arg(st))
            .and_then(|v| self.count(v, "batch", 1))
            .unwrap_or(8);
        let seed = s
            .one("seed")
            .and_then(|st| self.first_arg(st))
            .and_then(|v| self.count(v, "seed", 0))
            .unwrap_or(0) as u64;
        let (Some(data), Some(arch), Some(epochs)) = (data, arch, epochs) else {
            return;
        };
        self.out.detects.push(Detect {
            name: b.name.text.clone(),
            data,
            arch,
            epochs,
            batch,
            seed,
            span: b.name.span,
        });
    }
}
