//! One image in, one catalogue out: load a FITS, PNG or JPEG image (colour as Rec. 709
//! luminance, in 0–255 units), model and subtract the background, extract, and write the CSV
//! (RA and Dec when the FITS header has a TAN WCS), atomically.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::extract::{extract, Background, BackgroundParams, ExtractParams, Object};
use crate::data::fits::{read_fits, TanWcs};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum CatalogError {
    #[error(transparent)]
    #[diagnostic(transparent)]
    Fits(#[from] crate::data::fits::FitsError),

    #[error(transparent)]
    #[diagnostic(transparent)]
    Detect(#[from] super::DetectError),

    #[error("{path}: cannot read the image: {detail}")]
    #[diagnostic(code(gpl::detect::image), help("gpl reads FITS, PNG and JPEG images"))]
    Image { path: PathBuf, detail: String },

    #[error("{path}: cannot write the catalogue: {detail}")]
    #[diagnostic(code(gpl::detect::write))]
    Write { path: PathBuf, detail: String },
}

/// An image ready for detection.
pub struct LoadedImage {
    pub width: usize,
    pub height: usize,
    pub data: Vec<f32>,
    pub wcs: Option<TanWcs>,
}

/// Whether `path` is read as FITS: by its `SIMPLE` signature or its extension (.fits, .fit,
/// .fts).
pub fn is_fits(path: &Path) -> bool {
    let mut magic = [0u8; 9];
    std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .map(|_| &magic == b"SIMPLE  =")
        .unwrap_or(false)
        || matches!(
            path.extension()
                .and_then(|e| e.to_str())
                .map(str::to_ascii_lowercase)
                .as_deref(),
            Some("fits" | "fit" | "fts")
        )
}

/// Loads a FITS (by its extension .fits, .fit, .fts or its `SIMPLE` signature), PNG or JPEG.
pub fn load_image(path: &Path, hdu: Option<usize>) -> Result<LoadedImage, CatalogError> {
    if is_fits(path) {
        let f = read_fits(path, hdu)?;
        return Ok(LoadedImage {
            width: f.width,
            height: f.height,
            data: f.data,
            wcs: f.wcs,
        });
    }
    let img = image::open(path).map_err(|e| CatalogError::Image {
        path: path.into(),
        detail: e.to_string(),
    })?;
    let luma = img.to_luma32f();
    Ok(LoadedImage {
        width: luma.width() as usize,
        height: luma.height() as usize,
        data: luma.into_raw().into_iter().map(|v| v * 255.0).collect(),
        wcs: None,
    })
}

/// The background model and the objects of one image.
pub struct Catalog {
    pub background: Background,
    pub objects: Vec<Object>,
    pub wcs: Option<TanWcs>,
}

/// Background, then extraction at `params.thresh` × the global background RMS, as
/// `sep.extract(data - bkg, thresh, err=bkg.globalrms)`.
pub fn detect_image(
    image: &LoadedImage,
    back: &BackgroundParams,
    params: &ExtractParams,
) -> Result<Catalog, CatalogError> {
    params.validate()?;
    if back.bw == 0 || back.bh == 0 || back.fw == 0 || back.fh == 0 {
        return Err(super::DetectError::BadSetting {
            setting: "background box and filter sizes".into(),
            value: format!("{}x{} / {}x{}", back.bw, back.bh, back.fw, back.fh),
            expected: "at least 1".into(),
        }
        .into());
    }
    let background = Background::estimate(&image.data, image.width, image.height, back);
    let mut data = image.data.clone();
    background.subtract(&mut data);
    let objects = extract(
        &data,
        image.width,
        image.height,
        background.global_rms,
        params,
    )?;
    Ok(Catalog {
        background,
        objects,
        wcs: image.wcs.clone(),
    })
}

/// Writes the catalogue as CSV through a temporary file renamed into place. Columns: id, x, y,
/// (ra, dec,) xmin, ymin, xmax, ymax, flux, a, b, theta, npix, flags; pixel coordinates are
/// 0-based, θ in radians, RA and Dec in degrees.
pub fn write_csv(catalog: &Catalog, path: &Path) -> Result<(), CatalogError> {
    write_objects_csv(&catalog.objects, catalog.wcs.as_ref(), path)
}

/// [`write_csv`] for objects from anywhere (a tiled extraction, for one).
pub fn write_objects_csv(
    objects: &[Object],
    wcs: Option<&TanWcs>,
    path: &Path,
) -> Result<(), CatalogError> {
    let werr = |e: std::io::Error| CatalogError::Write {
        path: path.into(),
        detail: e.to_string(),
    };
    let mut out = String::from("id,x,y,");
    if wcs.is_some() {
        out.push_str("ra,dec,");
    }
    out.push_str("xmin,ymin,xmax,ymax,flux,a,b,theta,npix,flags\n");
    for (i, o) in objects.iter().enumerate() {
        out.push_str(&format!("{},{:.4},{:.4},", i + 1, o.x, o.y));
        if let Some(w) = wcs {
            let (ra, dec) = w.pixel_to_world(o.x, o.y);
            out.push_str(&format!("{ra:.7},{dec:.7},"));
        }
        out.push_str(&format!(
            "{},{},{},{},{},{:.4},{:.4},{:.5},{},{}\n",
            o.xmin, o.ymin, o.xmax, o.ymax, o.flux, o.a, o.b, o.theta, o.npix, o.flag
        ));
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).map_err(werr)?;
    f.write_all(out.as_bytes()).map_err(werr)?;
    f.sync_all().map_err(werr)?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(werr)
}
