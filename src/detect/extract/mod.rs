//! The classical source extractor: SExtractor's algorithm as SEP (Barbary 2016) implements it,
//! re-derived from SEP's C sources. `Background::estimate` models the sky; `extract` finds the
//! objects in a background-subtracted image.
//!
//! | module | owns |
//! | --- | --- |
//! | `background` | the mesh background and RMS and their spline interpolation |
//! | `label` | the filter kernel, convolution, 8-connected labelling |
//! | `deblend` | multi-threshold deblending and the faint pixels' allocation |
//! | `measure` | per-object sums, moments, ellipse, flags, and cleaning |
//!
//! Where we differ from SEP (docs/decisions.md, "The classical detector"): objects are labelled
//! on the whole image at once instead of line by line (the same groups; the order of pixels
//! within an object differs, so the random allocation of faint deblended pixels differs pixel
//! by pixel); there is no pixel-stack or sub-object limit; NaN pixels are masked.

pub mod background;
pub mod deblend;
pub mod label;
pub mod measure;

pub use background::{Background, BackgroundParams};
pub use label::Kernel;
pub use measure::flags;

use super::DetectError;
use deblend::RandR;
use measure::Obj;

/// SEP's `extract` settings; the defaults are SEP's.
#[derive(Clone, Debug, PartialEq)]
pub struct ExtractParams {
    /// Detection threshold in units of the noise σ given to `extract`.
    pub thresh: f32,
    /// Minimum number of pixels above the threshold.
    pub minarea: usize,
    /// Filter kernel for detection (`None`: detect on the image itself).
    pub kernel: Option<Kernel>,
    /// Number of deblending levels.
    pub deblend_nthresh: usize,
    /// Minimum flux fraction of a branch to become an object of its own.
    pub deblend_cont: f64,
    /// Remove spurious detections in the wings of bright objects.
    pub clean: bool,
    /// Moffat exponent of the cleaning profile.
    pub clean_param: f64,
}

impl Default for ExtractParams {
    fn default() -> Self {
        ExtractParams {
            thresh: 1.5,
            minarea: 5,
            kernel: Some(Kernel::sep_default()),
            deblend_nthresh: 32,
            deblend_cont: 0.005,
            clean: true,
            clean_param: 1.0,
        }
    }
}

/// One detected object; pixel coordinates are 0-based with (0, 0) the centre of the first
/// pixel, as in SEP and numpy.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// Barycentre, weighted by the filtered image.
    pub x: f64,
    pub y: f64,
    /// Second moments (px²).
    pub x2: f64,
    pub y2: f64,
    pub xy: f64,
    /// Semi-major and semi-minor axis (px) and position angle (radians from +x towards +y).
    pub a: f32,
    pub b: f32,
    pub theta: f32,
    /// Ellipse parameters: cxx·dx² + cyy·dy² + cxy·dx·dy = R².
    pub cxx: f32,
    pub cyy: f32,
    pub cxy: f32,
    /// Isophotal flux: the sum of the object's pixels in the image.
    pub flux: f32,
    /// The same sum in the filtered image.
    pub cflux: f32,
    pub peak: f32,
    pub cpeak: f32,
    /// Pixels in the isophote (after deblending).
    pub npix: usize,
    /// Of those, pixels whose unfiltered value is above the threshold.
    pub tnpix: usize,
    pub xmin: i32,
    pub xmax: i32,
    pub ymin: i32,
    pub ymax: i32,
    pub xpeak: i32,
    pub ypeak: i32,
    /// Bits of `flags`.
    pub flag: u16,
    /// The absolute detection threshold.
    pub thresh: f32,
}

impl Object {
    fn from_obj(o: &Obj) -> Object {
        Object {
            x: o.mx,
            y: o.my,
            x2: o.mx2,
            y2: o.my2,
            xy: o.mxy,
            a: o.a,
            b: o.b,
            theta: o.theta,
            cxx: o.cxx,
            cyy: o.cyy,
            cxy: o.cxy,
            flux: o.dflux,
            cflux: o.fdflux,
            peak: o.dpeak,
            cpeak: o.fdpeak,
            npix: o.fdnpix,
            tnpix: o.dnpix,
            xmin: o.xmin,
            xmax: o.xmax,
            ymin: o.ymin,
            ymax: o.ymax,
            xpeak: o.xpeak,
            ypeak: o.ypeak,
            flag: o.flag,
            thresh: o.thresh,
        }
    }
}

impl ExtractParams {
    /// Refuses settings SEP would refuse or that cannot mean anything.
    pub fn validate(&self) -> Result<(), DetectError> {
        let bad = |setting: &str, value: String, expected: &str| {
            Err(DetectError::BadSetting {
                setting: setting.into(),
                value,
                expected: expected.into(),
            })
        };
        if !(self.thresh.is_finite() && self.thresh > 0.0) {
            return bad("thresh", self.thresh.to_string(), "a positive number");
        }
        if self.minarea == 0 {
            return bad("minarea", "0".into(), "at least 1 pixel");
        }
        if self.deblend_nthresh == 0 {
            return bad("deblend_nthresh", "0".into(), "at least 1 level");
        }
        if !(0.0..=1.0).contains(&self.deblend_cont) {
            return bad(
                "deblend_cont",
                self.deblend_cont.to_string(),
                "a fraction in [0, 1]",
            );
        }
        if !(self.clean_param.is_finite() && self.clean_param > 0.0) {
            return bad(
                "clean_param",
                self.clean_param.to_string(),
                "a positive number",
            );
        }
        if let Some(k) = &self.kernel {
            let sum: f32 = k.values.iter().map(|v| v.abs()).sum();
            if k.width == 0
                || k.height == 0
                || k.values.len() != k.width * k.height
                || sum.is_nan()
                || sum <= 0.0
            {
                return bad(
                    "kernel",
                    format!("{}x{} with {} values", k.width, k.height, k.values.len()),
                    "a non-empty grid of values, not all zero",
                );
            }
        }
        Ok(())
    }
}

/// Finds the objects of a background-subtracted `width` × `height` image (row-major) whose
/// filtered pixels are above `params.thresh` × `noise`. NaN pixels are masked (they count as
/// zero, as SEP treats masked pixels).
pub fn extract(
    data: &[f32],
    width: usize,
    height: usize,
    noise: f32,
    params: &ExtractParams,
) -> Result<Vec<Object>, DetectError> {
    params.validate()?;
    if data.len() != width * height || data.is_empty() {
        return Err(DetectError::BadImage {
            detail: format!("{} pixels for a {width}x{height} image", data.len()),
        });
    }
    if !(noise.is_finite() && noise > 0.0) {
        return Err(DetectError::BadSetting {
            setting: "noise".into(),
            value: noise.to_string(),
            expected: "a positive background RMS".into(),
        });
    }
    let ExtractParams {
        thresh,
        minarea,
        kernel,
        deblend_nthresh,
        deblend_cont,
        clean,
        clean_param,
    } = params;
    let image: Vec<f32> = data
        .iter()
        .map(|v| if v.is_nan() { 0.0 } else { *v })
        .collect();
    let filtered = match kernel {
        Some(k) => label::convolve(&image, width, height, k),
        None => image.clone(),
    };
    let thresh = thresh * noise;
    let size = (width as i32, height as i32);
    let mut rng = RandR::new(1);
    let mut objs = Vec::new();
    for group in label::label_image(&image, &filtered, width, height, thresh, *minarea) {
        let root = Obj::new(group, thresh, size.0, size.1);
        for mut o in deblend::deblend(
            root,
            *deblend_nthresh,
            *deblend_cont,
            *minarea,
            size,
            &mut rng,
        ) {
            o.analyse(true);
            objs.push(o);
        }
    }
    let survives = if *clean {
        for o in objs.iter_mut() {
            o.set_mthresh(*minarea, thresh);
        }
        measure::clean(&objs, *clean_param)
    } else {
        vec![true; objs.len()]
    };
    Ok(objs
        .iter()
        .zip(survives)
        .filter(|(_, s)| *s)
        .map(|(o, _)| Object::from_obj(o))
        .collect())
}
