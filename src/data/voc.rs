//! Pascal VOC folders as labelImg writes them: one XML per image (`filename`, `size`
//! width / height / depth, and per object `name`, `pose`, `truncated`, `difficult` and a
//! `bndbox` in pixels), the JPEG or PNG beside it. Reading checks what a detector's training and
//! evaluation rely on, each error naming the file and line: well-formed XML, every box inside
//! its image with min < max, the image present and of the size the XML states, and no symlink
//! leading out of the folder. Writing produces the same layout, so labelImg opens what gpl
//! writes (synthetic fields, for one).

use std::fs;
use std::path::{Path, PathBuf};

use super::fields::{FieldObject, FieldSet};
use super::{DataError, ImageSet};
use crate::fsutil::write_atomic;

/// One box of a VOC annotation, in pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct VocObject {
    pub name: String,
    /// labelImg writes "Unspecified".
    pub pose: String,
    pub truncated: bool,
    pub difficult: bool,
    pub xmin: f64,
    pub ymin: f64,
    pub xmax: f64,
    pub ymax: f64,
}

/// One image's annotation.
#[derive(Debug, Clone, PartialEq)]
pub struct VocAnnotation {
    /// The image's file name, in the annotation's folder.
    pub filename: String,
    pub width: u32,
    pub height: u32,
    pub depth: u32,
    pub objects: Vec<VocObject>,
}

/// A VOC folder: its annotations (sorted by XML file name) and their class names.
#[derive(Debug, Clone, PartialEq)]
pub struct VocDataset {
    pub root: PathBuf,
    /// The XML file of each annotation, beside it.
    pub files: Vec<PathBuf>,
    pub annotations: Vec<VocAnnotation>,
    /// Every object name, sorted and unique.
    pub classes: Vec<String>,
}

impl VocDataset {
    /// The index of the annotation whose image is `name`: its file name or its stem.
    pub fn image_index(&self, name: &str) -> Option<usize> {
        self.annotations.iter().position(|a| {
            a.filename == name
                || Path::new(&a.filename)
                    .file_stem()
                    .is_some_and(|s| s == name)
        })
    }
}

/// A VOC error at `line` of `path` (0: the file as a whole).
fn voc_error(path: &Path, line: u32, reason: impl Into<String>) -> DataError {
    let location = match line {
        0 => path.display().to_string(),
        _ => format!("{}:{line}", path.display()),
    };
    DataError::Voc {
        location,
        reason: reason.into(),
    }
}

/// Reads every `*.xml` in `dir` (not its subfolders) and checks each against its image.
pub fn read_voc_dir(dir: &Path) -> Result<VocDataset, DataError> {
    let root = dir.canonicalize().map_err(|e| DataError::io(dir, e))?;
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(voc_error(dir, 0, "no .xml annotation in this folder"));
    }
    let mut annotations = Vec::with_capacity(files.len());
    for file in &files {
        confined(&root, file)?;
        let text = fs::read_to_string(file).map_err(|e| DataError::io(file, e))?;
        let (annotation, size_line) = parse_annotation(file, &text)?;
        check_image(&root, dir, file, &annotation, size_line)?;
        annotations.push(annotation);
    }
    let mut classes: Vec<String> = annotations
        .iter()
        .flat_map(|a| a.objects.iter().map(|o| o.name.clone()))
        .collect();
    classes.sort();
    classes.dedup();
    Ok(VocDataset {
        root: dir.to_path_buf(),
        files,
        annotations,
        classes,
    })
}

/// A VOC folder as a field set: every image (one size for all, else an error naming the odd
/// image's XML and both sizes) as 8-bit RGB (greyscale replicated, alpha dropped), its boxes
/// with classes indexed into the folder's sorted class names, in XML file-name order.
pub fn load_field_set(dir: &Path) -> Result<FieldSet, DataError> {
    let voc = read_voc_dir(dir)?;
    let (width, height) = one_size(&voc)?;
    let (w, h) = (width as usize, height as usize);
    let mut pixels = Vec::with_capacity(voc.annotations.len() * w * h * 3);
    for a in &voc.annotations {
        let path = dir.join(&a.filename);
        let img = image::open(&path).map_err(|e| DataError::BadImage {
            path: path.clone(),
            detail: e.to_string(),
        })?;
        pixels.extend_from_slice(img.to_rgb8().as_raw());
    }
    // `classes` is every object's name, so each is found.
    let class_of = |name: &str| voc.classes.iter().position(|c| c == name).unwrap_or(0);
    let objects = voc
        .annotations
        .iter()
        .map(|a| {
            a.objects
                .iter()
                .map(|o| FieldObject {
                    class: class_of(&o.name),
                    xmin: o.xmin,
                    ymin: o.ymin,
                    xmax: o.xmax,
                    ymax: o.ymax,
                    truncated: o.truncated,
                    difficult: o.difficult,
                    truth: None,
                })
                .collect()
        })
        .collect();
    Ok(FieldSet {
        images: ImageSet {
            height: h,
            width: w,
            channels: 3,
            images: pixels,
            labels: vec![0; voc.annotations.len()],
            class_names: voc.classes.clone(),
        },
        objects,
        names: voc.annotations.iter().map(|a| a.filename.clone()).collect(),
    })
}

/// The size every image of `voc` shares, or an error naming the first image of another size
/// (by its XML) with both sizes.
pub fn one_size(voc: &VocDataset) -> Result<(u32, u32), DataError> {
    let Some(first) = voc.annotations.first() else {
        return Err(voc_error(&voc.root, 0, "no .xml annotation in this folder"));
    };
    let (width, height) = (first.width, first.height);
    for (a, file) in voc.annotations.iter().zip(&voc.files).skip(1) {
        if (a.width, a.height) != (width, height) {
            return Err(voc_error(
                file,
                0,
                format!(
                    "its image {} is {}×{}, but {} is {width}×{height}; the images of a dataset share one size",
                    a.filename, a.width, a.height, first.filename
                ),
            ));
        }
    }
    Ok((width, height))
}

/// Refuses `path` when it is a symlink whose target lies outside `root`.
fn confined(root: &Path, path: &Path) -> Result<(), DataError> {
    let meta = fs::symlink_metadata(path).map_err(|e| DataError::io(path, e))?;
    if meta.file_type().is_symlink() {
        let target = path.canonicalize().map_err(|e| DataError::io(path, e))?;
        if !target.starts_with(root) {
            return Err(voc_error(
                path,
                0,
                format!(
                    "is a symlink to {}, outside the folder {}; gpl does not follow it",
                    target.display(),
                    root.display()
                ),
            ));
        }
    }
    Ok(())
}

fn check_image(
    root: &Path,
    dir: &Path,
    xml: &Path,
    a: &VocAnnotation,
    size_line: u32,
) -> Result<(), DataError> {
    let plain = Path::new(&a.filename)
        .file_name()
        .is_some_and(|n| n == a.filename.as_str());
    if !plain {
        return Err(voc_error(
            xml,
            0,
            format!(
                "filename `{}` is not a plain file name; the image must sit beside its XML",
                a.filename
            ),
        ));
    }
    let image = dir.join(&a.filename);
    if fs::symlink_metadata(&image).is_err() {
        return Err(voc_error(
            xml,
            0,
            format!("its image {} does not exist", image.display()),
        ));
    }
    confined(root, &image)?;
    let (width, height) = image::image_dimensions(&image).map_err(|e| DataError::BadImage {
        path: image.clone(),
        detail: e.to_string(),
    })?;
    if (width, height) != (a.width, a.height) {
        return Err(voc_error(
            xml,
            size_line,
            format!(
                "<size> says {}×{}, but {} is {width}×{height}",
                a.width, a.height, a.filename
            ),
        ));
    }
    Ok(())
}

/// Parses one annotation; `path` only names the file in errors. Returns the annotation and the
/// line of its `<size>` element. Checks the XML and the boxes against the stated size, not the
/// image.
pub fn parse_annotation(path: &Path, text: &str) -> Result<(VocAnnotation, u32), DataError> {
    let doc = roxmltree::Document::parse(text)
        .map_err(|e| voc_error(path, e.pos().row, format!("not well-formed XML: {e}")))?;
    let x = Xml { path, doc: &doc };
    let root = doc.root_element();
    if root.tag_name().name() != "annotation" {
        return Err(voc_error(
            path,
            x.line_of(root),
            format!(
                "the root element is <{}>, not <annotation>",
                root.tag_name().name()
            ),
        ));
    }
    let filename = text_of(x.required(root, "filename")?);
    let size = x.required(root, "size")?;
    let (width, height) = (x.count(size, "width")?, x.count(size, "height")?);
    let depth = match child(size, "depth") {
        Some(_) => x.count(size, "depth")?,
        None => 3,
    };
    if width == 0 || height == 0 {
        return Err(voc_error(
            path,
            x.line_of(size),
            format!("<size> is {width}×{height}"),
        ));
    }
    let mut objects = Vec::new();
    for object in root
        .children()
        .filter(|n| n.is_element() && n.tag_name().name() == "object")
    {
        let name_node = x.required(object, "name")?;
        let name = text_of(name_node);
        if name.is_empty() {
            return Err(voc_error(
                path,
                x.line_of(name_node),
                "an object without a name",
            ));
        }
        let bndbox = x.required(object, "bndbox")?;
        let (xmin, ymin, xmax, ymax) = (
            x.number(bndbox, "xmin")?,
            x.number(bndbox, "ymin")?,
            x.number(bndbox, "xmax")?,
            x.number(bndbox, "ymax")?,
        );
        let at = x.line_of(bndbox);
        if xmin >= xmax || ymin >= ymax {
            return Err(voc_error(
                path,
                at,
                format!("the box of `{name}` ({xmin}, {ymin}, {xmax}, {ymax}) needs xmin < xmax and ymin < ymax"),
            ));
        }
        if xmin < 0.0 || ymin < 0.0 || xmax > f64::from(width) || ymax > f64::from(height) {
            return Err(voc_error(
                path,
                at,
                format!("the box of `{name}` ({xmin}, {ymin}, {xmax}, {ymax}) leaves the {width}×{height} image"),
            ));
        }
        objects.push(VocObject {
            pose: child(object, "pose")
                .map(text_of)
                .unwrap_or_else(|| "Unspecified".into()),
            truncated: x.flag(object, "truncated")?,
            difficult: x.flag(object, "difficult")?,
            name,
            xmin,
            ymin,
            xmax,
            ymax,
        });
    }
    Ok((
        VocAnnotation {
            filename,
            width,
            height,
            depth,
            objects,
        },
        x.line_of(size),
    ))
}

type Node<'a, 'i> = roxmltree::Node<'a, 'i>;

fn child<'a, 'i>(parent: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    parent
        .children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

fn text_of(node: Node) -> String {
    node.text().unwrap_or("").trim().to_string()
}

/// Reads elements of one parsed file, each error at the element's line.
struct Xml<'a, 'i> {
    path: &'a Path,
    doc: &'a roxmltree::Document<'i>,
}

impl<'a, 'i> Xml<'a, 'i> {
    fn line_of(&self, node: Node) -> u32 {
        self.doc.text_pos_at(node.range().start).row
    }

    fn required(&self, parent: Node<'a, 'i>, name: &str) -> Result<Node<'a, 'i>, DataError> {
        child(parent, name).ok_or_else(|| {
            voc_error(
                self.path,
                self.line_of(parent),
                format!("<{}> has no <{name}>", parent.tag_name().name()),
            )
        })
    }

    fn number(&self, parent: Node<'a, 'i>, name: &str) -> Result<f64, DataError> {
        let node = self.required(parent, name)?;
        let t = text_of(node);
        t.parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| {
                voc_error(
                    self.path,
                    self.line_of(node),
                    format!("<{name}> is `{t}`, not a number"),
                )
            })
    }

    fn count(&self, parent: Node<'a, 'i>, name: &str) -> Result<u32, DataError> {
        let node = self.required(parent, name)?;
        let t = text_of(node);
        t.parse::<u32>().map_err(|_| {
            voc_error(
                self.path,
                self.line_of(node),
                format!("<{name}> is `{t}`, not a whole number"),
            )
        })
    }

    /// A 0 / 1 flag; absent means 0.
    fn flag(&self, parent: Node<'a, 'i>, name: &str) -> Result<bool, DataError> {
        match child(parent, name) {
            None => Ok(false),
            Some(node) => match text_of(node).as_str() {
                "0" => Ok(false),
                "1" => Ok(true),
                other => Err(voc_error(
                    self.path,
                    self.line_of(node),
                    format!("<{name}> is `{other}`; VOC writes 0 or 1"),
                )),
            },
        }
    }
}

/// The annotation as labelImg writes it (tab-indented, `folder`, `filename`, `path`, `source`,
/// `size`, `segmented`, then the objects).
pub fn annotation_xml(a: &VocAnnotation, folder: &str) -> String {
    let mut out = String::from("<annotation>\n");
    let mut line = |indent: usize, text: String| {
        out.push_str(&"\t".repeat(indent));
        out.push_str(&text);
        out.push('\n');
    };
    line(1, format!("<folder>{}</folder>", escape(folder)));
    line(1, format!("<filename>{}</filename>", escape(&a.filename)));
    line(1, format!("<path>{}</path>", escape(&a.filename)));
    line(1, "<source>".into());
    line(2, "<database>Unknown</database>".into());
    line(1, "</source>".into());
    line(1, "<size>".into());
    line(2, format!("<width>{}</width>", a.width));
    line(2, format!("<height>{}</height>", a.height));
    line(2, format!("<depth>{}</depth>", a.depth));
    line(1, "</size>".into());
    line(1, "<segmented>0</segmented>".into());
    for o in &a.objects {
        line(1, "<object>".into());
        line(2, format!("<name>{}</name>", escape(&o.name)));
        line(2, format!("<pose>{}</pose>", escape(&o.pose)));
        line(
            2,
            format!("<truncated>{}</truncated>", u8::from(o.truncated)),
        );
        line(
            2,
            format!("<difficult>{}</difficult>", u8::from(o.difficult)),
        );
        line(2, "<bndbox>".into());
        // `{}` prints whole numbers without a fraction, as labelImg writes them, and any other
        // value in the shortest form that reads back to the same f64.
        for (tag, v) in [
            ("xmin", o.xmin),
            ("ymin", o.ymin),
            ("xmax", o.xmax),
            ("ymax", o.ymax),
        ] {
            line(3, format!("<{tag}>{v}</{tag}>"));
        }
        line(2, "</bndbox>".into());
        line(1, "</object>".into());
    }
    out.push_str("</annotation>\n");
    out
}

/// Writes `a` as `<stem of its image>.xml` in `dir`, atomically; returns the path.
pub fn write_annotation(dir: &Path, a: &VocAnnotation) -> Result<PathBuf, DataError> {
    let stem = Path::new(&a.filename)
        .file_stem()
        .filter(|_| {
            Path::new(&a.filename)
                .file_name()
                .is_some_and(|n| n == a.filename.as_str())
        })
        .ok_or_else(|| {
            DataError::invalid(
                "VOC file name",
                format!("`{}` is not a plain file name", a.filename),
            )
        })?;
    let path = dir.join(stem).with_extension("xml");
    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    write_atomic(&path, annotation_xml(a, &folder).as_bytes())
        .map_err(|e| DataError::io(&path, e))?;
    Ok(path)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> VocAnnotation {
        VocAnnotation {
            filename: "field_0001.png".into(),
            width: 424,
            height: 300,
            depth: 3,
            objects: vec![
                VocObject {
                    name: "spiral".into(),
                    pose: "Unspecified".into(),
                    truncated: false,
                    difficult: false,
                    xmin: 10.0,
                    ymin: 20.0,
                    xmax: 110.0,
                    ymax: 90.0,
                },
                VocObject {
                    name: "edge-on & <disk>".into(),
                    pose: "Left".into(),
                    truncated: true,
                    difficult: true,
                    xmin: 0.25,
                    ymin: 0.0,
                    xmax: 424.0,
                    ymax: 17.125,
                },
            ],
        }
    }

    #[test]
    fn written_xml_reads_back_the_same() {
        let a = sample();
        let xml = annotation_xml(&a, "fields");
        let (back, size_line) = parse_annotation(Path::new("x.xml"), &xml).unwrap();
        assert_eq!(back, a);
        assert_eq!(size_line, 8);
        assert!(xml.contains("\t\t\t<xmin>10</xmin>\n"), "{xml}");
    }

    #[test]
    fn bad_annotations_name_their_line() {
        let xml = annotation_xml(&sample(), "fields");
        let err = |text: &str| {
            parse_annotation(Path::new("a.xml"), text)
                .unwrap_err()
                .to_string()
        };
        // The first <bndbox> opens on line 19.
        let flipped = xml.replacen("<xmin>10</xmin>", "<xmin>200</xmin>", 1);
        assert!(err(&flipped).starts_with("a.xml:19:"), "{}", err(&flipped));
        assert!(err(&flipped).contains("xmin < xmax"));
        let outside = xml.replacen("<ymax>90</ymax>", "<ymax>301</ymax>", 1);
        assert!(
            err(&outside).contains("leaves the 424×300 image"),
            "{}",
            err(&outside)
        );
        let broken = xml.replacen("</pose>", "</poze>", 1);
        assert!(err(&broken).starts_with("a.xml:16:"), "{}", err(&broken));
        let word = xml.replacen("<width>424</width>", "<width>wide</width>", 1);
        assert!(err(&word).starts_with("a.xml:9:"), "{}", err(&word));
        let flag = xml.replacen("<difficult>1</difficult>", "<difficult>yes</difficult>", 1);
        assert!(
            err(&flag).contains("<difficult> is `yes`"),
            "{}",
            err(&flag)
        );
    }
}
