//! Augment presets: Keras `ImageDataGenerator` settings.

use crate::check::checker::{fmt_num, Args, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::lang::ast::*;

impl<'a> Checker<'a> {
    pub fn augment(&mut self, b: &'a Block) {
        const KEYS: &[&str] = &[
            "rotation",
            "width_shift",
            "height_shift",
            "shear",
            "zoom",
            "horizontal_flip",
            "vertical_flip",
            "fill_mode",
            "cval",
            "rot90",
            "noise",
            "brightness",
        ];
        let s = self.statements("augment", &b.body, KEYS, &[]);
        let mut aug = Augment {
            name: b.name.text.clone(),
            rotation: 0.0,
            width_shift: 0.0,
            height_shift: 0.0,
            shear: 0.0,
            zoom: [1.0, 1.0],
            horizontal_flip: false,
            vertical_flip: false,
            fill_mode: FillMode::Nearest,
            cval: 0.0,
            rot90: false,
            noise: 0.0,
            brightness: None,
            span: b.name.span,
        };
        for (head, sts) in &s.by_head {
            let st = sts[sts.len() - 1];
            let a = Args::of_statement(st);
            let first = a.positional.first().copied();
            let is_flag = ["horizontal_flip", "vertical_flip", "rot90"].contains(&head.as_str());
            if is_flag {
                let on = match first {
                    None => true,
                    Some(v) => self.boolean(v).unwrap_or(false),
                };
                match head.as_str() {
                    "horizontal_flip" => aug.horizontal_flip = on,
                    "vertical_flip" => aug.vertical_flip = on,
                    _ => aug.rot90 = on,
                }
                continue;
            }
            let Some(v) = first else {
                self.err(Error::MissingArg {
                    what: head.clone(),
                    needed: "a value".into(),
                    span: a.span,
                    help: None,
                });
                continue;
            };
            match head.as_str() {
                "rotation" => {
                    aug.rotation = self
                        .ranged(v, "rotation (degrees)", 0.0, 180.0, false)
                        .unwrap_or(0.0)
                }
                "width_shift" => {
                    aug.width_shift = self
                        .ranged(v, "width shift", 0.0, f64::INFINITY, false)
                        .unwrap_or(0.0)
                }
                "height_shift" => {
                    aug.height_shift = self
                        .ranged(v, "height shift", 0.0, f64::INFINITY, false)
                        .unwrap_or(0.0)
                }
                "shear" => {
                    aug.shear = self
                        .ranged(v, "shear (degrees)", 0.0, 90.0, false)
                        .unwrap_or(0.0)
                }
                "cval" => aug.cval = self.ranged(v, "cval", 0.0, 255.0, false).unwrap_or(0.0),
                "noise" => {
                    aug.noise = self
                        .ranged(v, "noise standard deviation", 0.0, 255.0, false)
                        .unwrap_or(0.0)
                }
                "fill_mode" => {
                    aug.fill_mode = match self
                        .choice(v, "fill mode", &["nearest", "constant", "reflect", "wrap"])
                        .as_deref()
                    {
                        Some("constant") => FillMode::Constant,
                        Some("reflect") => FillMode::Reflect,
                        Some("wrap") => FillMode::Wrap,
                        _ => FillMode::Nearest,
                    }
                }
                "zoom" => {
                    if let ValueKind::Number { .. } = v.kind {
                        if let Some(z) = self.ranged(v, "zoom", 0.0, 1.0, true) {
                            aug.zoom = [1.0 - z, 1.0 + z];
                        }
                    } else if let Some(r) = self.interval(v, "zoom range") {
                        aug.zoom = r;
                    }
                }
                _ => aug.brightness = self.interval(v, "brightness range"),
            }
        }
        self.out.augments.push(aug);
    }

    /// `[lo, hi]` or `lo..hi`, positive and ordered.
    pub(super) fn interval(&mut self, v: &Value, what: &str) -> Option<[f64; 2]> {
        let (lo, hi) = match &v.kind {
            ValueKind::Range(lo, hi) => (lo.as_ref(), hi.as_ref()),
            ValueKind::List(items) if items.len() == 2 => (&items[0], &items[1]),
            _ => {
                self.wrong_type(v, &format!("a {what} like `0.8..1.2`"), None);
                return None;
            }
        };
        let (lo_v, hi_v) = (self.num(lo, what)?, self.num(hi, what)?);
        if !(lo_v > 0.0 && lo_v <= hi_v) {
            self.err(Error::OutOfRange {
                what: what.into(),
                value: format!("{}..{}", fmt_num(lo_v), fmt_num(hi_v)),
                range: "0 < lo <= hi".into(),
                span: v.span,
                help: None,
            });
            return None;
        }
        Some([lo_v, hi_v])
    }
}
