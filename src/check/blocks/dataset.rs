//! Dataset blocks: the source, fallback, class edits (drop, merge, names) and the split.

use crate::check::checker::{fmt_num, Args, Checker};
use crate::check::diagnostics::Error;
use crate::check::program::*;
use crate::check::schema::{Spec, ValueType::Other};
use crate::lang::ast::*;

pub(super) const DATASET: &[Spec] = &[
    Spec::required(
        "source",
        Other,
        "source hdf5(\"data/Galaxy10.h5\", images: \"images\", labels: \"ans\")",
    ),
    Spec::optional("fallback", Other),
    Spec::repeated("drop", Other),
    Spec::repeated("merge", Other),
    Spec::optional("split", Other),
    Spec::optional("classes", Other),
    Spec::optional("resize", Other),
];

/// Source kinds, by the name of their call.
#[derive(Clone, Copy)]
enum SourceKind {
    Hdf5,
    Folder,
    Synthetic,
    Voc,
    Fits,
}

impl<'a> Checker<'a> {
    pub fn dataset(&mut self, b: &'a Block) {
        let s = self.statements(b, DATASET);
        let Some(source_st) = s.one("source") else {
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
                merges.push(Merge {
                    classes: list.into_iter().map(|(c, _)| c).collect(),
                    into,
                });
            }
        }
        let label_map = match classes {
            Some(n) => label_map(n, &drop, &merges),
            None => Vec::new(),
        };
        let after = classes.map(|_| label_map.iter().flatten().max().map(|m| m + 1).unwrap_or(0));
        let split = s.one("split").and_then(|st| self.split(b, st));
        if let Source::Voc { .. } | Source::Fits { .. } = source {
            self.detection_dataset(&s, &source, split.as_ref());
        }
        let resize = s.one("resize").and_then(|st| self.resize(st));
        if let Some([h, w]) = resize {
            let channels = shape.as_ref().and_then(|s| s.get(2).copied()).unwrap_or(3);
            shape = Some(vec![h, w, channels]);
        }
        self.out.add(CheckedStage::Dataset(Dataset {
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
        }));
    }

    /// Refuses what a detection dataset cannot honour: class edits and resizing (its classes
    /// are the boxes' names and its boxes are in pixels of the stored images), a fallback, a
    /// split of one FITS image, and stratifying images that have no class of their own.
    fn detection_dataset(
        &mut self,
        s: &crate::check::schema::Stmts,
        source: &Source,
        split: Option<&Split>,
    ) {
        let kind = match source {
            Source::Voc { .. } => "voc",
            _ => "fits",
        };
        let mut refused = vec!["fallback", "drop", "merge", "classes", "resize"];
        if kind == "fits" {
            refused.push("split");
        }
        for name in refused {
            for st in s.all(name) {
                self.err(Error::Unsupported {
                    what: format!("`{name}` in a dataset that reads `{kind}(...)`"),
                    span: st.span,
                    help: Some(match name {
                        "split" => "a fits dataset is one survey image; split a voc dataset of fields instead".into(),
                        "fallback" => "detection data has no synthetic stand-in; write `source synthetic(fields)` to use synthetic fields".into(),
                        _ => "a detection dataset keeps the classes its annotations name, and its images at their stored size (boxes are in their pixels)".into(),
                    }),
                });
            }
        }
        if let (Some(st), Some(split)) = (s.one("split"), split) {
            if kind == "voc" && split.stratify {
                self.err(Error::Unsupported {
                    what: "`stratify` in the split of a voc dataset".into(),
                    span: st.span,
                    help: Some("a field holds objects of several classes and has no class of its own: write `stratify: false`".into()),
                });
            }
        }
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

    /// `hdf5(...)`, `folder(...)`, `synthetic(...)`, `voc(...)` or `fits(...)`, with the class
    /// count and image shape it implies when known.
    pub(super) fn source(
        &mut self,
        b: &Block,
        st: &Statement,
    ) -> Option<(Source, Option<usize>, Option<Vec<usize>>)> {
        let a = Args::of_statement(st);
        let Some(v) = a.positional.first() else {
            self.err(Error::MissingArg {
                what: st.head.text.clone(),
                needed: "hdf5(...), folder(...), synthetic(...), voc(...) or fits(...)".into(),
                span: a.span,
                help: None,
            });
            return None;
        };
        let ValueKind::Call { name, args } = &v.kind else {
            self.wrong_type(
                v,
                "hdf5(...), folder(...), synthetic(...), voc(...) or fits(...)",
                None,
            );
            return None;
        };
        let kind = self.choice_name(
            name,
            "data source",
            &[
                ("hdf5", SourceKind::Hdf5),
                ("folder", SourceKind::Folder),
                ("synthetic", SourceKind::Synthetic),
                ("voc", SourceKind::Voc),
                ("fits", SourceKind::Fits),
            ],
        )?;
        let ca = Args::new(args.iter(), v.span);
        match kind {
            SourceKind::Hdf5 => {
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
            SourceKind::Folder => {
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
            SourceKind::Voc => {
                self.only_named(&ca, "voc", &["path"]);
                let path_value = ca.positional.first().or(ca.get("path").as_ref()).copied();
                let Some(p) = path_value else {
                    self.err(Error::MissingArg {
                        what: "voc".into(),
                        needed: "a folder path".into(),
                        span: v.span,
                        help: None,
                    });
                    return None;
                };
                let path = self.string(p, "the folder path")?;
                let resolved = self.resolve_path(&path);
                if !resolved.is_dir() {
                    self.err(Error::DataFile {
                        message: format!("the VOC folder {path} does not exist"),
                        span: p.span,
                        help: Some("a VOC folder holds one labelImg XML per image, the image beside it; the path is relative to the project folder".into()),
                    });
                    return None;
                }
                // Every annotation (and each image's size, from its header): a bad box, a
                // missing image or images of two sizes is an error here, naming its file and
                // line, not at run time.
                let voc = crate::data::voc::read_voc_dir(&resolved);
                let classes = match voc.and_then(|v| crate::data::voc::one_size(&v).map(|_| v)) {
                    Ok(voc) => voc.classes.len(),
                    Err(e) => {
                        self.data_file_error(&e, &resolved, &path, p.span);
                        return None;
                    }
                };
                Some((Source::Voc { path, resolved }, Some(classes), None))
            }
            SourceKind::Fits => {
                self.only_named(&ca, "fits", &["path", "hdu"]);
                let path_value = ca.positional.first().or(ca.get("path").as_ref()).copied();
                let Some(p) = path_value else {
                    self.err(Error::MissingArg {
                        what: "fits".into(),
                        needed: "a file path".into(),
                        span: v.span,
                        help: None,
                    });
                    return None;
                };
                let path = self.string(p, "the file path")?;
                let hdu = match ca.get("hdu") {
                    Some(x) => Some(self.count(x, "hdu", 0)?),
                    None => {
                        self.note_default(
                            b,
                            "source.hdu",
                            "the first HDU holding an image",
                            "no hdu written",
                        );
                        None
                    }
                };
                let resolved = self.resolve_path(&path);
                if !resolved.is_file() {
                    self.err(Error::DataFile {
                        message: format!("the FITS file {path} does not exist"),
                        span: p.span,
                        help: Some("the path is relative to the project folder".into()),
                    });
                    return None;
                }
                // The header only: the HDU must exist and hold a 2-D image.
                if let Err(e) = crate::data::fits::open_fits(&resolved, hdu) {
                    let span = match (&e, ca.get("hdu")) {
                        (crate::data::fits::FitsError::NoImage { .. }, Some(h)) => h.span,
                        _ => p.span,
                    };
                    self.data_file_error(&e, &resolved, &path, span);
                    return None;
                }
                Some((
                    Source::Fits {
                        path,
                        resolved,
                        hdu,
                    },
                    None,
                    None,
                ))
            }
            SourceKind::Synthetic => {
                let generator = match ca.positional.first() {
                    Some(k) => self.choice(
                        k,
                        "synthetic generator",
                        &[
                            ("galaxy10", SyntheticKind::Galaxy10),
                            ("galaxy10_decals", SyntheticKind::Galaxy10Decals),
                            ("fields", SyntheticKind::Fields),
                        ],
                    )?,
                    None => {
                        self.note_default(
                            b,
                            &format!("{}.generator", st.head.text),
                            "galaxy10",
                            "the default generator",
                        );
                        SyntheticKind::Galaxy10
                    }
                };
                // Only fields take a size: the Galaxy10 generators draw at their files' sizes.
                let allowed: &[&str] = match generator {
                    SyntheticKind::Fields => &["count", "seed", "size"],
                    _ => &["count", "seed"],
                };
                self.only_named(&ca, "synthetic", allowed);
                let size = match ca.get("size") {
                    Some(x) if generator == SyntheticKind::Fields => {
                        let side = self.count(x, "field size", 64)?;
                        if side > 2048 {
                            self.wrong_type(x, "a field size from 64 to 2048 pixels", None);
                            return None;
                        }
                        Some(side)
                    }
                    _ => None,
                };
                let (classes, shape, default_count) = match generator {
                    SyntheticKind::Galaxy10 => (Some(10), Some(vec![69, 69, 3]), 21785),
                    SyntheticKind::Galaxy10Decals => (Some(10), Some(vec![256, 256, 3]), 17736),
                    SyntheticKind::Fields => {
                        let side = size.unwrap_or(crate::data::synth_fields::DEFAULT_SIZE);
                        (Some(1), Some(vec![side, side, 3]), 2000)
                    }
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
                        size,
                    },
                    classes,
                    shape,
                ))
            }
        }
    }

    /// A data file's error at check time, naming the file as the pipeline writes it.
    fn data_file_error(
        &mut self,
        e: &(impl miette::Diagnostic + std::fmt::Display),
        resolved: &std::path::Path,
        path: &str,
        span: crate::lang::Span,
    ) {
        let resolved_text = resolved.display().to_string();
        self.err(Error::DataFile {
            message: e.to_string().replace(&resolved_text, path),
            span,
            help: e.help().map(|h| h.to_string()),
        });
    }

    pub(super) fn split(&mut self, b: &Block, st: &Statement) -> Option<Split> {
        let a = Args::of_statement(st);
        let v = a.positional.first()?;
        let ValueKind::Call { name, args } = &v.kind else {
            self.wrong_type(v, "holdout(train: 0.7, val: 0.15, test: 0.15)", None);
            return None;
        };
        self.choice_name(name, "split", &[("holdout", ())])?;
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
}

/// Original label -> training label after drop and merge (survivors numbered in order).
fn label_map(classes: usize, drop: &[u32], merges: &[Merge]) -> Vec<Option<usize>> {
    let target = |c: u32| {
        merges
            .iter()
            .find(|m| m.classes.contains(&c))
            .map(|m| m.into.unwrap_or(m.classes[0]))
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
