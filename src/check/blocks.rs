//! Per-block checks: each block kind's statements read into the typed settings of
//! `program.rs`, with defaults filled in and recorded for `gpl check --explain`.

use super::checker::{fmt_num, statement_span, Args, Checker, Env};
use super::diagnostics::{suggest, Error};
use super::model::subst;
use super::program::*;
use crate::lang::ast::*;
use crate::lang::{Name, Span};

const MONITORS: &[&str] = &["loss", "accuracy", "val_loss", "val_accuracy"];

impl<'a> Checker<'a> {
    // ------------------------------------------------------------ dataset

    pub fn dataset(&mut self, b: &'a Block) {
        let s = self.statements(
            "dataset",
            &b.body,
            &[
                "source", "fallback", "drop", "merge", "split", "classes", "resize",
            ],
            &["drop", "merge"],
        );
        let Some(source_st) = self.require(
            b,
            &s,
            "source",
            "source hdf5(\"data/Galaxy10.h5\", images: \"images\", labels: \"ans\")",
        ) else {
            return;
        };
        let Some((source, mut classes, mut shape)) = self.source(b, source_st) else {
            return;
        };
        let mut fallback = None;
        if let Some(st) = s.one("fallback") {
            if let Some((f, c, sh)) = self.source(b, st) {
                classes = classes.or(c);
                shape = shape.or(sh);
                fallback = Some(f);
            }
        }
        let mut class_names = None;
        if let Some(st) = s.one("classes") {
            let a = Args::of_statement(st);
            match a.positional.first().map(|v| &v.kind) {
                Some(ValueKind::List(items)) => {
                    let names: Vec<String> = items
                        .iter()
                        .filter_map(|v| self.string(v, "a class name"))
                        .collect();
                    classes = Some(names.len());
                    class_names = Some(names);
                }
                Some(_) => {
                    classes = a
                        .positional
                        .first()
                        .and_then(|v| self.count(v, "class count", 2))
                }
                None => self.err(Error::MissingArg {
                    what: "classes".into(),
                    needed: "a count or a list of names".into(),
                    span: a.span,
                    help: None,
                }),
            }
        }
        let mut drop = Vec::new();
        for st in s.all("drop") {
            if let Some((list, _)) = self.class_list(st, classes, &drop, None) {
                drop.extend(list.into_iter().map(|(c, _)| c));
            }
        }
        let mut merges = Vec::new();
        for st in s.all("merge") {
            if let Some((list, into)) = self.class_list(st, classes, &drop, Some("into")) {
                let into_label = into.unwrap_or(list[0].0);
                merges.push(Merge {
                    classes: list.into_iter().map(|(c, _)| c).collect(),
                    into: into_label,
                });
            }
        }
        let label_map = match classes {
            Some(n) => label_map(n, &drop, &merges),
            None => Vec::new(),
        };
        let after = classes.map(|_| label_map.iter().flatten().max().map(|m| m + 1).unwrap_or(0));
        let split = s.one("split").and_then(|st| self.split(b, st));
        let resize = s.one("resize").and_then(|st| self.resize(st));
        if let Some([h, w]) = resize {
            let channels = shape.as_ref().and_then(|s| s.get(2).copied()).unwrap_or(3);
            shape = Some(vec![h, w, channels]);
        }
        self.out.datasets.push(Dataset {
            name: b.name.text.clone(),
            source,
            fallback,
            source_classes: classes,
            image_shape: shape,
            resize,
            drop,
            merges,
            label_map,
            classes: after,
            class_names,
            split,
            span: b.name.span,
        });
    }

    /// `resize H x W`: the size every image is resized to, each side in 1..=4096.
    fn resize(&mut self, st: &Statement) -> Option<[usize; 2]> {
        let a = Args::of_statement(st);
        let Some(v) = a.positional.first() else {
            self.err(Error::MissingArg {
                what: "resize".into(),
                needed: "a size like `69 x 69`".into(),
                span: a.span,
                help: None,
            });
            return None;
        };
        let ValueKind::Dims(d) = &v.kind else {
            self.wrong_type(v, "a size like `69 x 69`", None);
            return None;
        };
        let [h, w] = d.as_slice() else {
            self.wrong_type(v, "a size like `69 x 69`", Some("height x width".into()));
            return None;
        };
        let mut side = |x: &Value| {
            let n = self.count(x, "image side", 1)?;
            if n > 4096 {
                self.err(Error::OutOfRange {
                    what: "image side".into(),
                    value: n.to_string(),
                    range: "1..=4096".into(),
                    span: x.span,
                    help: None,
                });
                return None;
            }
            Some(n)
        };
        Some([side(h)?, side(w)?])
    }

    /// `hdf5(...)`, `folder(...)` or `synthetic(...)`, with the class count and image shape
    /// it implies when known.
    fn source(
        &mut self,
        b: &Block,
        st: &Statement,
    ) -> Option<(Source, Option<usize>, Option<Vec<usize>>)> {
        let a = Args::of_statement(st);
        let Some(v) = a.positional.first() else {
            self.err(Error::MissingArg {
                what: st.head.text.clone(),
                needed: "hdf5(...), folder(...) or synthetic(...)".into(),
                span: a.span,
                help: None,
            });
            return None;
        };
        let ValueKind::Call { name, args } = &v.kind else {
            self.wrong_type(v, "hdf5(...), folder(...) or synthetic(...)", None);
            return None;
        };
        let ca = Args::new(args.iter(), v.span);
        match name.text.as_str() {
            "hdf5" => {
                self.only_named(&ca, "hdf5", &["path", "images", "labels"]);
                let path_value = ca.positional.first().or(ca.get("path").as_ref()).copied();
                let path = match path_value {
                    Some(p) => self.string(p, "the file path")?,
                    None => {
                        self.err(Error::MissingArg {
                            what: "hdf5".into(),
                            needed: "a file path".into(),
                            span: v.span,
                            help: None,
                        });
                        return None;
                    }
                };
                let images = match ca.get("images") {
                    Some(x) => self.string(x, "the dataset name")?,
                    None => {
                        self.note_default(
                            b,
                            "source.images",
                            "\"images\"",
                            "Galaxy10's image dataset",
                        );
                        "images".into()
                    }
                };
                let labels = match ca.get("labels") {
                    Some(x) => self.string(x, "the dataset name")?,
                    None => {
                        self.note_default(
                            b,
                            "source.labels",
                            "\"ans\"",
                            "Galaxy10's label dataset",
                        );
                        "ans".into()
                    }
                };
                let resolved = self.resolve_path(&path);
                // The header only (shapes, dtypes, counts): a file that would fail to load, or
                // whose images do not fit the model, is an error here, not hours into a run.
                let shape = match resolved.is_file() {
                    true => match crate::data::hdf5::read_header(&resolved, &images, &labels) {
                        Ok(h) => Some(h.image_shape.to_vec()),
                        Err(e) => {
                            // Named as the pipeline writes it, not by its absolute path.
                            let resolved_text = resolved.display().to_string();
                            self.err(Error::DataFile {
                                message: e.to_string().replacen(&resolved_text, &path, 1),
                                span: path_value.map_or(v.span, |p| p.span),
                                help: miette::Diagnostic::help(&e).map(|h| h.to_string()),
                            });
                            return None;
                        }
                    },
                    false => None,
                };
                Some((
                    Source::Hdf5 {
                        path,
                        resolved,
                        images,
                        labels,
                    },
                    None,
                    shape,
                ))
            }
            "folder" => {
                self.only_named(&ca, "folder", &["path"]);
                let path = match ca.positional.first().or(ca.get("path").as_ref()) {
                    Some(p) => self.string(p, "the folder path")?,
                    None => {
                        self.err(Error::MissingArg {
                            what: "folder".into(),
                            needed: "a folder path".into(),
                            span: v.span,
                            help: None,
                        });
                        return None;
                    }
                };
                let resolved = self.resolve_path(&path);
                Some((Source::Folder { path, resolved }, None, None))
            }
            "synthetic" => {
                self.only_named(&ca, "synthetic", &["count", "seed"]);
                let kind_v = ca.positional.first();
                let kind = match kind_v {
                    Some(k) => self.choice(
                        k,
                        "synthetic generator",
                        &["galaxy10", "galaxy10_decals", "fields"],
                    )?,
                    None => {
                        self.note_default(
                            b,
                            &format!("{}.generator", st.head.text),
                            "galaxy10",
                            "the default generator",
                        );
                        "galaxy10".into()
                    }
                };
                let (generator, classes, shape, default_count) = match kind.as_str() {
                    "galaxy10" => (
                        SyntheticKind::Galaxy10,
                        Some(10),
                        Some(vec![69, 69, 3]),
                        21785,
                    ),
                    "galaxy10_decals" => (
                        SyntheticKind::Galaxy10Decals,
                        Some(10),
                        Some(vec![256, 256, 3]),
                        17736,
                    ),
                    _ => (SyntheticKind::Fields, None, None, 2000),
                };
                let count = match ca.get("count") {
                    Some(c) => self.count(c, "count", 1)?,
                    None => {
                        self.note_default(
                            b,
                            &format!("{}.count", st.head.text),
                            default_count,
                            "the real dataset's size",
                        );
                        default_count
                    }
                };
                let seed = match ca.get("seed") {
                    Some(x) => self.count(x, "seed", 0)? as u64,
                    None => {
                        self.note_default(
                            b,
                            &format!("{}.seed", st.head.text),
                            0,
                            "no seed written",
                        );
                        0
                    }
                };
                Some((
                    Source::Synthetic {
                        generator,
                        count,
                        seed,
                    },
                    classes,
                    shape,
                ))
            }
            other => {
                self.err(Error::UnknownName {
                    what: "data source".into(),
                    name: other.into(),
                    span: name.span,
                    help: suggest(other, ["hdf5", "folder", "synthetic"]),
                });
                None
            }
        }
    }

    /// `class 1, 2 [to N | into K]`: original labels checked against the class count and
    /// the dropped classes. Returns the labels and the number after `tail` when given.
    #[allow(clippy::type_complexity)]
    fn class_list(
        &mut self,
        st: &Statement,
        classes: Option<usize>,
        dropped: &[u32],
        tail: Option<&str>,
    ) -> Option<(Vec<(u32, Span)>, Option<u32>)> {
        let a = Args::of_statement(st);
        let mut it = a.positional.iter();
        match it.next() {
            Some(v)
                if v.as_word()
                    .is_some_and(|n| n.text == "class" || n.text == "classes") => {}
            Some(v) => {
                self.wrong_type(
                    v,
                    "`class`",
                    Some(format!("write `{} class 1, 2`", st.head.text)),
                );
                return None;
            }
            None => {
                self.err(Error::MissingArg {
                    what: st.head.text.clone(),
                    needed: "`class` and labels".into(),
                    span: a.span,
                    help: None,
                });
                return None;
            }
        }
        let mut list = Vec::new();
        let mut after = None;
        while let Some(v) = it.next() {
            if let (Some(t), Some(w)) = (tail, v.as_word()) {
                if w.text == t {
                    after = it
                        .next()
                        .and_then(|x| self.count(x, "a class", 0))
                        .map(|x| x as u32);
                    break;
                }
            }
            let c = self.count(v, "a class label", 0)? as u32;
            if let Some(n) = classes {
                if c as usize >= n {
                    self.err(Error::BadClass {
                        class: c.to_string(),
                        problem: format!("does not exist (labels are 0..{})", n - 1),
                        span: v.span,
                        help: None,
                    });
                    return None;
                }
            }
            if dropped.contains(&c) {
                self.err(Error::BadClass {
                    class: c.to_string(),
                    problem: "was dropped from the dataset".into(),
                    span: v.span,
                    help: None,
                });
                return None;
            }
            list.push((c, v.span));
        }
        if list.is_empty() {
            self.err(Error::MissingArg {
                what: st.head.text.clone(),
                needed: "at least one class label".into(),
                span: a.span,
                help: None,
            });
            return None;
        }
        Some((list, after))
    }

    fn split(&mut self, b: &Block, st: &Statement) -> Option<Split> {
        let a = Args::of_statement(st);
        let v = a.positional.first()?;
        let ValueKind::Call { name, args } = &v.kind else {
            self.wrong_type(v, "holdout(train: 0.7, val: 0.15, test: 0.15)", None);
            return None;
        };
        if name.text != "holdout" {
            self.err(Error::UnknownName {
                what: "split".into(),
                name: name.text.clone(),
                span: name.span,
                help: suggest(&name.text, ["holdout"]),
            });
            return None;
        }
        let ca = Args::new(args.iter(), v.span);
        self.only_named(
            &ca,
            "holdout",
            &["train", "val", "test", "stratify", "seed"],
        );
        let frac = |this: &mut Self, key: &str| -> Option<f64> {
            match ca.get(key) {
                Some(x) => this.ranged(x, &format!("the {key} fraction"), 0.0, 1.0, false),
                None => {
                    this.err(Error::MissingArg {
                        what: "holdout".into(),
                        needed: format!("`{key}: fraction`"),
                        span: v.span,
                        help: None,
                    });
                    None
                }
            }
        };
        let train = frac(self, "train")?;
        let val = frac(self, "val")?;
        let test = frac(self, "test")?;
        if ((train + val + test) - 1.0).abs() > 1e-6 {
            self.err(Error::SplitSum {
                sum: fmt_num(((train + val + test) * 1e6).round() / 1e6),
                span: v.span,
            });
            return None;
        }
        let stratify = match self.flag(&ca, "stratify") {
            Some(x) => x,
            None => {
                self.note_default(
                    b,
                    "split.stratify",
                    false,
                    "not written: a plain random split",
                );
                false
            }
        };
        let seed = match ca.get("seed") {
            Some(x) => self.count(x, "seed", 0)? as u64,
            None => {
                self.note_default(b, "split.seed", 0, "no seed written");
                0
            }
        };
        Some(Split {
            train,
            val,
            test,
            stratify,
            seed,
        })
    }

    // ------------------------------------------------------------ augment

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
    fn interval(&mut self, v: &Value, what: &str) -> Option<[f64; 2]> {
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

    // ------------------------------------------------------------ balance

    pub fn balance(&mut self, b: &'a Block) {
        let Some(header) = &b.header else {
            // A preset without `from`: checked where a balance `use`s it.
            return;
        };
        let Some(from) = self.data_ref(&header.value) else {
            return;
        };
        if matches!(from, DataRef::Balance { .. }) {
            self.wrong_type(
                &header.value,
                "a dataset or split part (not another balance)",
                None,
            );
            return;
        }
        // Statements of `use`d presets come first; the block's own replace a preset's of the same kind.
        let mut body_sts: Vec<&'a Statement> = Vec::new();
        for st in b.body.statements() {
            if st.head.text == "use" {
                let preset = Args::of_statement(st)
                    .positional
                    .first()
                    .and_then(|v| v.as_word())
                    .cloned();
                let own: Vec<&str> = b.body.statements().map(|s| s.head.text.as_str()).collect();
                match preset
                    .as_ref()
                    .and_then(|n| self.stage_ref(n, "balance preset", &[BlockKind::Balance]))
                {
                    Some(p) if p.header.is_none() => body_sts.extend(
                        p.body
                            .statements()
                            .filter(|s| !own.contains(&s.head.text.as_str())),
                    ),
                    Some(_) => self.err(Error::WrongType {
                        expected: "a balance preset (a balance block without `from`)".into(),
                        found: "a balance stage".into(),
                        span: st.span,
                        help: None,
                    }),
                    None => {}
                }
            }
        }
        body_sts.extend(b.body.statements().filter(|s| s.head.text != "use"));
        let known = ["downsample", "oversample", "weights", "seed", "use"];
        let dataset = self
            .out
            .datasets
            .iter()
            .find(|d| d.name == from.dataset())
            .cloned();
        let classes = dataset.as_ref().and_then(|d| d.source_classes);
        let dropped = dataset.as_ref().map(|d| d.drop.clone()).unwrap_or_default();
        let map = dataset
            .as_ref()
            .map(|d| d.label_map.clone())
            .unwrap_or_default();
        let mut out = Balance {
            name: b.name.text.clone(),
            from,
            downsample: Vec::new(),
            oversample: Vec::new(),
            weights: None,
            seed: 0,
            span: b.name.span,
        };
        let mut seed = None;
        for st in body_sts {
            let head = st.head.text.as_str();
            if !known.contains(&head) {
                self.err(Error::UnknownStatement {
                    block: "balance".into(),
                    name: head.into(),
                    span: st.head.span,
                    help: suggest(head, known),
                });
                continue;
            }
            match head {
                "downsample" | "oversample" => {
                    let Some(r) = self.resample(st, classes, &dropped, &map) else {
                        continue;
                    };
                    if head == "downsample" {
                        out.downsample.push(r)
                    } else {
                        if r.using.is_none() {
                            self.note_default(
                                b,
                                "oversample.using",
                                "none",
                                "added copies are exact duplicates",
                            );
                        }
                        out.oversample.push(r)
                    }
                }
                "weights" => {
                    let a = Args::of_statement(st);
                    out.weights = match a.positional.first() {
                        Some(v) if v.as_word().is_some_and(|n| n.text == "balanced") => {
                            Some(WeightsSpec::Balanced)
                        }
                        Some(v) => self
                            .weight_list(v, dataset.as_ref().and_then(|d| d.classes))
                            .map(|w| WeightsSpec::Explicit { weights: w }),
                        None => {
                            self.err(Error::MissingArg {
                                what: "weights".into(),
                                needed: "`balanced` or a list".into(),
                                span: a.span,
                                help: None,
                            });
                            None
                        }
                    };
                }
                _ => {
                    seed = Args::of_statement(st)
                        .positional
                        .first()
                        .and_then(|v| self.count(v, "seed", 0))
                        .map(|s| s as u64)
                }
            }
        }
        out.seed = match seed {
            Some(s) => s,
            None => {
                self.note_default(b, "seed", 0, "no seed written");
                0
            }
        };
        self.out.balances.push(out);
    }

    fn resample(
        &mut self,
        st: &Statement,
        classes: Option<usize>,
        dropped: &[u32],
        map: &[Option<usize>],
    ) -> Option<Resample> {
        let a = Args::of_statement(st);
        let (list, to) = self.class_list(st, classes, dropped, Some("to"))?;
        let Some(to) = to else {
            self.err(Error::MissingArg {
                what: st.head.text.clone(),
                needed: "a target count (`to 1200`)".into(),
                span: a.span,
                help: None,
            });
            return None;
        };
        let mut using = None;
        let pos = &a.positional;
        if let Some(i) = pos
            .iter()
            .position(|v| v.as_word().is_some_and(|n| n.text == "using"))
        {
            if let Some(n) = pos.get(i + 1).and_then(|v| v.as_word()) {
                if self.augment_defs.contains_key(n.text.as_str()) {
                    using = Some(n.text.clone());
                } else {
                    let help = suggest(&n.text, self.augment_defs.keys().copied());
                    self.err(Error::UnknownName {
                        what: "augment preset".into(),
                        name: n.text.clone(),
                        span: n.span,
                        help,
                    });
                    return None;
                }
            }
        }
        let mapped = list
            .iter()
            .map(|(c, _)| {
                map.get(*c as usize)
                    .copied()
                    .flatten()
                    .unwrap_or(*c as usize)
            })
            .collect();
        Some(Resample {
            classes: mapped,
            original: list.iter().map(|(c, _)| *c).collect(),
            to: to as usize,
            using,
        })
    }

    fn weight_list(&mut self, v: &Value, classes: Option<usize>) -> Option<Vec<f64>> {
        let ValueKind::List(items) = &v.kind else {
            self.wrong_type(v, "`balanced` or a list of weights", None);
            return None;
        };
        let w: Vec<f64> = items
            .iter()
            .filter_map(|x| self.ranged(x, "a class weight", 0.0, f64::INFINITY, false))
            .collect();
        if let Some(n) = classes {
            if w.len() != n {
                self.err(Error::OutOfRange {
                    what: "the number of class weights".into(),
                    value: w.len().to_string(),
                    range: format!("exactly {n} (one per class)"),
                    span: v.span,
                    help: None,
                });
                return None;
            }
        }
        Some(w)
    }

    // ------------------------------------------------------------ train

    pub fn train(&mut self, b: &'a Block) {
        const KEYS: &[&str] = &[
            "model",
            "data",
            "validation",
            "loss",
            "optimizer",
            "epochs",
            "batch",
            "seed",
            "augment",
            "early_stopping",
            "reduce_lr",
            "checkpoint",
            "callbacks",
            "init",
            "freeze",
            "trainable",
        ];
        let s = self.statements("train", &b.body, KEYS, &["callbacks"]);
        let model_st = self.require(b, &s, "model", "model scratch_big(9)");
        let data_st = self.require(b, &s, "data", "data galaxy10.train");
        let epochs_st = self.require(b, &s, "epochs", "epochs 30");
        let data = data_st
            .and_then(|st| self.first_arg(st))
            .and_then(|v| self.data_ref(v));
        let model = model_st
            .and_then(|st| self.first_arg(st))
            .and_then(|v| self.instantiate(v, &Env::new()).map(|r| (v, r)));
        let epochs = epochs_st
            .and_then(|st| self.first_arg(st))
            .and_then(|v| self.count(v, "epochs", 1));
        let validation = match s.one("validation") {
            Some(st) => self.first_arg(st).and_then(|v| self.data_ref(v)),
            None => {
                let v = data.as_ref().and_then(|d| self.default_validation(d));
                if let Some(v) = &v {
                    self.note_default(
                        b,
                        "validation",
                        v,
                        "the val part of the training data's dataset",
                    );
                }
                v
            }
        };
        let loss = self.loss(b, s.one("loss"));
        let optimizer = self.optimizer(b, s.one("optimizer"));
        let batch = match s.one("batch") {
            Some(st) => self
                .first_arg(st)
                .and_then(|v| self.count(v, "batch size", 1)),
            None => {
                self.note_default(b, "batch", 32, "Keras's default batch size");
                Some(32)
            }
        };
        let seed = match s.one("seed") {
            Some(st) => self
                .first_arg(st)
                .and_then(|v| self.count(v, "seed", 0))
                .map(|x| x as u64),
            None => {
                self.note_default(b, "seed", 0, "no seed written");
                Some(0)
            }
        };
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
                    let ps = self.statements(
                        "callbacks",
                        &preset.body,
                        &["early_stopping", "reduce_lr", "checkpoint"],
                        &[],
                    );
                    for st in ps.by_head.values().flatten() {
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
        for head in ["early_stopping", "reduce_lr", "checkpoint"] {
            if let Some(st) = s.one(head) {
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
            for layer in &mut ir.layers[..f.index] {
                layer.trainable = false;
            }
        }
        let classes = self.check_data_fit(&data, &ir, model_v);
        let model_name = match &model_v.kind {
            ValueKind::Call { name, .. } => name.text.clone(),
            _ => crate::lang::fmt::value(model_v),
        };
        self.out.trains.push(Train {
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
            span: b.name.span,
        });
    }

    pub fn first_arg<'s>(&mut self, st: &'s Statement) -> Option<&'s Value> {
        let v = st
            .call
            .iter()
            .flatten()
            .chain(st.args())
            .next()
            .map(|a| a.value());
        if v.is_none() {
            self.err(Error::MissingArg {
                what: st.head.text.clone(),
                needed: "a value".into(),
                span: statement_span(st),
                help: None,
            });
        }
        v
    }

    fn default_validation(&self, data: &DataRef) -> Option<DataRef> {
        let dataset = self
            .out
            .datasets
            .iter()
            .find(|d| d.name == data.dataset())?;
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
    fn check_data_fit(
        &mut self,
        data: &DataRef,
        ir: &crate::nn::ir::ModelIr,
        site: &Value,
    ) -> Option<usize> {
        let dataset = self
            .out
            .datasets
            .iter()
            .find(|d| d.name == data.dataset())?
            .clone();
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

    fn loss(&mut self, b: &Block, st: Option<&Statement>) -> Option<Loss> {
        let Some(st) = st else {
            self.note_default(b, "loss", "crossentropy", "the classification loss");
            return Some(Loss {
                kind: LossKind::Crossentropy,
                class_weights: None,
                label_smoothing: 0.0,
            });
        };
        let v = self.first_arg(st)?;
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "a loss like `crossentropy(weights: partial)`", None);
                return None;
            }
        };
        if name.text != "crossentropy" {
            self.err(Error::UnknownName {
                what: "loss".into(),
                name: name.text.clone(),
                span: name.span,
                help: suggest(&name.text, ["crossentropy"]),
            });
            return None;
        }
        let a = Args::new(args.iter(), v.span);
        self.only_named(&a, "crossentropy", &["weights", "label_smoothing"]);
        let class_weights = match a.get("weights") {
            None => None,
            Some(w) => match &w.kind {
                ValueKind::List(_) => self
                    .weight_list(w, None)
                    .map(|weights| ClassWeights::Explicit { weights }),
                _ => {
                    let n = self.word(w, "a balance name, `balanced` or a list")?;
                    if n.text == "balanced" && !self.stages.contains_key("balanced") {
                        Some(ClassWeights::Balanced)
                    } else {
                        let bal = self.stage_ref(n, "balance", &[BlockKind::Balance])?;
                        if !bal
                            .body
                            .statements()
                            .any(|s| s.head.text == "weights" || s.head.text == "use")
                        {
                            self.err(Error::MissingStatement {
                                block: "balance".into(),
                                name: n.text.clone(),
                                statement: "weights".into(),
                                span: n.span,
                                help: Some(format!("add `weights balanced` to balance {}", n.text)),
                            });
                            return None;
                        }
                        Some(ClassWeights::Balance {
                            balance: n.text.clone(),
                        })
                    }
                }
            },
        };
        let label_smoothing = match a.get("label_smoothing") {
            Some(x) => self.ranged(x, "label smoothing", 0.0, 1.0, true)?,
            None => 0.0,
        };
        Some(Loss {
            kind: LossKind::Crossentropy,
            class_weights,
            label_smoothing,
        })
    }

    fn optimizer(&mut self, b: &Block, st: Option<&Statement>) -> Option<Optimizer> {
        let mut o = Optimizer {
            kind: OptimizerKind::Adam,
            lr: 1e-3,
            momentum: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            rho: 0.9,
            eps: 1e-7,
        };
        let Some(st) = st else {
            self.note_default(
                b,
                "optimizer",
                "adam(lr: 0.001, beta1: 0.9, beta2: 0.999, eps: 1e-7)",
                "Keras's Adam defaults",
            );
            return Some(o);
        };
        let v = self.first_arg(st)?;
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "an optimizer like `adam(lr: 1e-3)`", None);
                return None;
            }
        };
        let a = Args::new(args.iter(), v.span);
        let (kind, allowed, default_lr): (OptimizerKind, &[&str], f64) = match name.text.as_str() {
            "adam" => (OptimizerKind::Adam, &["lr", "beta1", "beta2", "eps"], 1e-3),
            "adamw" => (
                OptimizerKind::Adamw,
                &["lr", "beta1", "beta2", "eps", "weight_decay"],
                1e-3,
            ),
            "sgd" => (OptimizerKind::Sgd, &["lr", "momentum", "nesterov"], 1e-2),
            "rmsprop" => (
                OptimizerKind::Rmsprop,
                &["lr", "rho", "momentum", "eps"],
                1e-3,
            ),
            other => {
                self.err(Error::UnknownName {
                    what: "optimizer".into(),
                    name: other.into(),
                    span: name.span,
                    help: suggest(other, ["adam", "adamw", "sgd", "rmsprop"]),
                });
                return None;
            }
        };
        self.only_named(&a, &name.text, allowed);
        o.kind = kind;
        if kind == OptimizerKind::Adamw {
            o.weight_decay = 0.004;
        }
        let opt = name.text.clone();
        o.lr = match a
            .positional
            .iter()
            .copied()
            .find(|v| v.as_word().is_none())
            .or(a.get("lr"))
        {
            Some(x) => self.positive(x, "learning rate")?,
            None => {
                self.note_default(
                    b,
                    "optimizer.lr",
                    fmt_num(default_lr),
                    &format!("Keras's {opt} default"),
                );
                default_lr
            }
        };
        let fields: [(&str, &mut f64, f64, f64, bool); 5] = [
            ("beta1", &mut o.beta1, 0.0, 1.0, true),
            ("beta2", &mut o.beta2, 0.0, 1.0, true),
            ("eps", &mut o.eps, 0.0, 1.0, false),
            ("momentum", &mut o.momentum, 0.0, 1.0, true),
            ("rho", &mut o.rho, 0.0, 1.0, true),
        ];
        for (key, slot, lo, hi, open) in fields {
            if !allowed.contains(&key) {
                continue;
            }
            match a.get(key) {
                Some(x) => *slot = self.ranged(x, key, lo, hi, open)?,
                None => self.defaults.push(DefaultNote {
                    block: format!("train {}", b.name.text),
                    setting: format!("optimizer.{key}"),
                    value: fmt_num(*slot),
                    reason: format!("Keras's {opt} default"),
                }),
            }
        }
        if let Some(x) = a.get("weight_decay") {
            o.weight_decay = self.ranged(x, "weight decay", 0.0, 1.0, false)?;
        }
        o.nesterov = self.flag(&a, "nesterov").unwrap_or(false);
        Some(o)
    }

    fn monitor(&mut self, a: &Args, b: &Block, cb: &str) -> Option<(String, Mode)> {
        let monitor = match a.get("monitor") {
            Some(v) => self.choice(v, "metric", MONITORS)?,
            None => {
                self.note_default(b, &format!("{cb}.monitor"), "val_loss", "Keras's default");
                "val_loss".into()
            }
        };
        let auto = if monitor.contains("acc") {
            Mode::Max
        } else {
            Mode::Min
        };
        let mode = match a.get("mode") {
            Some(v) => match self.choice(v, "mode", &["auto", "min", "max"])?.as_str() {
                "min" => Mode::Min,
                "max" => Mode::Max,
                _ => auto,
            },
            None => auto,
        };
        Some((monitor, mode))
    }

    fn callback(&mut self, b: &Block, st: &Statement) -> Option<Callback> {
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
        match head {
            "early_stopping" => {
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
            "reduce_lr" => {
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
            _ => {
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

    /// `init weights from "file" [or random]`
    fn init(&mut self, st: &Statement) -> Option<InitWeights> {
        let a = Args::of_statement(st);
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
                expected: "`init weights from \"file\"` (optionally `or random`)".into(),
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
        })
    }

    /// `freeze until LAYER` / `trainable from LAYER`.
    fn freeze(&mut self, st: &Statement, ir: &crate::nn::ir::ModelIr) -> Option<Freeze> {
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
        Some(Freeze {
            first_trainable: name,
            index,
        })
    }

    /// A layer by name or 1-based position.
    fn layer_ref(&mut self, v: &Value, ir: &crate::nn::ir::ModelIr) -> Option<(usize, String)> {
        if let ValueKind::Number { .. } = v.kind {
            let i = self.count(v, "layer number", 1)?;
            if i > ir.layers.len() {
                self.err(Error::OutOfRange {
                    what: "layer number".into(),
                    value: i.to_string(),
                    range: format!("1..{}", ir.layers.len()),
                    span: v.span,
                    help: None,
                });
                return None;
            }
            return Some((i - 1, ir.layers[i - 1].name.clone()));
        }
        let text = match &v.kind {
            ValueKind::Str(s) => s.clone(),
            _ => self.word(v, "a layer name")?.text.clone(),
        };
        match ir.layer_index(&text) {
            Some(i) => Some((i, text)),
            None => {
                let help = suggest(&text, ir.layers.iter().map(|l| l.name.as_str()));
                let help = Some(match help {
                    Some(h) => format!("{h} (a layer of model `{}`)", ir.name),
                    None => format!(
                        "model `{}` has no layer of that name; `gpl check` lists its layers",
                        ir.name
                    ),
                });
                self.err(Error::UnknownName {
                    what: "layer".into(),
                    name: text,
                    span: v.span,
                    help,
                });
                None
            }
        }
    }

    // ------------------------------------------------------------ evaluation

    fn data_or_header(
        &mut self,
        b: &Block,
        s: &super::checker::Stmts,
        example: &str,
    ) -> Option<DataRef> {
        match (&b.header, s.one("data")) {
            (Some(h), _) if h.word == HeaderWord::On => self.data_ref(&h.value),
            (_, Some(st)) => self.first_arg(st).and_then(|v| self.data_ref(v)),
            _ => {
                self.err(Error::MissingStatement {
                    block: b.kind.to_string(),
                    name: b.name.text.clone(),
                    statement: "on DATA".into(),
                    span: b.name.span,
                    help: Some(format!("write `{example}`")),
                });
                None
            }
        }
    }

    pub fn evaluate(&mut self, b: &'a Block) {
        let s = self.statements(
            "evaluate",
            &b.body,
            &[
                "models",
                "data",
                "report",
                "confusion",
                "roc",
                "predictions",
            ],
            &[],
        );
        let data = self.data_or_header(
            b,
            &s,
            &format!("evaluate {} on galaxy10.test {{ ... }}", b.name.text),
        );
        let models: Vec<Predictor> = match self.require(b, &s, "models", "models scratch, vgg_ft") {
            Some(st) => Args::of_statement(st)
                .positional
                .iter()
                .filter_map(|v| self.predictor(v))
                .collect(),
            None => Vec::new(),
        };
        let any = ["report", "confusion", "roc", "predictions"]
            .iter()
            .any(|k| s.has(k));
        if !any {
            self.note_default(
                b,
                "outputs",
                "report, confusion, roc",
                "no output statement written",
            );
        }
        let Some(data) = data else { return };
        self.out.evaluates.push(Evaluate {
            name: b.name.text.clone(),
            models,
            data,
            report: s.has("report") || !any,
            confusion: s.has("confusion") || !any,
            roc: s.has("roc") || !any,
            predictions: s.has("predictions"),
            span: b.name.span,
        });
    }

    pub fn ensemble(&mut self, b: &'a Block) {
        let s = self.statements("ensemble", &b.body, &["members", "weights"], &[]);
        let Some(st) = self.require(b, &s, "members", "members scratch: 0.6, vgg_ft: 0.4") else {
            return;
        };
        let a = Args::of_statement(st);
        let mut members = Vec::new();
        let mut fixed = Vec::new();
        for v in &a.positional {
            if let Some(n) = self.word(v, "a train name").cloned() {
                if self.stage_ref(&n, "train", &[BlockKind::Train]).is_some() {
                    members.push(n.text.clone());
                }
            }
        }
        for (n, v) in &a.named {
            if self.stage_ref(n, "train", &[BlockKind::Train]).is_some() {
                members.push(n.text.clone());
                if let Some(w) = self.ranged(v, "an ensemble weight", 0.0, f64::INFINITY, false) {
                    fixed.push(w);
                }
            }
        }
        if !a.named.is_empty() && !a.positional.is_empty() {
            self.err(Error::WrongType {
                expected: "every member with a weight, or none".into(),
                found: "a mix".into(),
                span: a.span,
                help: None,
            });
            return;
        }
        let weights = match (s.one("weights"), a.named.is_empty()) {
            (Some(w), true) => self.ensemble_weights(w, members.len()),
            (Some(w), false) => {
                self.err(Error::Repeated {
                    statement: "weights".into(),
                    span: w.head.span,
                    first: st.head.span,
                });
                None
            }
            (None, false) => Some(EnsembleWeights::Fixed { weights: fixed }),
            (None, true) => {
                self.note_default(b, "weights", "equal", "no weights written");
                Some(EnsembleWeights::Fixed {
                    weights: vec![1.0 / members.len().max(1) as f64; members.len()],
                })
            }
        };
        let Some(weights) = weights else { return };
        if let EnsembleWeights::Fixed { weights } = &weights {
            if weights.iter().sum::<f64>() <= 0.0 {
                self.err(Error::OutOfRange {
                    what: "the sum of ensemble weights".into(),
                    value: "0".into(),
                    range: "(0, ∞)".into(),
                    span: a.span,
                    help: None,
                });
            }
        }
        self.out.ensembles.push(Ensemble {
            name: b.name.text.clone(),
            members,
            weights,
            span: b.name.span,
        });
    }

    fn ensemble_weights(&mut self, st: &Statement, n: usize) -> Option<EnsembleWeights> {
        let a = Args::of_statement(st);
        let first = a.positional.first()?;
        let is_search = match &first.kind {
            ValueKind::Path(p) => p.len() == 1 && p[0].text == "search",
            ValueKind::Call { name, .. } => name.text == "search",
            _ => false,
        };
        if is_search {
            let step = match &first.kind {
                ValueKind::Call { args, .. } => {
                    let ca = Args::new(args.iter(), first.span);
                    self.only_named(&ca, "search", &["step"]);
                    match ca.get("step") {
                        Some(v) => self.ranged(v, "search step", 0.001, 0.5, false)?,
                        None => 0.05,
                    }
                }
                _ => 0.05,
            };
            let on_ok = a
                .positional
                .get(1)
                .and_then(|v| v.as_word())
                .is_some_and(|w| w.text == "on");
            let Some(data) = a.positional.get(2).filter(|_| on_ok) else {
                self.err(Error::MissingArg {
                    what: "weights search".into(),
                    needed: "`on DATA` (e.g. `on galaxy10.val`)".into(),
                    span: a.span,
                    help: None,
                });
                return None;
            };
            let on = self.data_ref(data)?;
            return Some(EnsembleWeights::Search { on, step });
        }
        let w: Vec<f64> = a
            .positional
            .iter()
            .filter_map(|v| self.ranged(v, "an ensemble weight", 0.0, f64::INFINITY, false))
            .collect();
        if w.len() != n {
            self.err(Error::OutOfRange {
                what: "the number of weights".into(),
                value: w.len().to_string(),
                range: format!("exactly {n} (one per member)"),
                span: a.span,
                help: None,
            });
            return None;
        }
        Some(EnsembleWeights::Fixed { weights: w })
    }

    pub fn crossval(&mut self, b: &'a Block) {
        let s = self.statements(
            "crossval",
            &b.body,
            &[
                "data", "folds", "stratify", "seed", "compare", "test", "metrics",
            ],
            &[],
        );
        let data = self.data_or_header(
            b,
            &s,
            &format!("crossval {} on galaxy10 {{ ... }}", b.name.text),
        );
        let folds = match s.one("folds") {
            Some(st) => self.first_arg(st).and_then(|v| self.count(v, "folds", 2)),
            None => {
                self.note_default(b, "folds", 5, "the usual k");
                Some(5)
            }
        };
        let stratify = s.has("stratify");
        let seed = match s.one("seed") {
            Some(st) => self
                .first_arg(st)
                .and_then(|v| self.count(v, "seed", 0))
                .map(|x| x as u64),
            None => {
                self.note_default(b, "seed", 0, "no seed written");
                Some(0)
            }
        };
        let compare: Vec<String> = match self.require(b, &s, "compare", "compare scratch, vgg_ft") {
            Some(st) => {
                let names: Vec<Name> = Args::of_statement(st)
                    .positional
                    .iter()
                    .filter_map(|v| self.word(v, "a train name").cloned())
                    .collect();
                names
                    .into_iter()
                    .filter_map(|n| {
                        self.stage_ref(&n, "train", &[BlockKind::Train])
                            .map(|_| n.text.clone())
                    })
                    .collect()
            }
            None => Vec::new(),
        };
        let test = match s.one("test") {
            Some(st) => match self
                .first_arg(st)
                .and_then(|v| self.choice(v, "statistical test", &["wilcoxon", "paired_t", "none"]))
                .as_deref()
            {
                Some("wilcoxon") => Some(StatTest::Wilcoxon),
                Some("paired_t") => Some(StatTest::PairedT),
                _ => None,
            },
            None => None,
        };
        let metrics = match s.one("metrics") {
            Some(st) => Args::of_statement(st)
                .positional
                .iter()
                .filter_map(|v| {
                    self.choice(
                        v,
                        "metric",
                        &["accuracy", "precision", "recall", "f1", "auc"],
                    )
                })
                .collect(),
            None => {
                self.note_default(
                    b,
                    "metrics",
                    "accuracy, precision, recall",
                    "the report's CV table",
                );
                vec!["accuracy".into(), "precision".into(), "recall".into()]
            }
        };
        let (Some(data), Some(folds), Some(seed)) = (data, folds, seed) else {
            return;
        };
        self.out.crossvals.push(Crossval {
            name: b.name.text.clone(),
            data,
            folds,
            stratify,
            seed,
            compare,
            test,
            metrics,
            span: b.name.span,
        });
    }

    pub fn explain(&mut self, b: &'a Block) {
        let s = self.statements(
            "explain",
            &b.body,
            &["model", "data", "gradcam", "activations", "filters"],
            &[],
        );
        let data = self.data_or_header(
            b,
            &s,
            &format!("explain {} on galaxy10.test {{ ... }}", b.name.text),
        );
        let Some(st) = self.require(b, &s, "model", "model scratch") else {
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
        let ir = self
            .out
            .trains
            .iter()
            .find(|t| t.name == name.text)
            .map(|t| t.ir.clone());
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
        self.out.explains.push(Explain {
            name: b.name.text.clone(),
            model: name.text.clone(),
            data,
            gradcam,
            activations,
            filters,
            span: b.name.span,
        });
    }

    pub fn search(&mut self, b: &'a Block) {
        let s = self.statements(
            "search",
            &b.body,
            &["model", "train", "space", "strategy", "objective"],
            &[],
        );
        let model_st = self.require(b, &s, "model", "model tiny_net");
        let train_st = self.require(b, &s, "train", "train scratch");
        let space_st = self.require(b, &s, "space", "space { f1 in 8..64 }");
        let (Some(model_st), Some(train_st), Some(space_st)) = (model_st, train_st, space_st)
        else {
            return;
        };
        let Some(model_v) = self.first_arg(model_st) else {
            return;
        };
        let train = self
            .first_arg(train_st)
            .and_then(|v| self.word(v, "a train name"))
            .cloned();
        let train = train.and_then(|n| {
            self.stage_ref(&n, "train", &[BlockKind::Train])
                .map(|_| n.text.clone())
        });
        let mut space = Vec::new();
        let mut lo_env = Env::new();
        let mut hi_env = Env::new();
        for st in space_st.body.iter().flat_map(|b| b.statements()) {
            let a = Args::of_statement(st);
            let in_ok = a
                .positional
                .first()
                .and_then(|v| v.as_word())
                .is_some_and(|n| n.text == "in");
            let Some(dom_v) = a.positional.get(1).filter(|_| in_ok) else {
                self.err(Error::WrongType {
                    expected: "`name in lo..hi` or `name in [a, b]`".into(),
                    found: "something else".into(),
                    span: a.span,
                    help: None,
                });
                continue;
            };
            // Corner values carry the dimension's span, so errors point at its line's name.
            let at = |v: &Value, span: Span| -> Value {
                Value {
                    kind: v.kind.clone(),
                    span,
                }
            };
            let domain = match &dom_v.kind {
                ValueKind::Range(lo, hi) => {
                    let is_int = |v: &Value| matches!(&v.kind, ValueKind::Number { text, .. } if !text.contains(['.', 'e', 'E']));
                    let (Some(l), Some(h)) =
                        (self.num(lo, "range start"), self.num(hi, "range end"))
                    else {
                        continue;
                    };
                    if l > h {
                        self.err(Error::OutOfRange {
                            what: "the range".into(),
                            value: format!("{}..{}", fmt_num(l), fmt_num(h)),
                            range: "lo <= hi".into(),
                            span: dom_v.span,
                            help: None,
                        });
                        continue;
                    }
                    lo_env.insert(st.head.text.clone(), at(lo, st.head.span));
                    hi_env.insert(st.head.text.clone(), at(hi, st.head.span));
                    if is_int(lo) && is_int(hi) {
                        Domain::Int {
                            lo: l as i64,
                            hi: h as i64,
                        }
                    } else {
                        Domain::Float { lo: l, hi: h }
                    }
                }
                ValueKind::List(items) if !items.is_empty() => {
                    let values: Vec<f64> = items
                        .iter()
                        .filter_map(|v| self.num(v, "a choice"))
                        .collect();
                    lo_env.insert(st.head.text.clone(), at(&items[0], st.head.span));
                    hi_env.insert(
                        st.head.text.clone(),
                        at(&items[items.len() - 1], st.head.span),
                    );
                    Domain::Choice { values }
                }
                _ => {
                    self.wrong_type(dom_v, "a range `8..64` or a list `[3, 5, 7]`", None);
                    continue;
                }
            };
            space.push(Dimension {
                name: st.head.text.clone(),
                domain,
            });
        }
        // The corners of the space must build: catches a kernel too big for the smallest map.
        let built = self
            .instantiate(&with_dims(model_v, &lo_env), &Env::new())
            .is_some()
            && self
                .instantiate(&with_dims(model_v, &hi_env), &Env::new())
                .is_some();
        if !built {
            return;
        }
        let strategy = match s.one("strategy") {
            Some(st) => self.strategy(st),
            None => {
                self.note_default(
                    b,
                    "strategy",
                    "random(trials: 20, seed: 0)",
                    "no strategy written",
                );
                Some(Strategy {
                    kind: StrategyKind::Random,
                    trials: 20,
                    init: 0,
                    seed: 0,
                })
            }
        };
        let objective = match s.one("objective") {
            Some(st) => {
                let a = Args::of_statement(st);
                let mode = a
                    .positional
                    .first()
                    .and_then(|v| self.choice(v, "objective direction", &["maximize", "minimize"]));
                let metric = a
                    .positional
                    .get(1)
                    .and_then(|v| self.choice(v, "metric", MONITORS));
                match (mode, metric) {
                    (Some(m), Some(metric)) => Some(Objective {
                        mode: if m == "maximize" {
                            Mode::Max
                        } else {
                            Mode::Min
                        },
                        metric,
                    }),
                    _ => None,
                }
            }
            None => {
                self.note_default(
                    b,
                    "objective",
                    "maximize val_accuracy",
                    "no objective written",
                );
                Some(Objective {
                    mode: Mode::Max,
                    metric: "val_accuracy".into(),
                })
            }
        };
        let model = match &model_v.kind {
            ValueKind::Call { name, .. } => name.text.clone(),
            _ => crate::lang::fmt::value(model_v),
        };
        let fixed = match &model_v.kind {
            ValueKind::Call { args, .. } => args
                .iter()
                .filter_map(|a| {
                    a.name()
                        .map(|n| (n.text.clone(), crate::lang::fmt::value(a.value())))
                })
                .collect(),
            _ => Vec::new(),
        };
        let (Some(train), Some(strategy), Some(objective)) = (train, strategy, objective) else {
            return;
        };
        self.out.searches.push(Search {
            name: b.name.text.clone(),
            model,
            train,
            fixed,
            space,
            strategy,
            objective,
            span: b.name.span,
        });
    }

    fn strategy(&mut self, st: &Statement) -> Option<Strategy> {
        let v = self.first_arg(st)?;
        let (name, args) = match &v.kind {
            ValueKind::Call { name, args } => (name, args.as_slice()),
            ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
            _ => {
                self.wrong_type(v, "a strategy like `bayes(trials: 30, init: 8)`", None);
                return None;
            }
        };
        let kind = match self
            .choice(
                &Value {
                    kind: ValueKind::Path(vec![name.clone()]),
                    span: name.span,
                },
                "search strategy",
                &["bayes", "random", "grid"],
            )?
            .as_str()
        {
            "bayes" => StrategyKind::Bayes,
            "grid" => StrategyKind::Grid,
            _ => StrategyKind::Random,
        };
        let a = Args::new(args.iter(), v.span);
        self.only_named(&a, &name.text, &["trials", "init", "seed"]);
        let trials = a
            .get("trials")
            .map(|x| self.count(x, "trials", 1))
            .unwrap_or(Some(20))?;
        let init = a
            .get("init")
            .map(|x| self.count(x, "initial random trials", 0))
            .unwrap_or(Some(if kind == StrategyKind::Bayes { 5 } else { 0 }))?;
        let seed = a
            .get("seed")
            .map(|x| self.count(x, "seed", 0))
            .unwrap_or(Some(0))? as u64;
        if init > trials {
            self.err(Error::OutOfRange {
                what: "init".into(),
                value: init.to_string(),
                range: format!("at most trials ({trials})"),
                span: v.span,
                help: None,
            });
            return None;
        }
        Some(Strategy {
            kind,
            trials,
            init,
            seed,
        })
    }

    pub fn chain(&mut self, b: &'a Block) {
        // Reports unknown heads; the steps are read in order below.
        self.statements(
            "chain",
            &b.body,
            &["detect", "crop", "classify", "output"],
            &[],
        );
        let mut steps = Vec::new();
        for st in b.body.statements() {
            let a = Args::of_statement(st);
            match st.head.text.as_str() {
                "detect" => {
                    let Some(v) = a.positional.first() else {
                        continue;
                    };
                    let (name, args) = match &v.kind {
                        ValueKind::Call { name, args } => (name, args.as_slice()),
                        ValueKind::Path(p) if p.len() == 1 => (&p[0], &[][..]),
                        _ => continue,
                    };
                    if self
                        .stage_ref(name, "detector", &[BlockKind::Detect])
                        .is_none()
                    {
                        continue;
                    }
                    let ca = Args::new(args.iter(), v.span);
                    self.only_named(&ca, "detect", &["min_score"]);
                    let min_score = ca
                        .get("min_score")
                        .and_then(|x| self.ranged(x, "min_score", 0.0, 1.0, false))
                        .unwrap_or(0.5);
                    steps.push(ChainStep::Detect {
                        detector: name.text.clone(),
                        min_score,
                    });
                }
                "crop" => {
                    if let Some(v) = a.positional.first() {
                        if let ValueKind::Dims(d) = &v.kind {
                            if let (Some(h), Some(w)) = (
                                d.first().and_then(|x| self.count(x, "crop size", 1)),
                                d.get(1).and_then(|x| self.count(x, "crop size", 1)),
                            ) {
                                steps.push(ChainStep::Crop { size: [h, w] });
                            }
                        } else {
                            self.wrong_type(v, "a size like `69 x 69`", None);
                        }
                    }
                }
                "classify" => {
                    if let Some(p) = a.positional.first().and_then(|v| self.predictor(v)) {
                        steps.push(ChainStep::Classify { model: p });
                    }
                }
                "output" => {
                    if let Some(p) = a
                        .positional
                        .first()
                        .and_then(|v| self.string(v, "the output file"))
                    {
                        steps.push(ChainStep::Output { path: p });
                    }
                }
                _ => {}
            }
        }
        self.out.chains.push(Chain {
            name: b.name.text.clone(),
            steps,
            span: b.name.span,
        });
    }

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

    /// Checks a callbacks preset's statements once at its definition.
    pub fn callbacks_def(&mut self, b: &'a Block) {
        self.statements(
            "callbacks",
            &b.body,
            &["early_stopping", "reduce_lr", "checkpoint"],
            &[],
        );
    }

    pub fn model_def_summary(&mut self, b: &'a Block) {
        let all_default = b.params.iter().all(|p| p.default.is_some());
        let default_ir = if all_default {
            let env: Env = b
                .params
                .iter()
                .filter_map(|p| p.default.clone().map(|d| (p.name.text.clone(), d)))
                .collect();
            self.build_model(b, &env, None)
        } else {
            None
        };
        self.out.models.push(ModelDef {
            name: b.name.text.clone(),
            params: b.params.iter().map(|p| p.name.text.clone()).collect(),
            default_ir,
            span: b.name.span,
        });
    }
}

/// `model(args)` with extra named arguments (a search corner).
fn with_dims(model: &Value, dims: &Env) -> Value {
    let (name, mut args) = match &model.kind {
        ValueKind::Call { name, args } => (name.clone(), args.clone()),
        ValueKind::Path(p) => (p[0].clone(), Vec::new()),
        _ => return model.clone(),
    };
    for (k, v) in dims {
        args.push(Arg {
            kind: ArgKind::Named(
                Name {
                    text: k.clone(),
                    span: v.span,
                },
                subst(v, &Env::new()),
            ),
            span: v.span,
        });
    }
    Value {
        kind: ValueKind::Call { name, args },
        span: model.span,
    }
}

/// Original label -> training label after drop and merge (survivors numbered in order).
fn label_map(classes: usize, drop: &[u32], merges: &[Merge]) -> Vec<Option<usize>> {
    let target = |c: u32| {
        merges
            .iter()
            .find(|m| m.classes.contains(&c))
            .map(|m| m.into)
            .unwrap_or(c)
    };
    let mut next = 0;
    let mut assigned: Vec<Option<usize>> = vec![None; classes];
    for c in 0..classes as u32 {
        if drop.contains(&c) {
            continue;
        }
        let t = target(c) as usize;
        if t < classes && assigned[t].is_none() {
            assigned[t] = Some(next);
            next += 1;
        }
    }
    (0..classes as u32)
        .map(|c| {
            if drop.contains(&c) {
                None
            } else {
                assigned.get(target(c) as usize).copied().flatten()
            }
        })
        .collect()
}
