//! The classical detector against SEP 1.4.1 (fixtures from
//! tests/fixtures/extract/make_sep_fixtures.py on astropy's DSS image of M13), on synthetic
//! Gaussian sources, and the FITS reader and TAN WCS against astropy.

use gpl::data::fits::read_fits;
use gpl::detect::extract::{extract, Background, BackgroundParams, ExtractParams, Kernel};
use std::path::{Path, PathBuf};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/extract")
        .join(name)
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
    let bkg = Background::estimate(
        &img.data,
        img.width,
        img.height,
        &BackgroundParams::default(),
    );
    let globals = read_csv("m13_sep_background.csv");
    let (g, grms): (f32, f32) = (
        globals[1][0].parse().unwrap(),
        globals[1][1].parse().unwrap(),
    );
    assert!(
        (bkg.global - g).abs() <= 1e-5 * g.abs(),
        "global {} vs SEP {g}",
        bkg.global
    );
    assert!(
        (bkg.global_rms - grms).abs() <= 1e-5 * grms,
        "globalrms {} vs SEP {grms}",
        bkg.global_rms
    );
    for (name, ours) in [
        ("m13_sep_back.fits", bkg.back()),
        ("m13_sep_rms.fits", bkg.rms()),
    ] {
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
        .map(|r| {
            (
                r[0].parse().unwrap(),
                r[1].parse().unwrap(),
                r[2].parse().unwrap(),
            )
        })
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
    let bkg = Background::estimate(
        &img.data,
        img.width,
        img.height,
        &BackgroundParams::default(),
    );
    let mut data = img.data.clone();
    bkg.subtract(&mut data);
    let ours: Vec<(f64, f64, f64)> =
        extract(&data, img.width, img.height, bkg.global_rms, &sep.params)
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
    assert!(
        single_frac >= 0.95,
        "{case}: only {single_frac} of single objects' fluxes within 1%"
    );
    assert!(
        merged_total <= 0.01,
        "{case}: deblended objects' total flux differs by {merged_total}"
    );
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

fn check_wcs(image: &str, table: &str) {
    let img = read_fits(&fixture(image), None).unwrap();
    let wcs = img.wcs.expect("a TAN WCS");
    for r in &read_csv(table)[1..] {
        let v: Vec<f64> = r.iter().map(|x| x.parse().unwrap()).collect();
        let (ra, dec) = wcs.pixel_to_world(v[0], v[1]);
        let dra = ((ra - v[2] + 180.0).rem_euclid(360.0) - 180.0).abs();
        assert!(
            dra < 1e-9 && (dec - v[3]).abs() < 1e-9,
            "{image} pixel ({}, {}): ours ({ra}, {dec}), astropy ({}, {})",
            v[0],
            v[1],
            v[2],
            v[3]
        );
    }
}

#[test]
fn tan_wcs_matches_astropy_with_cdelt_and_with_a_cd_matrix() {
    check_wcs("m13.fits", "m13_wcs.csv");
    check_wcs("wcs_cd.fits", "wcs_cd.csv");
}

#[test]
fn fits_reads_image_extensions_scaling_and_blanks_as_astropy() {
    let img = read_fits(&fixture("scaled16.fits"), None).unwrap();
    assert_eq!((img.hdu, img.width, img.height), (1, 5, 6));
    for (i, v) in img.data.iter().enumerate() {
        if i == 2 * 5 + 2 {
            assert!(v.is_nan(), "BLANK pixel read as {v}");
        } else {
            assert_eq!(*v, 80.0 + 1.5 * i as f32, "pixel {i}");
        }
    }
    let f = read_fits(&fixture("wcs_cd.fits"), Some(1)).unwrap();
    assert_eq!((f.width, f.height), (20, 12));
    assert!(f.data[3 * 20 + 4].is_nan());
    assert_eq!(f.data[5], 5.0 / 7.0);
    let err = read_fits(&fixture("wcs_cd.fits"), Some(0))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("wcs_cd.fits") && err.contains("HDU 0 holds no 2-D image"),
        "{err}"
    );
}

#[test]
fn malformed_fits_names_the_file_and_the_card() {
    let dir = tempfile::tempdir().unwrap();
    let good = std::fs::read(fixture("m13.fits")).unwrap();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("notfits.fits", b"hello world".to_vec(), "not a FITS file"),
        ("truncated.fits", good[..2880 + 1000].to_vec(), "truncated"),
        ("noend.fits", good[..80 * 10].to_vec(), "no END card"),
        (
            "bitpix.fits",
            {
                let mut b = good.clone();
                b[80..160].copy_from_slice(
                    format!("{:<80}", "BITPIX  =                   12").as_bytes(),
                );
                b
            },
            "card 2 `BITPIX = 12`: must be 8, 16, 32, 64, -32 or -64",
        ),
        (
            "naxis.fits",
            {
                let mut b = good.clone();
                b[240..320].copy_from_slice(format!("{:<80}", "NAXIS1  = 'three'").as_bytes());
                b
            },
            "card 4 `NAXIS1 = three`: expected an integer",
        ),
    ];
    for (name, bytes, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let err = read_fits(&path, None).unwrap_err().to_string();
        assert!(
            err.contains(name) && err.contains(expected),
            "{name}: {err}"
        );
    }
}

/// Gaussian stars of known position and flux on a sloped sky with Gaussian noise.
#[test]
fn extract_finds_synthetic_gaussians_at_their_positions() {
    use rand::{Rng, SeedableRng};
    use rand_distr::{Distribution, Normal};
    let (w, h) = (256usize, 192usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    let noise = Normal::new(0.0f64, 5.0).unwrap();
    let mut data: Vec<f32> = (0..w * h)
        .map(|i| (100.0 + 0.05 * (i % w) as f64 + noise.sample(&mut rng)) as f32)
        .collect();
    let mut truth = Vec::new();
    for gy in 0..4 {
        for gx in 0..5 {
            let x = 25.0 + gx as f64 * 50.0 + rng.gen_range(-3.0..3.0);
            let y = 22.0 + gy as f64 * 48.0 + rng.gen_range(-3.0..3.0);
            let (sx, sy) = (rng.gen_range(1.2..2.5), rng.gen_range(1.2..2.5));
            let flux = rng.gen_range(3000.0..20000.0);
            truth.push((x, y, flux, sx, sy));
            for py in 0..h {
                for px in 0..w {
                    let (dx, dy) = ((px as f64 - x) / sx, (py as f64 - y) / sy);
                    let r2 = dx * dx + dy * dy;
                    if r2 < 100.0 {
                        data[py * w + px] += (flux / (2.0 * std::f64::consts::PI * sx * sy)
                            * (-0.5 * r2).exp())
                            as f32;
                    }
                }
            }
        }
    }
    let bkg = Background::estimate(
        &data,
        w,
        h,
        &BackgroundParams {
            bw: 32,
            bh: 32,
            ..BackgroundParams::default()
        },
    );
    assert!((bkg.global_rms - 5.0).abs() < 0.5, "rms {}", bkg.global_rms);
    bkg.subtract(&mut data);
    let objs = extract(
        &data,
        w,
        h,
        bkg.global_rms,
        &ExtractParams {
            thresh: 3.0,
            ..ExtractParams::default()
        },
    )
    .unwrap();
    assert_eq!(objs.len(), truth.len(), "{objs:?}");
    for (x, y, flux, sx, sy) in &truth {
        let o = objs
            .iter()
            .min_by(|a, b| {
                (a.x - x)
                    .hypot(a.y - y)
                    .total_cmp(&(b.x - x).hypot(b.y - y))
            })
            .unwrap();
        assert!(
            (o.x - x).hypot(o.y - y) < 0.25,
            "source at ({x}, {y}) found at ({}, {})",
            o.x,
            o.y
        );
        // The isophote holds most of the light, never more than all of it.
        let frac = o.flux as f64 / flux;
        assert!(
            (0.8..1.02).contains(&frac),
            "flux fraction {frac} at ({x}, {y})"
        );
        // The longer axis lies along the wider Gaussian direction.
        let along_x = o.theta.cos().abs() > o.theta.sin().abs();
        if (sx - sy).abs() > 0.4 {
            assert_eq!(along_x, sx > sy, "theta {} for sx {sx} sy {sy}", o.theta);
        }
        assert!(
            o.xmin as f64 <= *x
                && *x <= o.xmax as f64
                && o.ymin as f64 <= *y
                && *y <= o.ymax as f64
        );
    }
}

fn gpl(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gpl"))
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn data_extract_writes_the_catalogue_with_ra_dec_and_refuses_bad_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("m13.csv");
    let img = fixture("m13.fits");
    let (code, stdout, stderr) = gpl(&[
        "data",
        "extract",
        img.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--thresh",
        "3",
        "--no-filter",
        "--no-clean",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let text = std::fs::read_to_string(&out).unwrap();
    let mut lines = text.lines();
    assert_eq!(
        lines.next().unwrap(),
        "id,x,y,ra,dec,xmin,ymin,xmax,ymax,flux,a,b,theta,npix,flags"
    );
    let rows: Vec<Vec<f64>> = lines
        .map(|l| l.split(',').map(|v| v.parse().unwrap()).collect())
        .collect();
    // The same settings as SEP's "nofilter" case: the same objects, RA/Dec from the header.
    let sep = sep_case("nofilter");
    assert_eq!(rows.len(), sep.objects.len());
    let wcs = read_fits(&img, None).unwrap().wcs.unwrap();
    for r in &rows {
        let (ra, dec) = wcs.pixel_to_world(r[1], r[2]);
        assert!((ra - r[3]).abs() < 1e-6 && (dec - r[4]).abs() < 1e-6);
        assert!(r[5] <= r[1] && r[1] <= r[7] && r[6] <= r[2] && r[2] <= r[8]);
    }
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() == 1,
        "temporary file left behind"
    );

    // A colour PNG is read as luminance and has no RA/Dec columns.
    let png = dir.path().join("field.png");
    let mut rgb = image::RgbImage::from_pixel(64, 48, image::Rgb([20, 30, 25]));
    for (x, y, p) in rgb.enumerate_pixels_mut() {
        let r2 = (x as f32 - 30.0).powi(2) + (y as f32 - 20.0).powi(2);
        let v = (200.0 * (-r2 / 8.0).exp()) as u8;
        *p = image::Rgb([
            p[0].saturating_add(v),
            p[1].saturating_add(v),
            p[2].saturating_add(v),
        ]);
        if (x + 3 * y) % 7 == 0 {
            p[1] += 3;
        }
    }
    rgb.save(&png).unwrap();
    let out2 = dir.path().join("field.csv");
    let (code, stdout, stderr) = gpl(&[
        "data",
        "extract",
        png.to_str().unwrap(),
        "--out",
        out2.to_str().unwrap(),
        "--bw",
        "16",
        "--bh",
        "16",
    ]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let text = std::fs::read_to_string(&out2).unwrap();
    assert!(text.starts_with("id,x,y,xmin,"), "{text}");
    let row: Vec<f64> = text
        .lines()
        .nth(1)
        .unwrap()
        .split(',')
        .map(|v| v.parse().unwrap())
        .collect();
    assert!(
        (row[1] - 30.0).abs() < 0.5 && (row[2] - 20.0).abs() < 0.5,
        "{text}"
    );

    // Bad input: a diagnostic naming the file or the setting, nothing written.
    let bad = dir.path().join("bad.fits");
    std::fs::write(&bad, format!("{:<2880}", "SIMPLE  =                    T")).unwrap();
    let out3 = dir.path().join("bad.csv");
    let (code, _, stderr) = gpl(&[
        "data",
        "extract",
        bad.to_str().unwrap(),
        "--out",
        out3.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("bad.fits") && stderr.contains("no END card"),
        "{stderr}"
    );
    let (code, _, stderr) = gpl(&[
        "data",
        "extract",
        img.to_str().unwrap(),
        "--out",
        out3.to_str().unwrap(),
        "--deblend-cont",
        "2",
    ]);
    assert_ne!(code, 0);
    assert!(stderr.contains("deblend_cont = 2"), "{stderr}");
    assert!(!out3.exists());
}

/// Random byte changes in the header and a random truncation never panic the FITS reader:
/// it reads an image or returns a diagnostic naming the file.
#[test]
fn fits_reader_survives_corrupted_headers() {
    use rand::{Rng, SeedableRng};
    let good = std::fs::read(fixture("wcs_cd.fits")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fuzz.fits");
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(16);
    let printable = b" =0123456789-+.'ABCDEFGHIJKLMNOPQRSTUVWXYZ/E";
    for round in 0..400 {
        let mut b = good.clone();
        for _ in 0..rng.gen_range(1..6) {
            let i = rng.gen_range(0..2 * 2880);
            b[i] = if rng.gen_bool(0.8) {
                printable[rng.gen_range(0..printable.len())]
            } else {
                rng.gen()
            };
        }
        if round % 5 == 0 {
            b.truncate(rng.gen_range(0..b.len()));
        }
        std::fs::write(&path, &b).unwrap();
        if let Err(e) = read_fits(&path, None) {
            assert!(e.to_string().contains("fuzz.fits"), "{e}");
        }
    }
}
