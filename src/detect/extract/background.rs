//! The sky background and its RMS on a mesh, as SExtractor and SEP estimate them: per box a
//! 2σ-clipped mean and σ, a histogram of the box, a 3σ-clipped iteration on the histogram whose
//! mode is 2.5·median − 1.5·mean (the median alone when the two disagree by 0.3σ or more); bad
//! boxes filled from their nearest good neighbours; a median filter over the mesh; a natural
//! bicubic spline between box centres. Each step follows SEP's `background.c` (read, not copied)
//! in single precision where SEP uses it, so the maps agree with SEP's to rounding.

/// Mesh and filter sizes (SEP's `Background(bw, bh, fw, fh, fthresh)`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BackgroundParams {
    /// Box width and height in pixels.
    pub bw: usize,
    pub bh: usize,
    /// Median filter width and height in boxes.
    pub fw: usize,
    pub fh: usize,
    /// A box keeps its own value unless the filtered one differs by at least this much.
    pub fthresh: f32,
}

impl Default for BackgroundParams {
    fn default() -> Self {
        BackgroundParams {
            bw: 64,
            bh: 64,
            fw: 3,
            fh: 3,
            fthresh: 0.0,
        }
    }
}

/// The background model of one image: values at box centres plus spline coefficients.
#[derive(Clone, Debug)]
pub struct Background {
    width: usize,
    height: usize,
    nx: usize,
    ny: usize,
    bw: usize,
    bh: usize,
    back: Vec<f32>,
    sigma: Vec<f32>,
    dback: Vec<f32>,
    dsigma: Vec<f32>,
    /// Median of the filtered box backgrounds.
    pub global: f32,
    /// Median of the filtered box RMS values (SEP's `globalrms`).
    pub global_rms: f32,
}

const MIN_GOOD_FRACTION: f32 = 0.5;
const NSIGMA: f64 = 5.0;
const MAX_LEVELS: i64 = 4096;
const MODE_PIXELS: f64 = 4.0;

/// Statistics of one box before the histogram (SEP's `backstat`).
struct BoxStats {
    mean: f32,
    nlevels: usize,
    qzero: f32,
    qscale: f32,
}

impl Background {
    /// Estimates the background of a `width` × `height` image (row-major). Non-finite pixels
    /// are masked: they count neither in the statistics nor in the histograms.
    pub fn estimate(
        data: &[f32],
        width: usize,
        height: usize,
        params: &BackgroundParams,
    ) -> Background {
        assert_eq!(data.len(), width * height, "image buffer and size disagree");
        let BackgroundParams {
            bw,
            bh,
            fw,
            fh,
            fthresh,
        } = *params;
        let nx = (width.max(1) - 1) / bw + 1;
        let ny = (height.max(1) - 1) / bh + 1;
        let mut back = vec![0f32; nx * ny];
        let mut sigma = vec![0f32; nx * ny];
        let mut good = vec![false; nx * ny];
        for j in 0..ny {
            for i in 0..nx {
                let (x0, y0) = (i * bw, j * bh);
                let (x1, y1) = ((x0 + bw).min(width), (y0 + bh).min(height));
                let pixels = || {
                    (y0..y1).flat_map(move |y| data[y * width + x0..y * width + x1].iter().copied())
                };
                if let Some(stats) = box_stats(pixels(), (x1 - x0) * (y1 - y0)) {
                    let (b, s) = histogram_mode(&stats, pixels());
                    back[j * nx + i] = b;
                    sigma[j * nx + i] = s;
                    good[j * nx + i] = true;
                }
            }
        }
        fill_bad_boxes(&mut back, &mut sigma, &good, nx, ny);
        let (global, global_rms) = median_filter(&mut back, &mut sigma, nx, ny, fw, fh, fthresh);
        let dback = spline_columns(&back, nx, ny);
        let dsigma = spline_columns(&sigma, nx, ny);
        Background {
            width,
            height,
            nx,
            ny,
            bw,
            bh,
            back,
            sigma,
            dback,
            dsigma,
            global,
            global_rms,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    /// The interpolated background, row-major.
    pub fn back(&self) -> Vec<f32> {
        self.map(&self.back, &self.dback)
    }

    /// The interpolated background RMS, row-major.
    pub fn rms(&self) -> Vec<f32> {
        self.map(&self.sigma, &self.dsigma)
    }

    /// Subtracts the background from `data` in place.
    pub fn subtract(&self, data: &mut [f32]) {
        let mut line = vec![0f32; self.width];
        for (y, row) in data.chunks_mut(self.width).enumerate() {
            self.line(&self.back, &self.dback, y, &mut line);
            for (v, b) in row.iter_mut().zip(&line) {
                *v -= b;
            }
        }
    }

    fn map(&self, values: &[f32], dvalues: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; self.width * self.height];
        for (y, row) in out.chunks_mut(self.width.max(1)).enumerate() {
            self.line(values, dvalues, y, row);
        }
        out
    }

    /// One row of the bicubic spline (SEP's `bkg_line_flt_internal`): a cubic along y at every
    /// mesh column, then a natural spline along x through those values.
    fn line(&self, values: &[f32], dvalues: &[f32], y: usize, line: &mut [f32]) {
        let (nbx, nby) = (self.nx, self.ny);
        let (node, dnode): (Vec<f32>, Vec<f32>) = if nby > 1 {
            let mut dy = ((y as f32 / self.bh as f32) as f64 - 0.5) as f32;
            let mut yl = dy as i64;
            dy -= yl as f32;
            if yl < 0 {
                yl = 0;
                dy -= 1.0;
            } else if yl >= nby as i64 - 1 {
                yl = nby as i64 - 2;
                dy += 1.0;
            }
            let cdy = 1.0 - dy;
            let dy3 = dy * dy * dy - dy;
            let cdy3 = cdy * cdy * cdy - cdy;
            let lo = yl as usize * nbx;
            let hi = lo + nbx;
            let node: Vec<f32> = (0..nbx)
                .map(|x| {
                    cdy * values[lo + x]
                        + dy * values[hi + x]
                        + cdy3 * dvalues[lo + x]
                        + dy3 * dvalues[hi + x]
                })
                .collect();
            let dnode = if nbx > 1 {
                natural_spline(|x| node[x], nbx)
            } else {
                vec![0.0; nbx]
            };
            (node, dnode)
        } else {
            (values[..nbx].to_vec(), dvalues[..nbx].to_vec())
        };
        if nbx > 1 {
            let nx = self.bw;
            let xstep = 1.0f32 / nx as f32;
            let changepoint = nx / 2;
            let mut dx = (xstep - 1.0) / 2.0;
            let dx0 = ((nx + 1) % 2) as f32 * xstep / 2.0;
            let mut lo = 0usize;
            let (mut bx, mut i) = (0usize, 0usize);
            for out in line.iter_mut() {
                if i == changepoint && bx > 0 && bx < nbx - 1 {
                    lo += 1;
                    dx = dx0;
                }
                let cdx = 1.0 - dx;
                *out = cdx * (node[lo] + (cdx * cdx - 1.0) * dnode[lo])
                    + dx * (node[lo + 1] + (dx * dx - 1.0) * dnode[lo + 1]);
                if i == nx {
                    bx += 1;
                    i = 0;
                }
                i += 1;
                dx += xstep;
            }
        } else {
            line.fill(node[0]);
        }
    }
}

/// Clipped mean and σ of a box, and its histogram's binning; `None` when fewer than half the
/// box's pixels are usable.
fn box_stats(pixels: impl Iterator<Item = f32> + Clone, area: usize) -> Option<BoxStats> {
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0usize);
    for p in pixels.clone().filter(|p| p.is_finite()) {
        sum += p as f64;
        sum2 += p as f64 * p as f64;
        n += 1;
    }
    if (n as f32) < area as f32 * MIN_GOOD_FRACTION || n == 0 {
        return None;
    }
    let mean = sum / n as f64;
    let var = sum2 / n as f64 - mean * mean;
    let sigma = if var > 0.0 { var.sqrt() } else { 0.0 };
    let lcut = (mean - 2.0 * sigma) as f32;
    let hcut = (mean + 2.0 * sigma) as f32;
    let (mut sum, mut sum2, mut n) = (0f64, 0f64, 0usize);
    for p in pixels.filter(|p| *p <= hcut && *p >= lcut) {
        sum += p as f64;
        sum2 += p as f64 * p as f64;
        n += 1;
    }
    if n == 0 {
        return None;
    }
    let mean = sum / n as f64;
    let var = sum2 / n as f64 - mean * mean;
    let sigma = if var > 0.0 { var.sqrt() } else { 0.0 };
    let step = (2.0 / std::f64::consts::PI).sqrt() * NSIGMA / MODE_PIXELS;
    let nlevels = ((step * n as f64 + 1.0) as i64).min(MAX_LEVELS) as usize;
    let qscale = if sigma > 0.0 {
        (2.0 * NSIGMA * sigma / nlevels as f64) as f32
    } else {
        1.0
    };
    Some(BoxStats {
        mean: mean as f32,
        nlevels,
        qzero: (mean - NSIGMA * sigma) as f32,
        qscale,
    })
}

/// The box's background and σ from its histogram (SEP's `backhisto` and `backguess`).
fn histogram_mode(stats: &BoxStats, pixels: impl Iterator<Item = f32>) -> (f32, f32) {
    let nlevels = stats.nlevels;
    let mut histo = vec![0u64; nlevels];
    let qscale = stats.qscale;
    let cste = (0.499999 - (stats.qzero / qscale) as f64) as f32;
    for p in pixels.filter(|p| p.is_finite()) {
        let bin = (p / qscale + cste) as i64;
        if bin >= 0 && (bin as usize) < nlevels {
            histo[bin as usize] += 1;
        }
    }
    let top = nlevels as i64 - 1;
    let (mut lcut, mut hcut) = (0i64, top);
    let mut sig = 10.0 * top as f64;
    let mut sig1 = 1.0f64;
    let mut mea = stats.mean as f64;
    let mut med = mea;
    for _ in 0..100 {
        if !(sig >= 0.1 && (sig / sig1 - 1.0).abs() > 1e-4) {
            break;
        }
        sig1 = sig;
        let (mut sum, mut lowsum, mut highsum) = (0u64, 0u64, 0u64);
        mea = 0.0;
        sig = 0.0;
        let (mut lo, mut hi) = (lcut, hcut);
        for i in lcut..=hcut {
            if lowsum < highsum {
                lowsum += histo[lo as usize];
                lo += 1;
            } else {
                highsum += histo[hi as usize];
                hi -= 1;
            }
            let count = histo[i as usize];
            sum += count;
            let d = count as f64 * i as f64;
            mea += d;
            sig += d * i as f64;
        }
        med = if hi >= 0 {
            let peak = histo[lo as usize].max(histo[hi as usize]);
            hi as f64 + 0.5 + (highsum as f64 - lowsum as f64) / (2.0 * peak as f64)
        } else {
            0.0
        };
        if sum > 0 {
            mea /= sum as f64;
            sig = sig / sum as f64 - mea * mea;
        }
        sig = if sig > 0.0 { sig.sqrt() } else { 0.0 };
        let round = |t: f64| (if t > 0.0 { t + 0.5 } else { t - 0.5 }) as i64;
        lcut = if med - 3.0 * sig > 0.0 {
            round(med - 3.0 * sig)
        } else {
            0
        };
        hcut = if med + 3.0 * sig < top as f64 {
            round(med + 3.0 * sig)
        } else {
            top
        };
    }
    let (qzero, qscale) = (stats.qzero as f64, stats.qscale as f64);
    let mode = if sig.abs() > 0.0 {
        if ((mea - med) / sig).abs() < 0.3 {
            qzero + (2.5 * med - 1.5 * mea) * qscale
        } else {
            qzero + med * qscale
        }
    } else {
        qzero + mea * qscale
    };
    (mode as f32, (sig * qscale) as f32)
}

/// A box with too few usable pixels takes the mean of its nearest good boxes (0 and 1 when
/// there is none).
fn fill_bad_boxes(back: &mut [f32], sigma: &mut [f32], good: &[bool], nx: usize, ny: usize) {
    let original = back.to_vec();
    for py in 0..ny {
        for px in 0..nx {
            let i = py * nx + px;
            if good[i] {
                continue;
            }
            let (mut best, mut val, mut sval, mut n) = (f32::INFINITY, 0f32, 0f32, 0u32);
            for y in 0..ny {
                for x in 0..nx {
                    let j = y * nx + x;
                    if !good[j] {
                        continue;
                    }
                    let d2 = (x as f32 - px as f32).powi(2) + (y as f32 - py as f32).powi(2);
                    if d2 < best {
                        best = d2;
                        val = original[j];
                        sval = sigma[j];
                        n = 1;
                    } else if d2 == best {
                        val += original[j];
                        sval += sigma[j];
                        n += 1;
                    }
                }
            }
            back[i] = if n > 0 { val / n as f32 } else { 0.0 };
            sigma[i] = if n > 0 { sval / n as f32 } else { 1.0 };
        }
    }
}

/// SEP's `fqmedian`: the middle value, or the mean of the two middle values.
pub(crate) fn median(values: &mut [f32]) -> f32 {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let n = values.len();
    match n {
        0 => 0.0,
        1 => values[0],
        _ if n % 2 == 1 => values[n / 2],
        _ => ((values[n / 2 - 1] + values[n / 2]) as f64 / 2.0) as f32,
    }
}

/// Median-filters the mesh over `fw` × `fh` boxes (the window shrinks symmetrically at the
/// edges) and returns the global background and RMS.
fn median_filter(
    back: &mut [f32],
    sigma: &mut [f32],
    nx: usize,
    ny: usize,
    fw: usize,
    fh: usize,
    fthresh: f32,
) -> (f32, f32) {
    let (hx, hy) = (fw / 2, fh / 2);
    let mut back2 = back.to_vec();
    let mut sigma2 = sigma.to_vec();
    let mut bwin = Vec::new();
    let mut swin = Vec::new();
    for py in 0..ny {
        let ry = hy.min(ny - 1 - py).min(py);
        for px in 0..nx {
            let rx = hx.min(nx - 1 - px).min(px);
            bwin.clear();
            swin.clear();
            for y in py - ry..=py + ry {
                for x in px - rx..=px + rx {
                    bwin.push(back[y * nx + x]);
                    swin.push(sigma[y * nx + x]);
                }
            }
            let i = py * nx + px;
            let med = median(&mut bwin);
            if (med - back[i]).abs() >= fthresh {
                back2[i] = med;
                sigma2[i] = median(&mut swin);
            }
        }
    }
    back.copy_from_slice(&back2);
    sigma.copy_from_slice(&sigma2);
    let global = median(&mut back2);
    let mut global_rms = median(&mut sigma2);
    if global_rms <= 0.0 {
        // Only the positive RMS values, when there are some (sigma2 is sorted now).
        let positive: Vec<f32> = sigma2.iter().copied().filter(|s| *s > 0.0).collect();
        global_rms = if positive.is_empty() || positive.len() == sigma2.len() {
            1.0
        } else {
            median(&mut positive.clone())
        };
    }
    (global, global_rms)
}

/// Second derivatives of a natural cubic spline with unit spacing, in SEP's arithmetic.
fn natural_spline(value: impl Fn(usize) -> f32, n: usize) -> Vec<f32> {
    let mut d = vec![0f32; n];
    if n < 2 {
        return d;
    }
    let mut u = vec![0f32; n];
    for k in 1..n - 1 {
        let temp = -1.0 / (d[k - 1] + 4.0);
        d[k] = temp;
        u[k] = temp * (u[k - 1] - 6.0 * (value(k + 1) + value(k - 1) - 2.0 * value(k)));
    }
    d[n - 1] = 0.0;
    for k in (1..n - 1).rev() {
        d[k] = ((d[k] * d[k + 1] + u[k]) as f64 / 6.0) as f32;
    }
    d
}

/// The spline's second derivatives along y for every mesh column.
fn spline_columns(map: &[f32], nx: usize, ny: usize) -> Vec<f32> {
    let mut out = vec![0f32; nx * ny];
    if ny > 1 {
        for x in 0..nx {
            let d = natural_spline(|y| map[y * nx + x], ny);
            for (y, v) in d.into_iter().enumerate() {
                out[y * nx + x] = v;
            }
        }
    }
    out
}
