//! Train blocks: the model instance, data, training settings, weight import and freezing.

use crate::check::checker::{Args, Checker, Env};
use crate::check::diagnostics::{suggest, Error};
use crate::check::program::*;
use crate::check::schema::{
    Spec,
    ValueType::{Count, Data, Other},
};
use crate::lang::ast::*;

use super::{callbacks, loss, optimizer};
use crate::check::checker::detection_source;
use crate::train::detection::DetectorConfig;

pub(super) const TRAIN: &[Spec] = &[
    Spec::required("model", Other, "model scratch_big(9)"),
    Spec::required("data", Data, "data galaxy10.train"),
    Spec::derived(
        "validation",
        Data,
        "the val part of the training data's dataset",
    ),
    loss::LOSS,
    optimizer::OPTIMIZER,
    Spec::required(
        "epochs",
        Count {
            what: "epochs",
            min: 1,
        },
        "epochs 30",
    ),
    Spec::default(
        "batch",
        Count {
            what: "batch size",
            min: 1,
        },
        "32",
        "Keras's default batch size",
    ),
    super::SEED,
    Spec::optional("augment", Other),
    callbacks::EARLY_STOPPING,
    callbacks::REDUCE_LR,
    callbacks::CHECKPOINT,
    Spec::repeated("callbacks", Other),
    Spec::optional("init", Other),
    Spec::optional("freeze", Other),
    Spec::optional("trainable", Other),
    Spec::optional("anchors", Other),
];

impl<'a> Checker<'a> {
    pub fn train(&mut self, b: &'a Block) {
        let s = self.statements(b, TRAIN);
        let data = self.data_of(b, &s, "data");
        let model = s
            .one("model")
            .and_then(|st| self.first_arg(st))
            .and_then(|v| self.instantiate(v, &Env::new()).map(|r| (v, r)));
        let epochs = self.count_of(b, &s, "epochs");
        let validation = match s.one("validation") {
            Some(_) => self.data_of(b, &s, "validation"),
            None => {
                let v = data.as_ref().and_then(|d| self.default_validation(d));
                if let Some(v) = &v {
                    self.derived_of(b, &s, "validation", v);
                }
                v
            }
        };
        let anchors_st = s.one("anchors");
        let focal = anchors_st.and_then(|_| self.detector_loss(&s));
        let loss = match anchors_st {
            Some(_) => focal.map(|_| Loss {
                kind: LossKind::Focal,
                class_weights: None,
                label_smoothing: 0.0,
            }),
            None => self.loss(b, &s),
        };
        let optimizer = self.optimizer(b, &s);
        let batch = self.count_of(b, &s, "batch");
        let seed = self.count_of(b, &s, "seed").map(|x| x as u64);
        let augment = s
            .one("augment")
            .and_then(|st| self.first_arg(st))
            .and_then(|v| {
                let n = self.word(v, "an augment preset name")?;
                if self.augment_defs.contains_key(n.text.as_str()) {
                    Some(n.text.clone())
                } else {
                    let help = suggest(&n.text, self.augment_defs.keys().copied());
                    self.err(Error::UnknownName {
                        what: "augment preset".into(),
                        name: n.text.clone(),
                        span: n.span,
                        help,
                    });
                    None
                }
            });
        let mut callbacks = Vec::new();
        for st in s.all("callbacks") {
            let Some(n) = self
                .first_arg(st)
                .and_then(|v| self.word(v, "a callbacks preset name"))
                .cloned()
            else {
                continue;
            };
            match self.callback_defs.get(n.text.as_str()).copied() {
                Some(preset) => {
                    let ps = self.statements(preset, callbacks::CALLBACKS);
                    for st in ps.written() {
                        if let Some(cb) = self.callback(b, st) {
                            callbacks.push(cb);
                        }
                    }
                }
                None => {
                    let help = suggest(&n.text, self.callback_defs.keys().copied());
                    self.err(Error::UnknownName {
                        what: "callbacks preset".into(),
                        name: n.text.clone(),
                        span: n.span,
                        help,
                    });
                }
            }
        }
        for spec in callbacks::CALLBACKS {
            if let Some(st) = s.one(spec.name) {
                if let Some(cb) = self.callback(b, st) {
                    callbacks.retain(|c| std::mem::discriminant(c) != std::mem::discriminant(&cb));
                    callbacks.push(cb);
                }
            }
        }
        let init = s.one("init").and_then(|st| self.init(st));
        let (
            Some(data),
            Some((model_v, (mut ir, args))),
            Some(epochs),
            Some(loss),
            Some(optimizer),
            Some(batch),
            Some(seed),
        ) = (data, model, epochs, loss, optimizer, batch, seed)
        else {
            return;
        };
        let freeze_st = match (s.one("freeze"), s.one("trainable")) {
            (Some(f), Some(t)) => {
                self.err(Error::Repeated {
                    statement: "freeze / trainable from".into(),
                    span: t.head.span,
                    first: f.head.span,
                });
                None
            }
            (f, t) => f.or(t),
        };
        let freeze = freeze_st.and_then(|st| self.freeze(st, &ir));
        if let Some(f) = &freeze {
            // The layer's ancestors: in a chain, every layer before it.
            for i in ir.ancestors(f.index) {
                ir.layers[i].trainable = false;
            }
        }
        let mut detector = None;
        if let Some(st) = anchors_st {
            let (Some([alpha, gamma]), Some(d)) = (
                focal,
                self.detector_training(st, &ir, model_v, &data, augment.as_deref()),
            ) else {
                return;
            };
            detector = Some(Box::new(DetectorConfig { alpha, gamma, ..d }));
        } else if ir.outputs.len() > 1 {
            let names: Vec<&str> = ir
                .outputs
                .iter()
                .map(|&o| ir.layers[o].name.as_str())
                .collect();
            self.err(Error::Unsupported {
                what: format!(
                    "training a model with {} outputs ({})",
                    names.len(),
                    names.join(", ")
                ),
                span: model_v.span,
                help: Some(
                    "a train block gives each image one class label, which fits one output; the engine trains several outputs (one target each), and box targets come with detection".into(),
                ),
            });
            return;
        }
        let classes = match &detector {
            Some(d) => Some(d.classes),
            None => self.check_data_fit(&data, &ir, model_v),
        };
        let model_name = match &model_v.kind {
            ValueKind::Call { name, .. } => name.text.clone(),
            _ => crate::lang::fmt::value(model_v),
        };
        self.out.add(CheckedStage::Train(Train {
            name: b.name.text.clone(),
            model: ModelInstance {
                def: model_name,
                args,
            },
            ir,
            data,
            validation,
            classes,
            loss,
            optimizer,
            epochs,
            batch,
            seed,
            augment,
            callbacks,
            init,
            freeze,
            detector,
            span: b.name.span,
        }));
    }

    /// A detector's `anchors sizes: [...], ratios: [...]` against its model and data: two
    /// outputs (class logits, box offsets), each a join of flattened per-level maps with
    /// one anchor per ratio per cell, one size per level, and data with boxes.
    fn detector_training(
        &mut self,
        st: &Statement,
        ir: &crate::nn::ir::ModelIr,
        model_v: &Value,
        data: &DataRef,
        augment: Option<&str>,
    ) -> Option<DetectorConfig> {
        let a = Args::of_statement(st);
        self.only_named(&a, "anchors", &["sizes", "ratios"]);
        let list = |this: &mut Self, name: &str, what: &str| -> Option<Vec<f64>> {
            let Some(v) = a.get(name) else {
                this.err(Error::MissingArg {
                    what: "anchors".into(),
                    needed: format!("`{name}: [...]`, {what}"),
                    span: a.span,
                    help: Some("anchors sizes: [12, 24, 48, 96], ratios: [1, 2, 0.5]".into()),
                });
                return None;
            };
            let ValueKind::List(items) = &v.kind else {
                this.wrong_type(v, &format!("a list of {what}"), None);
                return None;
            };
            let xs: Vec<f64> = items
                .iter()
                .filter_map(|x| this.positive(x, what))
                .collect();
            (xs.len() == items.len() && !xs.is_empty()).then_some(xs)
        };
        let sizes = list(self, "sizes", "anchor sides in input pixels, one per level");
        let ratios = list(
            self,
            "ratios",
            "width / height ratios, one anchor each per cell",
        );
        let (sizes, ratios) = (sizes?, ratios?);
        match self
            .stages
            .get(data.dataset())
            .and_then(|b| detection_source(b))
        {
            None => {
                self.err(Error::WrongType {
                    expected: "detection data (images with boxes)".into(),
                    found: format!("`{}`, images with one class each", data.dataset()),
                    span: st.head.span,
                    help: Some(
                        "a detector trains on `synthetic(fields)` or `voc(...)` data; without `anchors` the block trains a classifier".into(),
                    ),
                });
                return None;
            }
            Some(source) if source.starts_with("fits") => {
                self.err(Error::Unsupported {
                    what: "training a detector on a FITS survey image".into(),
                    span: st.head.span,
                    help: Some("a FITS image has no annotated boxes; train on `synthetic(fields)` or `voc(...)` data and detect on the sky".into()),
                });
                return None;
            }
            Some(_) => {}
        }
        if ir.outputs.len() != 2 {
            self.err(Error::Unsupported {
                what: format!("a detector with {} output(s)", ir.outputs.len()),
                span: model_v.span,
                help: Some("a detector's model returns two outputs, class logits then box offsets (`output class_logits, box_offsets`), as stdlib/detectors.gpl's do".into()),
            });
            return None;
        }
        let maps = |this: &mut Self, k: usize| {
            let o = ir.outputs[k];
            let m = ir.level_maps(o);
            if m.is_none() {
                this.err(Error::Unsupported {
                    what: format!(
                        "detector output `{}` that is not a `concat` of flattened maps",
                        ir.layers[o].name
                    ),
                    span: model_v.span,
                    help: Some("each output joins `flatten`ed per-level head maps, finest first (stdlib/detectors.gpl)".into()),
                });
            }
            m
        };
        let (class_maps, box_maps) = (maps(self, 0), maps(self, 1));
        let (class_maps, box_maps) = (class_maps?, box_maps?);
        let per_cell = ratios.len();
        let misfit = |why: String| {
            Error::AnchorsMisfit {
            span: st.head.span,
            why,
            help: Some(format!(
                "the model's heads predict {} map(s); give one size per level and as many ratios as anchors per cell",
                class_maps.len()
            )),
        }
        };
        if class_maps.len() != box_maps.len() || class_maps.len() != sizes.len() {
            self.err(misfit(format!(
                "{} size(s) for {} class map(s) and {} box map(s)",
                sizes.len(),
                class_maps.len(),
                box_maps.len()
            )));
            return None;
        }
        let mut classes = None;
        for (level, (c, bx)) in class_maps.iter().zip(&box_maps).enumerate() {
            let name = format!("level {} ({}x{})", level + 1, c[0], c[1]);
            if c[..2] != bx[..2] {
                self.err(misfit(format!(
                    "{name}: the box map is {}x{}",
                    bx[0], bx[1]
                )));
                return None;
            }
            if bx[2] != 4 * per_cell {
                self.err(misfit(format!(
                    "{name}: the box map has {} channels, but {per_cell} ratio(s) need 4 x {per_cell} = {}",
                    bx[2],
                    4 * per_cell
                )));
                return None;
            }
            if c[2] % per_cell != 0 || classes.is_some_and(|k| k * per_cell != c[2]) {
                self.err(misfit(format!(
                    "{name}: the class map has {} channels, not {per_cell} anchors x the other levels' classes",
                    c[2]
                )));
                return None;
            }
            classes = Some(c[2] / per_cell);
        }
        let classes = classes?;
        if let Some(known) = self.out.dataset(data.dataset()).and_then(|d| d.classes) {
            if known > classes {
                self.err(Error::ClassCount {
                    model: ir.name.clone(),
                    units: classes,
                    dataset: data.dataset().to_string(),
                    classes: known,
                    span: model_v.span,
                    help: Some(format!(
                        "the class head scores {classes} class(es) per anchor; the data's boxes name {known}"
                    )),
                });
                return None;
            }
        }
        if let Some(preset) = augment.and_then(|n| self.augment_defs.get(n).copied()) {
            const BOX_SAFE: &[&str] = &[
                "rot90",
                "horizontal_flip",
                "vertical_flip",
                "zoom",
                "width_shift",
                "height_shift",
            ];
            // Boxes shift by one fraction of the side on both axes.
            let shift = |name: &str| {
                preset
                    .body
                    .statements()
                    .find(|s| s.head.text == name)
                    .and_then(|s| Args::of_statement(s).positional.first().copied())
                    .and_then(|v| match v.kind {
                        ValueKind::Number { value, .. } => Some((value, v.span)),
                        _ => None,
                    })
            };
            let (w, h) = (shift("width_shift"), shift("height_shift"));
            let uneven = match (w, h) {
                (Some((w, _)), Some((h, span))) => (w != h).then_some(span),
                (Some((_, span)), None) | (None, Some((_, span))) => Some(span),
                (None, None) => None,
            };
            if let Some(span) = uneven {
                self.err(Error::Unsupported {
                    what: "different width and height shifts in a detector's augmentation".into(),
                    span,
                    help: Some("a detector's fields shift by one fraction on both axes: give width_shift and height_shift the same value".into()),
                });
                return None;
            }
            for s in preset.body.statements() {
                if !BOX_SAFE.contains(&s.head.text.as_str()) {
                    self.err(Error::Unsupported {
                        what: format!("`{}` in a detector's augmentation", s.head.text),
                        span: s.head.span,
                        help: Some(format!(
                            "boxes follow {}; a rotated or sheared box no longer bounds its galaxy",
                            BOX_SAFE.join(", ")
                        )),
                    });
                    return None;
                }
            }
        }
        Some(DetectorConfig {
            levels: class_maps.iter().map(|c| [c[0], c[1]]).collect(),
            sizes,
            ratios,
            classes,
            alpha: 0.25,
            gamma: 2.0,
            beta: crate::train::detection::BOX_LOSS_BETA,
        })
    }

    pub(super) fn default_validation(&self, data: &DataRef) -> Option<DataRef> {
        let dataset = self.out.dataset(data.dataset())?;
        dataset.split.as_ref()?;
        match data {
            DataRef::Split {
                part: Part::Train, ..
            }
            | DataRef::Balance { .. } => Some(DataRef::Split {
                dataset: dataset.name.clone(),
                part: Part::Val,
            }),
            _ => None,
        }
    }

    /// The model's output against the data's class count and its input against the images.
    pub(super) fn check_data_fit(
        &mut self,
        data: &DataRef,
        ir: &crate::nn::ir::ModelIr,
        site: &Value,
    ) -> Option<usize> {
        let dataset = self.out.dataset(data.dataset())?.clone();
        if let Some(shape) = &dataset.image_shape {
            if *shape != ir.input {
                self.err(Error::InputShape {
                    model: ir.name.clone(),
                    expected: crate::nn::ir::fmt_shape(&ir.input),
                    found: crate::nn::ir::fmt_shape(shape),
                    span: site.span,
                    help: Some(format!(
                        "`{}` images are {}{}; change the model's `input`",
                        dataset.name,
                        crate::nn::ir::fmt_shape(shape),
                        match &dataset.source {
                            Source::Hdf5 { path, resolved, .. } if resolved.is_file() => {
                                format!(" (read from the header of {path})")
                            }
                            _ => String::new(),
                        }
                    )),
                });
            }
        }
        let classes = dataset.classes?;
        let units = *ir.output().last()?;
        if ir.output().len() == 1 && units != classes {
            let mut help = format!("`{}` has {classes} classes", dataset.name);
            if !dataset.drop.is_empty() {
                let dropped: Vec<String> = dataset.drop.iter().map(|c| c.to_string()).collect();
                help.push_str(&format!(" after dropping class {}", dropped.join(", ")));
            }
            help.push_str(&format!("; make the last dense layer {classes} wide"));
            self.err(Error::ClassCount {
                model: ir.name.clone(),
                units,
                dataset: dataset.name.clone(),
                classes,
                span: site.span,
                help: Some(help),
            });
        }
        Some(classes)
    }

    /// `init weights from "file" [or random]`, or `init weights from NAME`: the weights a
    /// classifier train block of this pipeline learned (transfer without downloads).
    pub(super) fn init(&mut self, st: &Statement) -> Option<InitWeights> {
        let a = Args::of_statement(st);
        if let [w, f, v] = a.positional.as_slice() {
            let is = |v: &Value, word: &str| v.as_word().is_some_and(|n| n.text == word);
            if let (true, true, Some(n)) = (is(w, "weights"), is(f, "from"), v.as_word()) {
                let n = n.clone();
                self.classifier_ref(&n)?;
                return Some(InitWeights {
                    path: String::new(),
                    resolved: Default::default(),
                    format: WeightsFormat::Safetensors,
                    optional: false,
                    stage: Some(n.text),
                });
            }
        }
        let words: Vec<Option<&str>> = a
            .positional
            .iter()
            .map(|v| v.as_word().map(|n| n.text.as_str()))
            .collect();
        let shape_ok = matches!(
            words.as_slice(),
            [Some("weights"), Some("from"), None]
                | [
                    Some("weights"),
                    Some("from"),
                    None,
                    Some("or"),
                    Some("random")
                ]
        );
        if !shape_ok {
            self.err(Error::WrongType {
                expected: "`init weights from \"file\"` (optionally `or random`) or `init weights from TRAIN`".into(),
                found: "something else".into(),
                span: a.span,
                help: None,
            });
            return None;
        }
        let path = self.string(a.positional[2], "the weights file")?;
        let format = if path.ends_with(".safetensors") {
            WeightsFormat::Safetensors
        } else if path.ends_with(".h5") || path.ends_with(".hdf5") || path.ends_with(".keras") {
            WeightsFormat::KerasH5
        } else {
            self.err(Error::WrongType {
                expected: "a .safetensors or Keras .h5 file".into(),
                found: format!("{path:?}"),
                span: a.positional[2].span,
                help: None,
            });
            return None;
        };
        let resolved = self.resolve_path(&path);
        Some(InitWeights {
            path,
            resolved,
            format,
            optional: a.positional.len() == 5,
            stage: None,
        })
    }

    /// `freeze until LAYER` / `trainable from LAYER`.
    pub(super) fn freeze(&mut self, st: &Statement, ir: &crate::nn::ir::ModelIr) -> Option<Freeze> {
        let a = Args::of_statement(st);
        let word = if st.head.text == "freeze" {
            "until"
        } else {
            "from"
        };
        let ok = a
            .positional
            .first()
            .and_then(|v| v.as_word())
            .is_some_and(|n| n.text == word);
        let layer = a.positional.get(1).filter(|_| ok);
        let Some(layer) = layer else {
            self.err(Error::WrongType {
                expected: format!("`{} {word} LAYER`", st.head.text),
                found: "something else".into(),
                span: a.span,
                help: None,
            });
            return None;
        };
        let (index, name) = self.layer_ref(layer, ir)?;
        // Freezing the layer's ancestors splits the model in two only when every path from
        // the input to an output passes through it.
        if let Some(path) = ir.path_avoiding(index) {
            let mut names = vec![crate::nn::ir::INPUT];
            names.extend(path.iter().map(|&l| ir.layers[l].name.as_str()));
            self.err(Error::FreezeOffPath {
                layer: name,
                statement: format!("{} {word}", st.head.text),
                span: layer.span,
                path: names.join(" → "),
                help: Some(
                    "name a layer every branch passes through, e.g. the join after a residual block"
                        .into(),
                ),
            });
            return None;
        }
        Some(Freeze {
            first_trainable: name,
            index,
        })
    }
}
