//! Synthetic detection fields: `gpl data synth --kind fields --voc DIR` writes a VOC folder
//! that reads back to the rendered boxes, its refusals, and the boxes' sanity (each holds its
//! galaxy's centre, an isolated bright galaxy's box holds most of its light).

use gpl::data::synth_fields::{render_field, render_fields, FieldsConfig};
use gpl::data::voc::read_voc_dir;

use crate::shared::gpl;

#[test]
fn the_voc_folder_reads_back_to_the_rendered_fields() {
    let dir = tempfile::tempdir().unwrap();
    let voc = dir.path().join("fields");
    let (code, out, err) = gpl(&[
        "data",
        "synth",
        "--kind",
        "fields",
        "--count",
        "5",
        "--seed",
        "3",
        "--voc",
        voc.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("wrote 5 synthetic fields (424x424x3"), "{out}");
    let set = render_fields(&FieldsConfig::new(5, 3)).unwrap();
    let read = read_voc_dir(&voc).unwrap();
    assert_eq!(read.annotations.len(), 5);
    assert_eq!(read.classes, vec!["galaxy".to_string()]);
    for (i, a) in read.annotations.iter().enumerate() {
        assert_eq!(a.filename, format!("field_{i:05}.png"));
        assert_eq!((a.width, a.height, a.depth), (424, 424, 3));
        let boxes: Vec<_> = a
            .objects
            .iter()
            .map(|o| (o.xmin, o.ymin, o.xmax, o.ymax, o.truncated))
            .collect();
        let want: Vec<_> = set.objects[i]
            .iter()
            .map(|o| (o.xmin, o.ymin, o.xmax, o.ymax, o.truncated))
            .collect();
        assert_eq!(boxes, want, "field {i}");
        let png = image::open(voc.join(&a.filename)).unwrap().into_rgb8();
        assert_eq!(png.as_raw().as_slice(), set.image(i), "field {i}'s pixels");
    }
}

#[test]
fn fields_options_are_refused_where_they_cannot_apply() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let (h5, v, w, h5b) = (path("a.h5"), path("v"), path("w"), path("b.h5"));
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["--kind", "fields", "--out", &h5], "give --voc DIR"),
        (
            vec!["--kind", "galaxy10", "--voc", &v],
            "--voc is only for --kind fields",
        ),
        (
            vec!["--kind", "fields", "--voc", &w, "--ambiguity", "0.5"],
            "--ambiguity is not supported for --kind fields",
        ),
        (
            vec!["--max-galaxies", "3", "--out", &h5b],
            "--max-galaxies is only for --kind fields",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["data", "synth", "--count", "2"];
        args.extend(extra);
        let (code, out, err) = gpl(&args);
        assert_ne!(code, 0, "{args:?}: {out}");
        assert!(err.contains(message), "{args:?}: {err}");
        assert!(err.contains("gpl::unsupported"), "{args:?}: {err}");
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing written"
    );
    // Neither --out nor --voc: clap's usage error.
    let (code, _, err) = gpl(&["data", "synth", "--kind", "fields", "--count", "1"]);
    assert_eq!(code, 2, "{err}");
}

#[test]
fn boxes_hold_their_galaxies() {
    let config = FieldsConfig::new(40, 21);
    let (mut fractions, mut galaxies, mut truncated) = (Vec::new(), 0, 0);
    for i in 0..config.count {
        let field = render_field(&config, i).unwrap();
        for (k, (o, light)) in field.objects.iter().zip(&field.light).enumerate() {
            galaxies += 1;
            truncated += usize::from(o.truncated);
            let t = o.truth.as_ref().unwrap();
            assert!(
                o.xmin <= t.x && t.x <= o.xmax && o.ymin <= t.y && t.y <= o.ymax,
                "field {i} galaxy {k}: centre ({}, {}) outside {o:?}",
                t.x,
                t.y
            );
            assert!(o.xmax - o.xmin >= 4.0 && o.ymax - o.ymin >= 4.0);
            assert!(t.radius > 0.5 && t.flux > 0.0 && t.peak_snr >= 9.9);
            // Bright and alone: no other box within 20 px, wholly inside the image.
            let alone = field.objects.iter().enumerate().all(|(j, p)| {
                j == k
                    || p.xmin > o.xmax + 20.0
                    || p.xmax < o.xmin - 20.0
                    || p.ymin > o.ymax + 20.0
                    || p.ymax < o.ymin - 20.0
            });
            if alone && !o.truncated && t.peak_snr >= 100.0 {
                let inside = light.flux_inside(o.xmin, o.ymin, o.xmax, o.ymax) / light.total();
                // Sérsic wings (n up to 6) keep up to a fifth of an elliptical's light below
                // the isophote; discs keep far less.
                assert!(
                    inside > 0.75,
                    "field {i} galaxy {k} (class {}): box holds {inside:.3} of its light",
                    t.galaxy10
                );
                fractions.push(inside);
            }
        }
    }
    fractions.sort_by(f64::total_cmp);
    let isolated = fractions.len();
    assert!(isolated >= 5, "{isolated} isolated bright galaxies checked");
    assert!(
        fractions[isolated / 2] > 0.9,
        "median light in an isolated bright galaxy's box: {fractions:?}"
    );
    assert!(galaxies >= 60, "{galaxies} galaxies in 40 fields");
    assert!(truncated >= 1, "some galaxies cut by the edge");
}
