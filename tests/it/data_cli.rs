//! `gpl data synth | inspect | preview` through the real binary.

use crate::shared::gpl;

#[test]
fn synth_then_inspect_then_preview() {
    let dir = tempfile::tempdir().unwrap();
    let h5 = dir.path().join("g10.h5");
    let h5s = h5.to_str().unwrap();
    let (code, stdout, stderr) = gpl(&[
        "data", "synth", "--kind", "galaxy10", "--count", "40", "--seed", "3", "--out", h5s,
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("wrote 40 synthetic"), "{stdout}");

    let (code, stdout, _) = gpl(&["data", "inspect", h5s]);
    assert_eq!(code, 0);
    assert!(stdout.contains("layout Sdss"), "{stdout}");
    assert!(
        stdout.contains("images     uint8    [40, 69, 69, 3] contiguous"),
        "{stdout}"
    );
    assert!(stdout.contains("Smooth, Completely round"), "{stdout}");

    let png = dir.path().join("sheet.png");
    let (code, stdout, stderr) = gpl(&[
        "data",
        "preview",
        h5s,
        "--out",
        png.to_str().unwrap(),
        "--per-class",
        "3",
    ]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("0: Disk, Face-on, No Spiral"), "{stdout}");
    let sheet = image::open(&png).unwrap();
    assert_eq!((sheet.width(), sheet.height()), (16 + 3 * 71, 10 * 71));
}

#[test]
fn missing_file_is_a_diagnostic_with_nonzero_exit() {
    let (code, _, stderr) = gpl(&["data", "inspect", "/nonexistent/Galaxy10.h5"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("gpl::data::missing_file"), "{stderr}");
    assert!(stderr.contains("/nonexistent/Galaxy10.h5"), "{stderr}");
}
