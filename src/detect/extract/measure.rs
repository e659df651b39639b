//! Per-object measurements (SEP's `preanalyse`, `analyse`) and cleaning (`clean`): isophotal
//! sums, the barycentre and second moments weighted by the filtered image, the ellipse a, b, θ.

use std::f64::consts::PI;

/// Object flags, SEP's values.
pub mod flags {
    /// The object is one of several deblended from one detection.
    pub const MERGED: u16 = 0x0001;
    /// The object touches the image border.
    pub const TRUNC: u16 = 0x0002;
    /// x and y are fully correlated; the moments were widened by 1/12 px².
    pub const SINGU: u16 = 0x0008;
}

/// A pixel of an object: its value and its value in the filtered image.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Pixel {
    pub x: i32,
    pub y: i32,
    pub value: f32,
    pub cd: f32,
}

/// An object while it is being measured.
#[derive(Clone, Debug, Default)]
pub(crate) struct Obj {
    pub pixels: Vec<Pixel>,
    pub thresh: f32,
    pub flag: u16,
    pub fdnpix: usize,
    pub fdflux: f32,
    pub fdpeak: f32,
    pub dpeak: f32,
    pub xpeak: i32,
    pub ypeak: i32,
    pub xcpeak: i32,
    pub ycpeak: i32,
    pub xmin: i32,
    pub xmax: i32,
    pub ymin: i32,
    pub ymax: i32,
    pub dnpix: usize,
    pub dflux: f32,
    pub mx: f64,
    pub my: f64,
    pub mx2: f64,
    pub my2: f64,
    pub mxy: f64,
    pub a: f32,
    pub b: f32,
    pub theta: f32,
    pub abcor: f32,
    pub cxx: f32,
    pub cyy: f32,
    pub cxy: f32,
    pub mthresh: f32,
}

impl Obj {
    pub fn new(pixels: Vec<Pixel>, thresh: f32, width: i32, height: i32) -> Obj {
        let trunc = pixels
            .iter()
            .any(|p| p.x == 0 || p.y == 0 || p.x == width - 1 || p.y == height - 1);
        let mut obj = Obj {
            pixels,
            thresh,
            flag: if trunc { flags::TRUNC } else { 0 },
            ..Obj::default()
        };
        obj.preanalyse();
        obj
    }

    /// Sums, peaks and bounds.
    pub fn preanalyse(&mut self) {
        let (mut peak, mut cpeak) = (f32::MIN, f32::MIN);
        let mut rv = 0f64;
        let (mut xmin, mut xmax, mut ymin, mut ymax) = (i32::MAX, 0, i32::MAX, 0);
        for p in &self.pixels {
            if peak < p.value {
                peak = p.value;
                self.xpeak = p.x;
                self.ypeak = p.y;
            }
            if cpeak < p.cd {
                cpeak = p.cd;
                self.xcpeak = p.x;
                self.ycpeak = p.y;
            }
            rv += p.cd as f64;
            xmin = xmin.min(p.x);
            xmax = xmax.max(p.x);
            ymin = ymin.min(p.y);
            ymax = ymax.max(p.y);
        }
        self.fdnpix = self.pixels.len();
        self.fdflux = rv as f32;
        self.fdpeak = cpeak;
        self.dpeak = peak;
        (self.xmin, self.xmax, self.ymin, self.ymax) = (xmin, xmax, ymin, ymax);
    }

    /// Barycentre, moments, ellipse and the isophotal flux. `robust` keeps the barycentre a
    /// deblended object had at its own threshold (SEP's second pass).
    pub fn analyse(&mut self, robust: bool) {
        self.preanalyse();
        let thresh = self.thresh as f64;
        let peak = self.dpeak as f64;
        let rv = self.fdflux as f64;
        let thresh2 = (thresh + peak) / 2.0;
        let (xmin, ymin) = (self.xmin, self.ymin);
        let (mut mx, mut my, mut mx2, mut my2, mut mxy, mut tv) =
            (0f64, 0f64, 0f64, 0f64, 0f64, 0f64);
        let (mut dnpix, mut area2) = (0usize, 0usize);
        for p in &self.pixels {
            let (x, y) = ((p.x - xmin) as f64, (p.y - ymin) as f64);
            let cval = p.cd as f64;
            let val = p.value as f64;
            tv += val;
            if val > thresh {
                dnpix += 1;
            }
            if val > thresh2 {
                area2 += 1;
            }
            mx += cval * x;
            my += cval * y;
            mx2 += cval * x * x;
            my2 += cval * y * y;
            mxy += cval * x * y;
        }
        let (mut xm, mut ym) = (mx / rv, my / rv);
        let (mut xm2, mut ym2, xym);
        if robust && self.flag & flags::MERGED != 0 {
            let xn = self.mx - xmin as f64;
            let yn = self.my - ymin as f64;
            xm2 = mx2 / rv + xn * xn - 2.0 * xm * xn;
            ym2 = my2 / rv + yn * yn - 2.0 * ym * yn;
            xym = mxy / rv + xn * yn - xm * yn - xn * ym;
            xm = xn;
            ym = yn;
        } else {
            xm2 = mx2 / rv - xm * xm;
            ym2 = my2 / rv - ym * ym;
            xym = mxy / rv - xm * ym;
        }
        let mut temp2 = xm2 * ym2 - xym * xym;
        if temp2 < 0.00694 {
            xm2 += 0.0833333;
            ym2 += 0.0833333;
            temp2 = xm2 * ym2 - xym * xym;
            self.flag |= flags::SINGU;
        }
        let diff = xm2 - ym2;
        let theta = if diff.abs() > 0.0 {
            (2.0 * xym).atan2(diff) / 2.0
        } else {
            PI / 4.0
        };
        let temp = (0.25 * diff * diff + xym * xym).sqrt();
        let mean = 0.5 * (xm2 + ym2);
        self.dnpix = dnpix;
        self.dflux = tv as f32;
        self.mx = xm + xmin as f64;
        self.my = ym + ymin as f64;
        self.mx2 = xm2;
        self.my2 = ym2;
        self.mxy = xym;
        self.a = (mean + temp).sqrt() as f32;
        self.b = (mean - temp).sqrt() as f32;
        self.theta = theta as f32;
        self.cxx = (ym2 / temp2) as f32;
        self.cyy = (xm2 / temp2) as f32;
        self.cxy = (-2.0 * xym / temp2) as f32;
        let darea = area2 as f64 - dnpix as f64;
        let t1t2 = thresh / thresh2;
        self.abcor = if t1t2 > 0.0 {
            let ab = self.a as f64 * self.b as f64;
            let lg = (if t1t2 < 1.0 { t1t2 } else { 0.99 }).ln();
            (((if darea < 0.0 { darea } else { -1.0 }) / (2.0 * PI * lg * ab)) as f32).min(1.0)
        } else {
            1.0
        };
    }

    /// The `minarea`-th highest filtered value above the detection threshold, which cleaning
    /// compares with a neighbour's wings (0 below `minarea` pixels).
    pub fn set_mthresh(&mut self, minarea: usize, thresh: f32) {
        if self.fdnpix < minarea || minarea == 0 {
            self.mthresh = 0.0;
            return;
        }
        let mut above: Vec<f32> = self.pixels.iter().map(|p| p.cd - thresh).collect();
        above.select_nth_unstable_by(minarea - 1, |a, b| b.total_cmp(a));
        self.mthresh = above[minarea - 1];
    }
}

/// Which objects survive cleaning: an object is removed when the Moffat-like profile of a
/// brighter neighbour (SExtractor's model, exponent `clean_param`) is above its `mthresh`
/// at its position.
pub(crate) fn clean(objs: &[Obj], clean_param: f64) -> Vec<bool> {
    const CLEAN_ZONE: f64 = 10.0;
    let beta = clean_param;
    let profile = |o: &Obj| {
        let unit = PI * o.a as f64 * o.b as f64;
        let amp = o.fdflux as f64 / (2.0 * unit * o.abcor as f64);
        let alpha = ((amp / o.thresh as f64).powf(1.0 / beta) - 1.0) * unit / o.fdnpix as f64;
        (amp, alpha)
    };
    let eats = |big: &Obj, amp: f64, alpha: f64, dx: f32, dy: f32, small: &Obj| {
        let (dx, dy) = (dx as f64, dy as f64);
        let val = 1.0
            + alpha
                * (big.cxx as f64 * dx * dx + big.cyy as f64 * dy * dy + big.cxy as f64 * dx * dy);
        val > 1.0
            && ((if val < 1e10 {
                amp * val.powf(-beta)
            } else {
                0.0
            }) as f32)
                > small.mthresh
    };
    let mut survives = vec![true; objs.len()];
    for i in 0..objs.len() {
        if !survives[i] {
            continue;
        }
        let o1 = &objs[i];
        let (ampin, alphain) = profile(o1);
        for j in i + 1..objs.len() {
            if !survives[j] {
                continue;
            }
            let o2 = &objs[j];
            let dx = (o1.mx - o2.mx) as f32;
            let dy = (o1.my - o2.my) as f32;
            let rlim = (o1.a + o2.a) * (o1.a + o2.a);
            if (dx * dx + dy * dy) as f64 > rlim as f64 * CLEAN_ZONE * CLEAN_ZONE {
                continue;
            }
            if o2.fdflux < o1.fdflux {
                if eats(o1, ampin, alphain, dx, dy, o2) {
                    survives[j] = false;
                }
            } else {
                let (amp, alpha) = profile(o2);
                if eats(o2, amp, alpha, dx, dy, o1) {
                    survives[i] = false;
                }
            }
        }
    }
    survives
}
