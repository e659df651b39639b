//! Detections made by any tool, as CSV: a header `image,class,score,xmin,ymin,xmax,ymax`, then
//! one detection per line. `image` names an image of the truth (its file name or stem),
//! `class` one of its classes; boxes are in pixels. Fields are separated by commas and not
//! quoted. Every refusal names the file and line.

use std::path::{Path, PathBuf};

use super::detection::{BBox, Detection};
use super::EvalError;

/// The header a detections file starts with.
pub const HEADER: [&str; 7] = ["image", "class", "score", "xmin", "ymin", "xmax", "ymax"];

/// Parses `text` (the contents of `path`, which only names it in errors). `image_of` maps an
/// image name to its index; `classes` are the class names, by index.
pub fn parse_detections_csv(
    path: &Path,
    text: &str,
    image_of: impl Fn(&str) -> Option<usize>,
    classes: &[String],
) -> Result<Vec<Detection>, EvalError> {
    let bad = |line: usize, reason: String| EvalError::DetectionsCsv {
        path: PathBuf::from(path),
        line,
        reason,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
    let header: Vec<String> = match lines.next() {
        Some((_, l)) => l
            .split(',')
            .map(|f| f.trim().to_ascii_lowercase())
            .collect(),
        None => return Err(bad(1, "the file is empty; it needs a header line".into())),
    };
    if header != HEADER {
        return Err(bad(
            1,
            format!(
                "the header is `{}`, expected `{}`",
                header.join(","),
                HEADER.join(",")
            ),
        ));
    }
    let mut detections = Vec::new();
    for (line, row) in lines {
        if row.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = row.split(',').map(str::trim).collect();
        if fields.len() != HEADER.len() {
            return Err(bad(
                line,
                format!("{} fields, expected {}", fields.len(), HEADER.len()),
            ));
        }
        let image = image_of(fields[0])
            .ok_or_else(|| bad(line, format!("no image `{}` in the truth", fields[0])))?;
        let class = classes.iter().position(|c| c == fields[1]).ok_or_else(|| {
            bad(
                line,
                format!(
                    "class `{}` is not one of the truth's classes ({})",
                    fields[1],
                    classes.join(", ")
                ),
            )
        })?;
        let mut numbers = [0.0f64; 5];
        for (slot, (name, field)) in numbers.iter_mut().zip(HEADER[2..].iter().zip(&fields[2..])) {
            *slot = field
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(line, format!("{name} is `{field}`, not a finite number")))?;
        }
        let [score, xmin, ymin, xmax, ymax] = numbers;
        if xmin > xmax || ymin > ymax {
            return Err(bad(
                line,
                format!("the box ({xmin}, {ymin}, {xmax}, {ymax}) has a min above its max"),
            ));
        }
        detections.push(Detection {
            image,
            class,
            score,
            bbox: BBox {
                xmin,
                ymin,
                xmax,
                ymax,
            },
        });
    }
    Ok(detections)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Detection>, EvalError> {
        let images = ["a.png".to_string(), "b.jpg".to_string()];
        let classes = ["spiral".to_string(), "elliptical".to_string()];
        parse_detections_csv(
            Path::new("d.csv"),
            text,
            |name| {
                images
                    .iter()
                    .position(|i| i == name || i.split('.').next() == Some(name))
            },
            &classes,
        )
    }

    #[test]
    fn rows_become_detections_and_bad_rows_name_their_line() {
        let ok = "image,class,score,xmin,ymin,xmax,ymax\na.png,spiral,0.9,1,2,30,40\n\nb,elliptical,0.5,0,0,5.5,6\n";
        let dets = parse(ok).unwrap();
        assert_eq!(dets.len(), 2);
        assert_eq!(
            (dets[1].image, dets[1].class, dets[1].bbox.xmax),
            (1, 1, 5.5)
        );
        let line_of = |text: &str| match parse(text) {
            Err(EvalError::DetectionsCsv { line, .. }) => line,
            other => panic!("{other:?}"),
        };
        let head = "image,class,score,xmin,ymin,xmax,ymax\na.png,spiral,0.9,1,2,30,40\n";
        assert_eq!(line_of(&format!("{head}c.png,spiral,0.9,1,2,30,40\n")), 3);
        assert_eq!(line_of(&format!("{head}a.png,bar,0.9,1,2,30,40\n")), 3);
        assert_eq!(line_of(&format!("{head}a.png,spiral,nan,1,2,30,40\n")), 3);
        assert_eq!(line_of(&format!("{head}a.png,spiral,0.1,31,2,30,40\n")), 3);
        assert_eq!(line_of(&format!("{head}a.png,spiral,0.1,31,2\n")), 3);
        assert_eq!(line_of("image,score,class\n"), 1);
        assert_eq!(line_of(""), 1);
    }
}
