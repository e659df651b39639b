//! The classical detector against SEP 1.4.1 (fixtures from
//! tests/fixtures/extract/make_sep_fixtures.py on astropy's DSS image of M13), on synthetic
//! Gaussian sources, and the FITS reader and TAN WCS against astropy.

use gpl::data::fits::read_fits;
use gpl::detect::extract::{extract, Background, BackgroundParams, ExtractParams, Kernel};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/extract").join(name)
}

fn read_csv(name: &str) -> Vec<Vec<String>> {
    std::fs::read_to_string(fixture(name))
        .unwrap()
        .lines()
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect()
}

#[test]
fn background_and_rms_match_sep_on_m13() {
    let img = read_fits(&fixture("m13.fits"), None).unwrap();
    let bkg = Background::estimate(&img.data, img.width, img.height, &BackgroundParams::default());
    let globals = read_csv("m13_sep_background.csv");
    let (g, grms): (f32, f32) = (globals[1][0].parse().unwrap(), globals[1][1].parse().unwrap());
    assert!((bkg.global - g).abs() <= 1e-5 * g.abs(), "global {} vs SEP {g}", bkg.global);
    assert!((bkg.global_rms - grms).abs() <= 1e-5 * grms, "globalrms {} vs SEP {grms}", bkg.global_rms);
    for (name, ours) in [("m13_sep_back.fits", bkg.back()), ("m13_sep_rms.fits", bkg.rms())] {
        let sep = read_fits(&fixture(name), None).unwrap();
        assert_eq!((sep.width, sep.height), (img.width, img.height));
        let worst = ours
            .iter()
            .zip(&sep.data)
            .map(|(a, b)| (a - b).abs() / b.abs().max(1.0))
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "{name}: worst relative difference {worst}");
    }
}

struct SepCase {
    params: ExtractParams,
    objects: Vec<(f64, f64, f64)>,
    merged: Vec<bool>,
}

fn sep_case(name: &str) -> SepCase {
    let rows = read_csv(&format!("m13_sep_{name}.csv"));
    let p = &rows[1];
    let params = ExtractParams {
        thresh: p[0].parse().unwrap(),
        minarea: p[1].parse().unwrap(),
        kernel: (p[2] == "1").then(Kernel::sep_default),
        deblend_nthresh: p[3].parse().unwrap(),
        deblend_cont: p[4].parse().unwrap(),
        clean: p[5] == "1",
        clean_param: p[6].parse().unwrap(),
    };
    let objects = rows[3..]
        .iter()
        .map(|r| (r[0].parse().unwrap(), r[1].parse().unwrap(), r[2].parse().unwrap()))
        .collect();
    let merged = rows[3..]
        .iter()
        .map(|r| r[12].parse::<u16>().unwrap() & 1 != 0)
        .collect();
    SepCase {
        params,
        objects,
        merged,
    }
}

/// Indices in `b` of the nearest object within `radius` px of each object of `a`.
fn nearest(a: &[(f64, f64, f64)], b: &[(f64, f64, f64)], radius: f64) -> Vec<Option<usize>> {
    a.iter()
        .map(|p| {
            b.iter()
                .enumerate()
                .map(|(j, q)| (j, (p.0 - q.0).hypot(p.1 - q.1)))
                .filter(|(_, d)| *d <= radius)
                .min_by(|x, y| x.1.total_cmp(&y.1))
                .map(|(j, _)| j)
        })
        .collect()
}

fn check_parity(case: &str) {
    let sep = sep_case(case);
    let img = read_fits(&fixture("m13.fits"), None).unwrap();
    let bkg = Background::estimate(&img.data, img.width, img.height, &BackgroundParams::default());
    let mut data = img.data.clone();
    bkg.subtract(&mut data);
    let ours: Vec<(f64, f64, f64)> = extract(&data, img.width, img.height, bkg.global_rms, &sep.params)
        .unwrap()
        .iter()
        .map(|o| (o.x, o.y, o.flux as f64))
        .collect();
    let sep_to_ours = nearest(&sep.objects, &ours, 1.0);
    let ours_to_sep = nearest(&ours, &sep.objects, 1.0);
    let found = sep_to_ours.iter().flatten().count() as f64 / sep.objects.len() as f64;
    let real = ours_to_sep.iter().flatten().count() as f64 / ours.len() as f64;
    // Single objects: the same pixels, so the same flux. Deblended ones (SEP's flag MERGED)
    // share the faint pixels of their blend by random draws, which follow the order of the
    // pixels in the blend (docs/decisions.md, "The classical detector"): their fluxes are
    // compared in total.
    let (mut single, mut single_ok) = (0usize, 0usize);
    let (mut merged_sep, mut merged_ours, mut merged_n, mut merged_ok) = (0f64, 0f64, 0, 0);
    for (i, j) in sep_to_ours.iter().enumerate() {
        let Some(j) = j else { continue };
        let (s, o) = (sep.objects[i].2, ours[*j].2);
        let close = (s - o).abs() <= 0.01 * s.abs();
        if sep.merged[i] {
            merged_sep += s;
            merged_ours += o;
            merged_n += 1;
            merged_ok += close as usize;
        } else {
            single += 1;
            single_ok += close as usize;
        }
    }
    let single_frac = single_ok as f64 / single as f64;
    let merged_total = (merged_ours - merged_sep).abs() / merged_sep.abs().max(f64::MIN_POSITIVE);
    eprintln!(
        "{case}: SEP {} objects, ours {}; SEP's matched {found:.4}, ours matched {real:.4}; \
         single objects with flux within 1%: {single_ok}/{single}; deblended: {merged_ok}/{merged_n} \
         within 1%, total flux differs by {merged_total:.5}",
        sep.objects.len(),
        ours.len()
    );
    assert!(found >= 0.95, "{case}: only {found} of SEP's objects found");
    assert!(real >= 0.95, "{case}: only {real} of ours are SEP's");
    assert!(single_frac >= 0.95, "{case}: only {single_frac} of single objects' fluxes within 1%");
    assert!(merged_total <= 0.01, "{case}: deblended objects' total flux differs by {merged_total}");
}

#[test]
fn extract_matches_sep_on_m13_with_sep_defaults() {
    check_parity("default");
}

#[test]
fn extract_matches_sep_on_m13_without_filter_or_cleaning() {
    check_parity("nofilter");
}

#[test]
fn extract_matches_sep_on_m13_without_deblending() {
    check_parity("nodeblend");
}

