//! Augment presets: Keras `ImageDataGenerator` settings.

use crate::check::checker::{fmt_num, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType};
use crate::lang::ast::*;

/// A degree, shift or pixel setting.
const fn number(what: &'static str, hi: f64) -> ValueType {
    ValueType::Number {
        what,
        lo: 0.0,
        hi,
        open: false,
    }
}

/// Every setting is optional: left out, it does nothing (Keras's defaults).
pub(super) const AUGMENT: &[Spec] = &[
    Spec::optional("rotation", number("rotation (degrees)", 180.0)),
    Spec::optional("width_shift", number("width shift", f64::INFINITY)),
    Spec::optional("height_shift", number("height shift", f64::INFINITY)),
    Spec::optional("shear", number("shear (degrees)", 90.0)),
    Spec::optional("zoom", ValueType::Other),
    Spec::optional("horizontal_flip", ValueType::Switch),
    Spec::optional("vertical_flip", ValueType::Switch),
    Spec::optional("fill_mode", ValueType::Word { what: "fill mode" }),
    Spec::optional("cval", number("cval", 255.0)),
    Spec::optional("rot90", ValueType::Switch),
    Spec::optional("noise", number("noise standard deviation", 255.0)),
    Spec::optional("brightness", ValueType::Other),
];

const FILL_MODES: &[(&str, FillMode)] = &[
    ("nearest", FillMode::Nearest),
    ("constant", FillMode::Constant),
    ("reflect", FillMode::Reflect),
    ("wrap", FillMode::Wrap),
];

impl<'a> Checker<'a> {
    pub fn augment(&mut self, b: &'a Block) {
        let s = self.statements(b, AUGMENT);
        let number = |this: &mut Self, name: &str| this.number_of(&s, name).unwrap_or(0.0);
        let rotation = number(self, "rotation");
        let width_shift = number(self, "width_shift");
        let height_shift = number(self, "height_shift");
        let shear = number(self, "shear");
        let cval = number(self, "cval");
        let noise = number(self, "noise");
        let switch = |this: &mut Self, name: &str| this.switch_of(&s, name).unwrap_or(false);
        let horizontal_flip = switch(self, "horizontal_flip");
        let vertical_flip = switch(self, "vertical_flip");
        let rot90 = switch(self, "rot90");
        // Read from the first positional value, as the number settings are.
        let value = |this: &mut Self, name: &str| {
            let st = s.one(name)?;
            this.positional_of(st)
        };
        let fill_mode = value(self, "fill_mode")
            .and_then(|v| self.choice(v, "fill mode", FILL_MODES))
            .unwrap_or(FillMode::Nearest);
        let mut zoom = [1.0, 1.0];
        if let Some(v) = value(self, "zoom") {
            if let ValueKind::Number { .. } = v.kind {
                if let Some(z) = self.ranged(v, "zoom", 0.0, 1.0, true) {
                    zoom = [1.0 - z, 1.0 + z];
                }
            } else if let Some(r) = self.interval(v, "zoom range") {
                zoom = r;
            }
        }
        let brightness =
            value(self, "brightness").and_then(|v| self.interval(v, "brightness range"));
        self.out.augments.push(Augment {
            name: b.name.text.clone(),
            rotation,
            width_shift,
            height_shift,
            shear,
            zoom,
            horizontal_flip,
            vertical_flip,
            fill_mode,
            cval,
            rot90,
            noise,
            brightness,
            span: b.name.span,
        });
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
