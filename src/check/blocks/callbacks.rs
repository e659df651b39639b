//! Keras callbacks (`early_stopping`, `reduce_lr`, `checkpoint`), in a train block or a
//! callbacks preset.

use super::{DETECTOR_MONITORS, MONITORS};
use crate::check::checker::{fmt_num, Args, Checker};
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType};
use crate::lang::ast::*;

pub(super) const EARLY_STOPPING: Spec = Spec::optional("early_stopping", ValueType::Other);
pub(super) const REDUCE_LR: Spec = Spec::optional("reduce_lr", ValueType::Other);
pub(super) const CHECKPOINT: Spec = Spec::optional("checkpoint", ValueType::Other);

/// A callbacks preset; a train block accepts the same statements.
pub(super) const CALLBACKS: &[Spec] = &[EARLY_STOPPING, REDUCE_LR, CHECKPOINT];

#[derive(Clone, Copy)]
enum Kind {
    EarlyStopping,
    ReduceLr,
    Checkpoint,
}

const KINDS: &[(&str, Kind)] = &[
    (EARLY_STOPPING.name, Kind::EarlyStopping),
    (REDUCE_LR.name, Kind::ReduceLr),
    (CHECKPOINT.name, Kind::Checkpoint),
];

impl<'a> Checker<'a> {
    pub(super) fn monitor(&mut self, a: &Args, b: &Block, cb: &str) -> Option<(String, Mode)> {
        // A detector (a train block with `anchors`) logs its validation mAP, not accuracy.
        let detector = b.body.statements().any(|s| s.head.text == "anchors");
        let monitors: &[(&str, &str)] = if detector {
            DETECTOR_MONITORS
        } else {
            MONITORS
        };
        let monitor = match a.get("monitor") {
            Some(v) => self.choice(v, "metric", monitors)?,
            None => {
                self.note_default(b, &format!("{cb}.monitor"), "val_loss", "Keras's default");
                "val_loss"
            }
        };
        let auto = if monitor.contains("acc") || monitor.contains("map") {
            Mode::Max
        } else {
            Mode::Min
        };
        let mode = match a.get("mode") {
            Some(v) => self
                .choice(
                    v,
                    "mode",
                    &[
                        ("auto", None),
                        ("min", Some(Mode::Min)),
                        ("max", Some(Mode::Max)),
                    ],
                )?
                .unwrap_or(auto),
            None => auto,
        };
        Some((monitor.to_string(), mode))
    }

    pub(super) fn callback(&mut self, b: &Block, st: &Statement) -> Option<Callback> {
        let a = Args::of_statement(st);
        let head = st.head.text.as_str();
        let get = |this: &mut Self, key: &str, default: f64, reason: &str| -> Option<f64> {
            match a.get(key) {
                Some(v) => this.ranged(v, &format!("{head} {key}"), 0.0, f64::INFINITY, false),
                None => {
                    this.note_default(b, &format!("{head}.{key}"), fmt_num(default), reason);
                    Some(default)
                }
            }
        };
        // Heads were checked against the block's table, which holds only these.
        match self.choice_name(&st.head, "callback", KINDS)? {
            Kind::EarlyStopping => {
                self.only_named(
                    &a,
                    "early_stopping",
                    &[
                        "monitor",
                        "mode",
                        "min_delta",
                        "patience",
                        "restore_best",
                        "start_from_epoch",
                    ],
                );
                let (monitor, mode) = self.monitor(&a, b, head)?;
                let min_delta = get(self, "min_delta", 0.0, "Keras's default")?;
                let patience = get(self, "patience", 0.0, "Keras's default")? as usize;
                let start_from_epoch =
                    get(self, "start_from_epoch", 0.0, "Keras's default")? as usize;
                let restore_best = self.flag(&a, "restore_best").unwrap_or(false);
                Some(Callback::EarlyStopping {
                    monitor,
                    mode,
                    min_delta,
                    patience,
                    restore_best,
                    start_from_epoch,
                })
            }
            Kind::ReduceLr => {
                self.only_named(
                    &a,
                    "reduce_lr",
                    &[
                        "monitor",
                        "mode",
                        "factor",
                        "patience",
                        "min_delta",
                        "cooldown",
                        "min_lr",
                    ],
                );
                let (monitor, mode) = self.monitor(&a, b, head)?;
                let factor = match a.get("factor") {
                    Some(v) => self.ranged(v, "reduce_lr factor", 0.0, 1.0, true)?,
                    None => {
                        self.note_default(b, "reduce_lr.factor", "0.1", "Keras's default");
                        0.1
                    }
                };
                let patience = get(self, "patience", 10.0, "Keras's default")? as usize;
                let min_delta = get(self, "min_delta", 1e-4, "Keras's default")?;
                let cooldown = get(self, "cooldown", 0.0, "Keras's default")? as usize;
                let min_lr = get(self, "min_lr", 0.0, "Keras's default")?;
                Some(Callback::ReduceLr {
                    monitor,
                    mode,
                    factor,
                    patience,
                    min_delta,
                    cooldown,
                    min_lr,
                })
            }
            Kind::Checkpoint => {
                self.only_named(&a, "checkpoint", &["monitor", "mode", "save_best"]);
                let (monitor, mode) = self.monitor(&a, b, head)?;
                let save_best = self.flag(&a, "save_best").unwrap_or(false);
                Some(Callback::Checkpoint {
                    monitor,
                    mode,
                    save_best,
                })
            }
        }
    }

    /// Checks a callbacks preset's statements once at its definition.
    pub fn callbacks_def(&mut self, b: &'a Block) {
        self.statements(b, CALLBACKS);
    }
}
