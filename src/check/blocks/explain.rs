//! Explain blocks: attribution maps (Grad-CAM and its relatives, gradient methods,
//! occlusion), intermediate activations and filters of a trained model.

use crate::check::checker::{Args, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType::Other, ValueType::Switch};
use crate::explain::filters::Ascent;
use crate::explain::samples::{Pick, SampleChoice, TargetClass};
use crate::explain::{Baseline, Method};
use crate::lang::ast::*;
use crate::nn::ir::{LayerOp, ModelIr};

/// The map methods, in the order the report lists them.
pub(crate) const METHODS: &[&str] = &[
    "gradcam",
    "gradcam_pp",
    "layercam",
    "scorecam",
    "saliency",
    "smoothgrad",
    "integrated_gradients",
    "occlusion",
];

pub(super) const EXPLAIN: &[Spec] = &[
    Spec::data_on("data", "galaxy10.test"),
    Spec::required("model", Other, "model scratch"),
    Spec::optional("gradcam", Other),
    Spec::optional("gradcam_pp", Other),
    Spec::optional("layercam", Other),
    Spec::optional("scorecam", Other),
    Spec::optional("saliency", Other),
    Spec::optional("smoothgrad", Other),
    Spec::optional("integrated_gradients", Other),
    Spec::optional("occlusion", Other),
    Spec::optional("activations", Other),
    Spec::optional("filters", Other),
    Spec::default(
        "sanity",
        Switch,
        "true",
        "every map method is re-run on the model with its layers randomised from the top down",
    ),
    super::SEED,
];

/// The picks written as one word (`indices([...])` is a call); `Pick` itself holds a list.
type MakePick = fn() -> Pick;

const PICKS: &[(&str, MakePick)] = &[
    ("first", || Pick::First),
    ("per_class", || Pick::PerClass),
    ("misclassified", || Pick::Misclassified),
];

const TARGETS: &[(&str, TargetClass)] = &[
    ("predicted", TargetClass::Predicted),
    ("true", TargetClass::True),
    ("each", TargetClass::Each),
];

const BASELINES: &[(&str, Baseline)] =
    &[("black", Baseline::Black), ("blurred", Baseline::Blurred)];

/// Arguments every map statement takes (`layer` only the class-activation ones).
const SAMPLE_ARGS: &[&str] = &["samples", "pick", "target"];

fn spatial(ir: &ModelIr, index: usize) -> bool {
    ir.layers[index].output.len() == 3
}

impl<'a> Checker<'a> {
    pub fn explain(&mut self, b: &'a Block) {
        let s = self.statements(b, EXPLAIN);
        let data = self.data_of(b, &s, "data");
        let seed = self.count_of(b, &s, "seed").map(|x| x as u64);
        let sanity = match self.switch_of(&s, "sanity") {
            Some(on) => on,
            None => self.default_of(b, &s, "sanity") == "true",
        };
        let Some(st) = s.one("model") else {
            return;
        };
        let Some(model_v) = self.first_arg(st) else {
            return;
        };
        // A train stage's model, or a search's best trial (`tiny.best`), whose layers are
        // those of the search's model at any point.
        let (name, ir) = match self.predictor(model_v) {
            Some(Predictor::Train { name }) => {
                let Some(ir) = self.out.train(&name).map(|t| t.ir.clone()) else {
                    return;
                };
                (name, ir)
            }
            Some(Predictor::SearchBest { name }) => {
                let Some(ir) = self.out.search(&name).map(|s| s.corner.clone()) else {
                    return;
                };
                (name, ir)
            }
            Some(Predictor::Ensemble { name }) => {
                self.err(Error::Unsupported {
                    what: format!("explaining ensemble `{name}`"),
                    span: model_v.span,
                    help: Some("explain one of its members".into()),
                });
                return;
            }
            None => return,
        };
        // Images the data can hold at most, when the checker knows (a synthetic source): an
        // index past it fails here rather than after training.
        let limit = data
            .as_ref()
            .and_then(|d| match self.out.dataset(d.dataset()) {
                Some(Dataset {
                    source: Source::Synthetic { count, .. },
                    ..
                }) => Some(*count),
                _ => None,
            });
        let mut maps = Vec::new();
        for &method in METHODS {
            if let Some(st) = s.one(method) {
                maps.extend(self.map_request(method, st, &ir, limit));
            }
        }
        let activations = s
            .one("activations")
            .and_then(|st| self.activations(st, &ir, limit));
        let filters = s
            .one("filters")
            .and_then(|st| self.filters(st, &ir, seed.unwrap_or(0)));
        let (Some(data), Some(seed)) = (data, seed) else {
            return;
        };
        self.out.add(CheckedStage::Explain(Explain {
            name: b.name.text.clone(),
            model: name,
            data,
            maps,
            activations,
            filters,
            sanity,
            seed,
            span: b.name.span,
        }));
    }

    /// `samples`, `pick` and `target` of a statement, with their defaults.
    fn sample_choice(
        &mut self,
        a: &Args,
        default_count: usize,
        limit: Option<usize>,
    ) -> Option<SampleChoice> {
        let pick = match a.get("pick") {
            None => Pick::First,
            Some(v) => match &v.kind {
                ValueKind::Call { name, args } if name.text == "indices" => {
                    let list = args.iter().find_map(|arg| match &arg.kind {
                        ArgKind::Positional(v) => Some(v),
                        ArgKind::Named(..) => None,
                    });
                    let Some(Value {
                        kind: ValueKind::List(items),
                        ..
                    }) = list
                    else {
                        self.wrong_type(v, "indices([i, j, ...])", None);
                        return None;
                    };
                    let indices: Option<Vec<usize>> = items
                        .iter()
                        .map(|i| {
                            let index = self.count(i, "an image index", 0)?;
                            if let Some(n) = limit.filter(|&n| index >= n) {
                                self.err(Error::OutOfRange {
                                    what: "image index".into(),
                                    value: index.to_string(),
                                    range: format!("0..{}", n - 1),
                                    span: i.span,
                                    help: Some(format!("the dataset has {n} images in all")),
                                });
                                return None;
                            }
                            Some(index)
                        })
                        .collect();
                    Pick::Indices(indices?)
                }
                _ => self.choice(
                    v,
                    "pick (first, per_class, misclassified or indices([...]))",
                    PICKS,
                )?(),
            },
        };
        let count = match (&pick, a.get("samples")) {
            (Pick::Indices(list), None) => list.len(),
            (_, Some(v)) => self.count(v, "samples", 1)?,
            (_, None) => default_count,
        };
        let target = match a.get("target") {
            None => TargetClass::Predicted,
            Some(v) => self.choice(v, "target (predicted, true or each)", TARGETS)?,
        };
        Some(SampleChoice {
            count,
            pick,
            target,
        })
    }

    /// The layer a class-activation method weights: written, or the last conv layer; it
    /// must have height, width and channels.
    fn cam_layer(&mut self, a: &Args, method: &str, ir: &ModelIr) -> Option<(usize, String)> {
        let qualifying: Vec<&str> = (0..ir.layers.len())
            .filter(|&i| spatial(ir, i))
            .map(|i| ir.layers[i].name.as_str())
            .collect();
        match a.get("layer") {
            Some(v) => {
                let (index, layer) = self.layer_ref(v, ir)?;
                if !spatial(ir, index) {
                    self.err(Error::LayerKind {
                        layer,
                        problem: format!("has no spatial extent, so {method} cannot map it"),
                        span: v.span,
                        help: Some(format!(
                            "layers with height, width and channels: {}",
                            qualifying.join(", ")
                        )),
                    });
                    return None;
                }
                Some((index, layer))
            }
            None => {
                let last = ir
                    .layers
                    .iter()
                    .rposition(|l| matches!(l.op, LayerOp::Conv2d { .. }));
                match last {
                    Some(i) => Some((i, ir.layers[i].name.clone())),
                    None => {
                        self.err(Error::MissingArg {
                            what: method.into(),
                            needed: format!("a conv layer, and model `{}` has none", ir.name),
                            span: a.span,
                            help: (!qualifying.is_empty()).then(|| {
                                format!(
                                    "name a layer with `layer:`; these qualify: {}",
                                    qualifying.join(", ")
                                )
                            }),
                        });
                        None
                    }
                }
            }
        }
    }

    fn map_request(
        &mut self,
        method: &str,
        st: &Statement,
        ir: &ModelIr,
        limit: Option<usize>,
    ) -> Option<MapRequest> {
        let a = Args::of_statement(st);
        let extra: &[&str] = match method {
            "gradcam" | "gradcam_pp" | "layercam" | "scorecam" => &["layer"],
            "smoothgrad" => &["n", "sigma"],
            "integrated_gradients" => &["steps", "baseline"],
            "occlusion" => &["window", "stride"],
            _ => &[],
        };
        let allowed: Vec<&str> = SAMPLE_ARGS.iter().chain(extra).copied().collect();
        self.only_named(&a, method, &allowed);
        let samples = self.sample_choice(&a, 8, limit)?;
        let count = |this: &mut Self, key: &str, default: usize| -> Option<usize> {
            match a.get(key) {
                Some(v) => this.count(v, key, 1),
                None => Some(default),
            }
        };
        let (method, layer) = match method {
            "gradcam" | "gradcam_pp" | "layercam" | "scorecam" => {
                let (layer, name) = self.cam_layer(&a, method, ir)?;
                let m = match method {
                    "gradcam" => Method::GradCam { layer },
                    "gradcam_pp" => Method::GradCamPp { layer },
                    "layercam" => Method::LayerCam { layer },
                    _ => Method::ScoreCam { layer },
                };
                (m, Some(name))
            }
            "saliency" => (Method::Saliency, None),
            "smoothgrad" => {
                let n = count(self, "n", 25)?;
                let sigma = match a.get("sigma") {
                    Some(v) => self.ranged(v, "sigma", 0.0, 1.0, false)? as f32,
                    None => 0.15,
                };
                (Method::SmoothGrad { n, sigma }, None)
            }
            "integrated_gradients" => {
                let steps = count(self, "steps", 32)?;
                let baseline = match a.get("baseline") {
                    Some(v) => self.choice(v, "baseline (black or blurred)", BASELINES)?,
                    None => Baseline::Black,
                };
                (Method::IntegratedGradients { steps, baseline }, None)
            }
            _ => {
                let window = count(self, "window", 8)?;
                let stride = count(self, "stride", window.div_ceil(2))?;
                (Method::Occlusion { window, stride }, None)
            }
        };
        Some(MapRequest {
            method,
            layer,
            samples,
        })
    }

    fn activations(
        &mut self,
        st: &Statement,
        ir: &ModelIr,
        limit: Option<usize>,
    ) -> Option<ActivationView> {
        let a = Args::of_statement(st);
        self.only_named(&a, "activations", &["layer", "samples", "pick"]);
        let Some(v) = a.get("layer") else {
            self.err(Error::MissingArg {
                what: "activations".into(),
                needed: "`layer: NAME` or `layer: [A, B]`".into(),
                span: a.span,
                help: None,
            });
            return None;
        };
        let values: Vec<&Value> = match &v.kind {
            ValueKind::List(items) => items.iter().collect(),
            _ => vec![v],
        };
        let layers: Option<Vec<(usize, String)>> =
            values.into_iter().map(|v| self.layer_ref(v, ir)).collect();
        let samples = self.sample_choice(&a, 1, limit)?;
        Some(ActivationView {
            layers: layers?,
            samples,
        })
    }

    fn filters(&mut self, st: &Statement, ir: &ModelIr, seed: u64) -> Option<FilterView> {
        let a = Args::of_statement(st);
        self.only_named(
            &a,
            "filters",
            &["layer", "count", "steps", "lr", "l2", "tv", "jitter"],
        );
        let Some(v) = a.get("layer") else {
            self.err(Error::MissingArg {
                what: "filters".into(),
                needed: "`layer: NAME`".into(),
                span: a.span,
                help: None,
            });
            return None;
        };
        let (index, layer) = self.layer_ref(v, ir)?;
        let channels = *ir.layers[index].output.last().unwrap_or(&0);
        let count = match a.get("count") {
            Some(c) => {
                let n = self.count(c, "count", 1)?;
                if n > channels {
                    self.err(Error::OutOfRange {
                        what: "count".into(),
                        value: n.to_string(),
                        range: format!("1..{channels}"),
                        span: c.span,
                        help: Some(format!("layer `{layer}` has {channels} channels")),
                    });
                    return None;
                }
                n
            }
            None => channels.min(8),
        };
        let number = |this: &mut Self, key: &str, default: f64| -> Option<f32> {
            match a.get(key) {
                Some(v) => this
                    .ranged(v, key, 0.0, f64::INFINITY, false)
                    .map(|x| x as f32),
                None => Some(default as f32),
            }
        };
        let steps = match a.get("steps") {
            Some(v) => self.count(v, "steps", 1)?,
            None => 100,
        };
        let jitter = match a.get("jitter") {
            Some(v) => self.count(v, "jitter", 0)?,
            None => 2,
        };
        let ascent = Ascent {
            steps,
            lr: number(self, "lr", 0.02)?,
            l2: number(self, "l2", 0.01)?,
            tv: number(self, "tv", 0.05)?,
            jitter,
            seed,
        };
        Some(FilterView {
            layer,
            index,
            count,
            ascent,
        })
    }
}
