//! Explain blocks: Grad-CAM, activations and filters of a trained model.

use crate::check::checker::{Args, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType::Other};
use crate::lang::ast::*;

pub(super) const EXPLAIN: &[Spec] = &[
    Spec::data_on("data", "galaxy10.test"),
    Spec::required("model", Other, "model scratch"),
    Spec::optional("gradcam", Other),
    Spec::optional("activations", Other),
    Spec::optional("filters", Other),
];

impl<'a> Checker<'a> {
    pub fn explain(&mut self, b: &'a Block) {
        let s = self.statements(b, EXPLAIN);
        let data = self.data_of(b, &s, "data");
        let Some(st) = s.one("model") else {
            return;
        };
        let Some(name) = self
            .first_arg(st)
            .and_then(|v| self.word(v, "a train name"))
            .cloned()
        else {
            return;
        };
        if self
            .stage_ref(&name, "train", &[BlockKind::Train])
            .is_none()
        {
            return;
        }
        let ir = self.out.train(&name.text).map(|t| t.ir.clone());
        let Some(ir) = ir else { return };
        let last_conv = ir
            .layers
            .iter()
            .rposition(|l| matches!(l.op, crate::nn::ir::LayerOp::Conv2d { .. }));
        let gradcam = match s.one("gradcam") {
            Some(st) => {
                let a = Args::of_statement(st);
                self.only_named(&a, "gradcam", &["samples", "layer"]);
                let samples = a
                    .get("samples")
                    .and_then(|v| self.count(v, "samples", 1))
                    .unwrap_or(8);
                let layer = match a.get("layer") {
                    Some(v) => self.layer_ref(v, &ir).map(|(_, n)| n),
                    None => last_conv.map(|i| ir.layers[i].name.clone()),
                };
                match layer {
                    Some(layer) => Some(GradCam { samples, layer }),
                    None => {
                        self.err(Error::MissingArg {
                            what: "gradcam".into(),
                            needed: "a conv layer (the model has none)".into(),
                            span: a.span,
                            help: None,
                        });
                        None
                    }
                }
            }
            None => None,
        };
        let view =
            |this: &mut Self, head: &str, count_key: &str, default: usize| -> Option<LayerView> {
                let st = s.one(head)?;
                let a = Args::of_statement(st);
                this.only_named(&a, head, &["layer", count_key]);
                let Some(lv) = a.get("layer") else {
                    this.err(Error::MissingArg {
                        what: head.into(),
                        needed: "`layer: NAME`".into(),
                        span: a.span,
                        help: None,
                    });
                    return None;
                };
                let (index, layer) = this.layer_ref(lv, &ir)?;
                let count = a
                    .get(count_key)
                    .and_then(|v| this.count(v, count_key, 1))
                    .unwrap_or(default);
                Some(LayerView {
                    layer,
                    index,
                    count,
                })
            };
        let activations = view(self, "activations", "samples", 1);
        let filters = view(self, "filters", "count", 8);
        let Some(data) = data else { return };
        self.out.add(CheckedStage::Explain(Explain {
            name: b.name.text.clone(),
            model: name.text.clone(),
            data,
            gradcam,
            activations,
            filters,
            span: b.name.span,
        }));
    }
}
