//! Attribution maps: where in an image a class score comes from. Class-activation methods
//! weight a conv layer's channels (Grad-CAM, Grad-CAM++, LayerCAM from gradients, Score-CAM
//! from masked forward passes); gradient methods differentiate the score w.r.t. the pixels
//! (vanilla saliency, SmoothGrad, integrated gradients); occlusion slides a black patch.
//!
//! Every method returns its raw values (what a PyTorch computation with the same weights is
//! compared with) and maps at the input's resolution normalised to [0, 1]. A map with no
//! positive evidence, or a constant one, normalises to all zeros, never to NaN.

use super::{spatial, CHUNK};
use crate::nn::{EngineError, Network};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use serde::{Deserialize, Serialize};

/// Grad-CAM++'s guard against a zero denominator (pytorch-grad-cam's value).
const GRADCAM_PP_EPS: f32 = 1e-6;
/// Score-CAM's guard when a channel's activation is constant.
const SCORECAM_EPS: f32 = 1e-8;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "snake_case")]
pub enum Method {
    /// Channel weights = spatial mean of the class-score gradient (Selvaraju et al. 2017).
    GradCam { layer: usize },
    /// Channel weights from second- and third-order terms (Chattopadhay et al. 2018).
    GradCamPp { layer: usize },
    /// Element-wise positive gradients times activations (Jiang et al. 2021).
    LayerCam { layer: usize },
    /// Channel weights = softmax of the class scores of the image masked by each channel
    /// (Wang et al. 2020); no gradients.
    ScoreCam { layer: usize },
    /// |d score / d pixel|, the largest over channels (Simonyan et al. 2014).
    Saliency,
    /// The gradient averaged over `n` noisy copies, noise σ × the image's value range
    /// (Smilkov et al. 2017).
    SmoothGrad { n: usize, sigma: f32 },
    /// (x − baseline) × the gradient averaged along the straight path, right Riemann sum of
    /// `steps` points (Sundararajan et al. 2017).
    IntegratedGradients { steps: usize, baseline: Baseline },
    /// Drop of the class probability when a `window` × `window` black patch covers a pixel,
    /// averaged over the patches (stride `stride`) that cover it (Zeiler & Fergus 2014).
    Occlusion { window: usize, stride: usize },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    Black,
    /// The image blurred by a Gaussian of σ = `BLUR_SIGMA_FRACTION` × its width.
    Blurred,
}

/// The blurred baseline's σ as a fraction of the image width (about 7 px at 69 px).
pub const BLUR_SIGMA_FRACTION: f32 = 0.1;

impl Method {
    /// The statement and file name (`gradcam` → `gradcam.npy`).
    pub fn name(&self) -> &'static str {
        match self {
            Method::GradCam { .. } => "gradcam",
            Method::GradCamPp { .. } => "gradcam_pp",
            Method::LayerCam { .. } => "layercam",
            Method::ScoreCam { .. } => "scorecam",
            Method::Saliency => "saliency",
            Method::SmoothGrad { .. } => "smoothgrad",
            Method::IntegratedGradients { .. } => "integrated_gradients",
            Method::Occlusion { .. } => "occlusion",
        }
    }

    /// The conv layer a class-activation method weights.
    pub fn layer(&self) -> Option<usize> {
        match *self {
            Method::GradCam { layer }
            | Method::GradCamPp { layer }
            | Method::LayerCam { layer }
            | Method::ScoreCam { layer } => Some(layer),
            Method::Saliency
            | Method::SmoothGrad { .. }
            | Method::IntegratedGradients { .. }
            | Method::Occlusion { .. } => None,
        }
    }
}

/// One method's result for `n` images.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    /// Before normalisation: `[n, h, w]` at the layer's resolution for CAM methods,
    /// `[n, H, W, C]` signed per-channel values for the gradient methods (the gradient for
    /// saliency and SmoothGrad, the attribution for integrated gradients), `[n, H, W]` for
    /// occlusion.
    pub raw: Vec<f32>,
    pub raw_shape: Vec<usize>,
    /// `[n, H, W]`, each map in [0, 1].
    pub maps: Vec<f32>,
}

/// Attribution maps of `images` (`[n, H, W, C]`) for the class `targets[i]` of each image.
/// `seed` drives SmoothGrad's noise, the only random choice.
pub fn attribute(
    network: &mut Network,
    images: &[f32],
    targets: &[u32],
    method: &Method,
    seed: u64,
) -> Result<Attribution, EngineError> {
    let n = targets.len();
    let [height, width, channels] = input_shape(network)?;
    let pixels = height * width;
    let per = pixels * channels;
    match *method {
        Method::GradCam { layer }
        | Method::GradCamPp { layer }
        | Method::LayerCam { layer }
        | Method::ScoreCam { layer } => {
            let [h, w, c] = spatial(network, layer).ok_or_else(|| EngineError::Shape {
                layer: network.ir().layers[layer].name.clone(),
                message: "a class-activation map needs a layer with height, width and channels"
                    .into(),
            })?;
            let (acts, grads) = gradients(network, images, targets, Some(layer))?;
            let len = h * w * c;
            let mut raw = Vec::with_capacity(n * h * w);
            for i in 0..n {
                let (a, g) = (
                    &acts[i * len..(i + 1) * len],
                    &grads[i * len..(i + 1) * len],
                );
                let cam = match method {
                    Method::GradCam { .. } => weighted_sum(a, &grad_cam_weights(g, c), c),
                    Method::GradCamPp { .. } => weighted_sum(a, &grad_cam_pp_weights(a, g, c), c),
                    Method::LayerCam { .. } => layer_cam(a, g, c),
                    _ => {
                        let image = &images[i * per..(i + 1) * per];
                        let weights = score_cam_weights(
                            network,
                            image,
                            a,
                            [h, w, c],
                            [height, width, channels],
                            targets[i],
                        )?;
                        weighted_sum(a, &weights, c)
                    }
                };
                raw.extend(cam.into_iter().map(|v| v.max(0.0)));
            }
            let mut maps = Vec::with_capacity(n * pixels);
            for cam in raw.chunks(h * w) {
                maps.extend(normalise(&upsample(cam, [h, w], [height, width])));
            }
            Ok(Attribution {
                raw,
                raw_shape: vec![n, h, w],
                maps,
            })
        }
        Method::Saliency => {
            let (_, grads) = gradients(network, images, targets, None)?;
            let maps = channel_reduce(&grads, channels, |g| g.abs(), f32::max);
            Ok(Attribution {
                maps: normalise_each(&maps, pixels),
                raw: grads,
                raw_shape: vec![n, height, width, channels],
            })
        }
        Method::SmoothGrad { n: copies, sigma } => {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let mut mean = vec![0.0f32; n * per];
            for (i, image) in images.chunks(per).enumerate() {
                let (lo, hi) = range(image);
                let noise = Normal::new(0.0f32, (sigma * (hi - lo)).max(0.0))
                    .expect("a finite non-negative σ");
                let mut noisy = Vec::with_capacity(copies * per);
                for _ in 0..copies {
                    noisy.extend(image.iter().map(|v| v + noise.sample(&mut rng)));
                }
                let (_, grads) = gradients(network, &noisy, &vec![targets[i]; copies], None)?;
                let out = &mut mean[i * per..(i + 1) * per];
                for g in grads.chunks(per) {
                    for (m, v) in out.iter_mut().zip(g) {
                        *m += v / copies as f32;
                    }
                }
            }
            let maps = channel_reduce(&mean, channels, |g| g.abs(), f32::max);
            Ok(Attribution {
                maps: normalise_each(&maps, pixels),
                raw: mean,
                raw_shape: vec![n, height, width, channels],
            })
        }
        Method::IntegratedGradients { steps, baseline } => {
            let mut raw = Vec::with_capacity(n * per);
            for (i, image) in images.chunks(per).enumerate() {
                let base = match baseline {
                    Baseline::Black => vec![0.0; per],
                    Baseline::Blurred => gaussian_blur(
                        image,
                        [height, width, channels],
                        BLUR_SIGMA_FRACTION * width as f32,
                    ),
                };
                let mut path = Vec::with_capacity(steps * per);
                for k in 1..=steps {
                    let alpha = k as f32 / steps as f32;
                    path.extend(image.iter().zip(&base).map(|(x, b)| b + alpha * (x - b)));
                }
                let (_, grads) = gradients(network, &path, &vec![targets[i]; steps], None)?;
                let mut avg = vec![0.0f32; per];
                for g in grads.chunks(per) {
                    for (a, v) in avg.iter_mut().zip(g) {
                        *a += v;
                    }
                }
                for ((a, x), b) in avg.iter_mut().zip(image).zip(&base) {
                    *a *= (x - b) / steps as f32;
                }
                raw.extend(avg);
            }
            let maps = channel_reduce(&raw, channels, |a| a.abs(), |s, v| s + v);
            Ok(Attribution {
                maps: normalise_each(&maps, pixels),
                raw,
                raw_shape: vec![n, height, width, channels],
            })
        }
        Method::Occlusion { window, stride } => {
            let mut raw = Vec::with_capacity(n * pixels);
            for (i, image) in images.chunks(per).enumerate() {
                raw.extend(occlusion(
                    network,
                    image,
                    [height, width, channels],
                    targets[i],
                    window,
                    stride,
                )?);
            }
            Ok(Attribution {
                maps: normalise_each(&raw, pixels),
                raw,
                raw_shape: vec![n, height, width],
            })
        }
    }
}

pub(crate) fn input_shape(network: &Network) -> Result<[usize; 3], EngineError> {
    match network.ir().input.as_slice() {
        &[h, w, c] => Ok([h, w, c]),
        other => Err(EngineError::Shape {
            layer: "input".into(),
            message: format!("explanations need images (height × width × channels), not {other:?}"),
        }),
    }
}

/// Activations of `wrt` (the images when None) and the gradient of each image's target class
/// score w.r.t. them, in chunks of at most `CHUNK` images.
pub fn gradients(
    network: &mut Network,
    images: &[f32],
    targets: &[u32],
    wrt: Option<usize>,
) -> Result<(Vec<f32>, Vec<f32>), EngineError> {
    let n = targets.len();
    if n == 0 {
        return Ok((Vec::new(), Vec::new()));
    }
    let per = images.len() / n;
    let chunk = n.min(CHUNK);
    let (mut acts, mut grads) = (Vec::new(), Vec::new());
    for start in (0..n).step_by(chunk) {
        let end = (start + chunk).min(n);
        let mut batch = images[start * per..end * per].to_vec();
        batch.resize(chunk * per, 0.0);
        let mut classes = targets[start..end].to_vec();
        classes.resize(chunk, 0);
        let out = network.class_score_gradients(&batch, &classes, wrt)?;
        let len = out.activations.data.len() / chunk;
        acts.extend_from_slice(&out.activations.data[..(end - start) * len]);
        grads.extend_from_slice(&out.gradients.data[..(end - start) * len]);
    }
    Ok((acts, grads))
}

/// Grad-CAM's channel weights: the gradient's mean over the map.
pub fn grad_cam_weights(grads: &[f32], channels: usize) -> Vec<f32> {
    let positions = (grads.len() / channels) as f64;
    let mut w = vec![0.0f64; channels];
    for px in grads.chunks(channels) {
        for (s, g) in w.iter_mut().zip(px) {
            *s += *g as f64;
        }
    }
    w.into_iter().map(|s| (s / positions) as f32).collect()
}

/// Grad-CAM++'s channel weights, in pytorch-grad-cam's closed form (the exponential of the
/// score makes higher derivatives powers of the first): α = g² / (2g² + ΣA · g³), w = Σ relu(g) α.
pub fn grad_cam_pp_weights(acts: &[f32], grads: &[f32], channels: usize) -> Vec<f32> {
    let mut sum_acts = vec![0.0f32; channels];
    for px in acts.chunks(channels) {
        for (s, a) in sum_acts.iter_mut().zip(px) {
            *s += a;
        }
    }
    let mut w = vec![0.0f32; channels];
    for px in grads.chunks(channels) {
        for ((wc, &g), &sa) in w.iter_mut().zip(px).zip(&sum_acts) {
            if g != 0.0 {
                let g2 = g * g;
                let alpha = g2 / (2.0 * g2 + sa * g2 * g + GRADCAM_PP_EPS);
                *wc += g.max(0.0) * alpha;
            }
        }
    }
    w
}

/// Σ_c w_c A_c at every position (before the ReLU).
fn weighted_sum(acts: &[f32], weights: &[f32], channels: usize) -> Vec<f32> {
    acts.chunks(channels)
        .map(|px| px.iter().zip(weights).map(|(a, w)| a * w).sum())
        .collect()
}

fn layer_cam(acts: &[f32], grads: &[f32], channels: usize) -> Vec<f32> {
    acts.chunks(channels)
        .zip(grads.chunks(channels))
        .map(|(a, g)| a.iter().zip(g).map(|(a, g)| a * g.max(0.0)).sum())
        .collect()
}

/// Score-CAM: each channel, upsampled and scaled to [0, 1], masks the image; the channel's
/// weight is the softmax over channels of the masked images' target logits.
fn score_cam_weights(
    network: &mut Network,
    image: &[f32],
    acts: &[f32],
    [h, w, c]: [usize; 3],
    [height, width, channels]: [usize; 3],
    target: u32,
) -> Result<Vec<f32>, EngineError> {
    let pixels = height * width;
    let mut masked = Vec::with_capacity(c * pixels * channels);
    for k in 0..c {
        let channel: Vec<f32> = (0..h * w).map(|p| acts[p * c + k]).collect();
        let up = upsample(&channel, [h, w], [height, width]);
        let (lo, hi) = range(&up);
        for (p, m) in up.iter().enumerate() {
            let m = (m - lo) / (hi - lo + SCORECAM_EPS);
            masked.extend(
                image[p * channels..(p + 1) * channels]
                    .iter()
                    .map(|v| v * m),
            );
        }
    }
    let logits = network.logits(&masked, c)?;
    let classes = logits.len() / c;
    let mut scores: Vec<f32> = (0..c)
        .map(|k| logits[k * classes + target as usize])
        .collect();
    crate::nn::ops::activation::softmax_row(&mut scores);
    Ok(scores)
}

fn occlusion(
    network: &mut Network,
    image: &[f32],
    [height, width, channels]: [usize; 3],
    target: u32,
    window: usize,
    stride: usize,
) -> Result<Vec<f32>, EngineError> {
    let window = window.clamp(1, height.min(width));
    let stride = stride.max(1);
    let starts = |side: usize| -> Vec<usize> {
        let mut s: Vec<usize> = (0..=side - window).step_by(stride).collect();
        // The last patch touches the far edge, so every pixel is covered.
        if s.last() != Some(&(side - window)) {
            s.push(side - window);
        }
        s
    };
    let patches: Vec<(usize, usize)> = starts(height)
        .into_iter()
        .flat_map(|y| starts(width).into_iter().map(move |x| (y, x)))
        .collect();
    let per = height * width * channels;
    let mut batch = Vec::with_capacity((patches.len() + 1) * per);
    batch.extend_from_slice(image);
    for &(y0, x0) in &patches {
        let start = batch.len();
        batch.extend_from_slice(image);
        for y in y0..y0 + window {
            let row = start + (y * width + x0) * channels;
            batch[row..row + window * channels].fill(0.0);
        }
    }
    let probs = network.probabilities(&batch, patches.len() + 1)?;
    let classes = probs.len() / (patches.len() + 1);
    let base = probs[target as usize];
    let (mut sum, mut count) = (vec![0.0f32; height * width], vec![0u32; height * width]);
    for (k, &(y0, x0)) in patches.iter().enumerate() {
        let drop = base - probs[(k + 1) * classes + target as usize];
        for y in y0..y0 + window {
            for x in x0..x0 + window {
                sum[y * width + x] += drop;
                count[y * width + x] += 1;
            }
        }
    }
    Ok(sum
        .into_iter()
        .zip(count)
        .map(|(s, c)| if c > 0 { s / c as f32 } else { 0.0 })
        .collect())
}

/// Reduces `[.., channels]` values over the channel axis.
fn channel_reduce(
    values: &[f32],
    channels: usize,
    map: impl Fn(f32) -> f32,
    fold: impl Fn(f32, f32) -> f32,
) -> Vec<f32> {
    values
        .chunks(channels)
        .map(|px| px.iter().map(|v| map(*v)).fold(0.0, &fold))
        .collect()
}

/// Bilinear resampling with half-pixel centres (PyTorch's `align_corners=False`, OpenCV's
/// `INTER_LINEAR`).
pub fn upsample(map: &[f32], [h, w]: [usize; 2], [out_h, out_w]: [usize; 2]) -> Vec<f32> {
    let axis = |out: usize, len: usize| -> Vec<(usize, usize, f32)> {
        (0..out)
            .map(|o| {
                let src =
                    ((o as f32 + 0.5) * len as f32 / out as f32 - 0.5).clamp(0.0, (len - 1) as f32);
                let i0 = src.floor() as usize;
                let i1 = (i0 + 1).min(len - 1);
                (i0, i1, src - i0 as f32)
            })
            .collect()
    };
    let (ys, xs) = (axis(out_h, h), axis(out_w, w));
    let mut out = Vec::with_capacity(out_h * out_w);
    for &(y0, y1, fy) in &ys {
        for &(x0, x1, fx) in &xs {
            let top = map[y0 * w + x0] * (1.0 - fx) + map[y0 * w + x1] * fx;
            let bottom = map[y1 * w + x0] * (1.0 - fx) + map[y1 * w + x1] * fx;
            out.push(top * (1.0 - fy) + bottom * fy);
        }
    }
    out
}

/// Scales a map to [0, 1] by its minimum and maximum; a constant map (no evidence for the
/// class anywhere, or everything clipped by the ReLU) becomes all zeros, and non-finite
/// values count as zero, so no NaN ever leaves.
pub fn normalise(map: &[f32]) -> Vec<f32> {
    let clean: Vec<f32> = map
        .iter()
        .map(|v| if v.is_finite() { *v } else { 0.0 })
        .collect();
    let (lo, hi) = range(&clean);
    let span = hi - lo;
    if span.is_finite() && span > 0.0 {
        clean.iter().map(|v| (v - lo) / span).collect()
    } else {
        vec![0.0; clean.len()]
    }
}

fn normalise_each(maps: &[f32], pixels: usize) -> Vec<f32> {
    maps.chunks(pixels).flat_map(normalise).collect()
}

fn range(values: &[f32]) -> (f32, f32) {
    values
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        })
}

/// A separable Gaussian blur (σ in pixels, kernel ±3σ, edges clamped).
pub fn gaussian_blur(image: &[f32], [h, w, c]: [usize; 3], sigma: f32) -> Vec<f32> {
    let radius = (3.0 * sigma).ceil().max(1.0) as isize;
    let kernel: Vec<f32> = (-radius..=radius)
        .map(|d| (-(d * d) as f32 / (2.0 * sigma * sigma)).exp())
        .collect();
    let total: f32 = kernel.iter().sum();
    let pass = |src: &[f32], horizontal: bool| -> Vec<f32> {
        let mut out = vec![0.0; src.len()];
        for y in 0..h as isize {
            for x in 0..w as isize {
                for ch in 0..c {
                    let mut acc = 0.0;
                    for (k, weight) in kernel.iter().enumerate() {
                        let d = k as isize - radius;
                        let (yy, xx) = if horizontal {
                            (y, (x + d).clamp(0, w as isize - 1))
                        } else {
                            ((y + d).clamp(0, h as isize - 1), x)
                        };
                        acc += weight * src[(yy as usize * w + xx as usize) * c + ch];
                    }
                    out[(y as usize * w + x as usize) * c + ch] = acc / total;
                }
            }
        }
        out
    };
    pass(&pass(image, true), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_with_no_positive_evidence_normalises_to_zeros_not_nan() {
        assert_eq!(normalise(&[0.0, 0.0, 0.0]), vec![0.0; 3]);
        assert_eq!(normalise(&[f32::NAN, 1.0, 1.0]), vec![0.0, 1.0, 1.0]);
        let acts = [1.0, 2.0, 3.0, 4.0];
        let weights = grad_cam_weights(&[-1.0, -2.0, -1.0, -2.0], 2);
        let cam: Vec<f32> = weighted_sum(&acts, &weights, 2)
            .into_iter()
            .map(|v| v.max(0.0))
            .collect();
        assert!(cam.iter().all(|v| *v == 0.0));
        assert!(normalise(&cam).iter().all(|v| *v == 0.0));
    }

    #[test]
    fn upsampling_matches_half_pixel_bilinear() {
        // 2 → 4: PyTorch's interpolate(align_corners=False) gives [1, 1.25, 1.75, 2].
        let up = upsample(&[1.0, 2.0], [1, 2], [1, 4]);
        assert_eq!(up, vec![1.0, 1.25, 1.75, 2.0]);
    }

    #[test]
    fn grad_cam_pp_ignores_zero_gradients_and_keeps_positive_ones() {
        let w = grad_cam_pp_weights(&[1.0, 1.0], &[0.0, 2.0], 1);
        let g2 = 4.0f32;
        assert_eq!(
            w,
            vec![2.0 * g2 / (2.0 * g2 + 2.0 * g2 * 2.0 + GRADCAM_PP_EPS)]
        );
    }
}
