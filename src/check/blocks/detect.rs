//! Detect blocks: which images to search and the detector that searches them. The classical
//! extractor (`method extract(...)`, SExtractor's algorithm) runs; learned detectors are a
//! coming issue and are refused here rather than accepted and dropped.

use crate::check::checker::{Args, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType::Data, ValueType::Other};
use crate::lang::ast::*;
use crate::lang::Name;

pub(super) const DETECT: &[Spec] = &[
    Spec::required("data", Data, "data fields.test"),
    Spec::default(
        "method",
        Other,
        "extract()",
        "the classical detector with SExtractor's defaults",
    ),
];

/// The learned detectors the language names; issue 17 makes them run.
/// Names people reach for that are models, not trained detectors.
const LEARNED: &[&str] = &["ssd_mobilenet", "ssd_lite", "efficientdet", "bifpn_det"];

const EXTRACT_ARGS: &[&str] = &[
    "thresh", "minarea", "deblend", "contrast", "clean", "filter", "mesh", "smooth",
];

impl<'a> Checker<'a> {
    /// `method NAME(iou:, min_score:, top_k:)`: the detector train block NAME trained.
    fn learned_method(&mut self, name: &Name, args: &[Arg], v: &Value) -> Option<DetectMethod> {
        let block = self.stages.get(name.text.as_str()).copied();
        let is_detector = block.is_some_and(|b| {
            b.kind == BlockKind::Train && b.body.statements().any(|s| s.head.text == "anchors")
        });
        if !is_detector {
            let help = if LEARNED.contains(&name.text.as_str()) {
                format!("`{}` is a model: train it in a train block with `anchors` and name that block here", name.text)
            } else if block.is_some() {
                format!("`{}` is not a train block with `anchors`", name.text)
            } else {
                "a method is `extract(...)` or the name of a train block with `anchors` (a detector)".into()
            };
            self.err(Error::UnknownName {
                what: "detector".into(),
                name: name.text.clone(),
                span: name.span,
                help: Some(help),
            });
            return None;
        }
        let a = Args::new(args.iter(), v.span);
        self.only_named(&a, &name.text, &["iou", "min_score", "top_k"]);
        if let Some(p) = a.positional.first() {
            self.wrong_type(p, "named settings like `iou: 0.5`", None);
        }
        let iou = match a.get("iou") {
            Some(x) => self.ranged(x, "NMS IoU", 0.0, 1.0, false)?,
            None => 0.5,
        };
        let min_score = match a.get("min_score") {
            Some(x) => self.ranged(x, "min_score", 0.0, 1.0, true)?,
            None => 0.05,
        };
        let top_k = match a.get("top_k") {
            Some(x) => self.count(x, "top_k", 1)?,
            None => 100,
        };
        Some(DetectMethod::Learned {
            train: name.text.clone(),
            iou,
            min_score,
            top_k,
        })
    }

    pub fn detect(&mut self, b: &'a Block) {
        let s = self.statements(b, DETECT);
        let data = self.data_of(b, &s, "data");
        let method = match s.one("method") {
            Some(st) => self.first_arg(st).and_then(|v| self.detect_method(v)),
            None => {
                self.default_of(b, &s, "method");
                Some(DetectMethod::Extract(ExtractSettings::default()))
            }
        };
        let data = data.and_then(|d| self.detection_data(d, b));
        let (Some(data), Some(method)) = (data, method) else {
            return;
        };
        self.out.add(CheckedStage::Detect(Detect {
            name: b.name.text.clone(),
            data,
            method,
            span: b.name.span,
        }));
    }

    /// The data of a detector: a dataset of images with boxes (or its split part).
    fn detection_data(&mut self, data: DataRef, b: &Block) -> Option<DataRef> {
        let span = b
            .body
            .statements()
            .find(|st| st.head.text == "data")
            .map_or(b.name.span, |st| st.span);
        if let DataRef::Balance { balance, .. } = &data {
            self.err(Error::Unsupported {
                what: format!("detection on the balance block `{balance}`"),
                span,
                help: Some("a detector reads a dataset of fields or one of its split parts".into()),
            });
            return None;
        }
        let dataset = self.out.dataset(data.dataset())?;
        if !dataset.source.is_detection() {
            let name = dataset.name.clone();
            self.err(Error::Unsupported {
                what: format!("detection on `{name}`, a dataset of single-galaxy images"),
                span,
                help: Some(
                    "a detector needs images with boxes: `source synthetic(fields, ...)`".into(),
                ),
            });
            return None;
        }
        Some(data)
    }

    fn detect_method(&mut self, v: &Value) -> Option<DetectMethod> {
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "a detector like `extract(thresh: 1.5)`", None);
                return None;
            }
        };
        if name.text != "extract" {
            return self.learned_method(name, args, v);
        }
        self.choice_name(name, "detection method", &[("extract", ())])?;
        let a = Args::new(args.iter(), v.span);
        self.only_named(&a, "extract", EXTRACT_ARGS);
        if let Some(p) = a.positional.first() {
            self.wrong_type(p, "named settings like `thresh: 1.5`", None);
        }
        let mut x = ExtractSettings::default();
        if let Some(v) = a.get("thresh") {
            x.thresh = self.ranged(v, "thresh", 0.0, f64::INFINITY, false)?;
            if x.thresh == 0.0 {
                self.wrong_type(v, "a positive threshold", None);
                return None;
            }
        }
        if let Some(v) = a.get("minarea") {
            x.minarea = self.count(v, "minarea", 1)?;
        }
        if let Some(v) = a.get("deblend") {
            x.deblend = self.count(v, "deblending levels", 1)?;
        }
        if let Some(v) = a.get("contrast") {
            x.contrast = self.ranged(v, "contrast", 0.0, 1.0, false)?;
        }
        if let Some(v) = a.get("clean") {
            x.clean = self.boolean(v)?;
        }
        if let Some(v) = a.get("filter") {
            x.filter = self.boolean(v)?;
        }
        if let Some(v) = a.get("mesh") {
            x.mesh = self.count(v, "background mesh size", 1)?;
        }
        if let Some(v) = a.get("smooth") {
            x.smooth = self.count(v, "background filter size", 1)?;
        }
        Some(DetectMethod::Extract(x))
    }
}
