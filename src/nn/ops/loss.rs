//! Losses and penalties: weighted softmax cross-entropy from logits (Keras semantics: the
//! mean over the batch of w_i · CE_i, labels optionally smoothed), L1/L2 weight penalties
//! (Keras: l1·Σ|w| + l2·Σw²), and the detection losses: RetinaNet's sigmoid focal loss for
//! anchor classes and smooth-L1 (PyTorch's) for the boxes of positive anchors, both summed and
//! divided by the batch's positive anchors.

use super::super::real::Real;

/// Returns the loss and writes the class probabilities; with `dlogits` also its gradient.
/// `smoothing` ε replaces the one-hot target by y·(1−ε) + ε/K (Keras `label_smoothing`), so
/// CE_i = −Σ_k y_k ln p_k and its gradient is (p − y)·w_i/n.
/// Works in f64: near convergence p − 1 for the true class cancels badly in f32.
#[allow(clippy::too_many_arguments)]
pub fn softmax_cross_entropy<T: Real>(
    classes: usize,
    logits: &[T],
    labels: &[u32],
    weights: &[f32],
    smoothing: f32,
    probs: &mut [T],
    mut dlogits: Option<&mut [T]>,
) -> f64 {
    let smoothing = smoothing as f64;
    let (off, on) = (
        smoothing / classes as f64,
        1.0 - smoothing + smoothing / classes as f64,
    );
    let n = labels.len();
    let mut loss = 0.0f64;
    let mut exps = vec![0.0f64; classes];
    for (i, (z, p)) in logits
        .chunks(classes)
        .zip(probs.chunks_mut(classes))
        .enumerate()
    {
        let max = z.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.to_f64()));
        for (e, v) in exps.iter_mut().zip(z) {
            *e = (v.to_f64() - max).exp();
        }
        let sum: f64 = exps.iter().sum();
        let label = labels[i] as usize;
        let target = |k: usize| if k == label { on } else { off };
        // Σ_k y_k = 1, so −Σ_k y_k ln p_k = max + ln Σ − Σ_k y_k z_k.
        let mixed: f64 = if smoothing == 0.0 {
            z[label].to_f64()
        } else {
            z.iter()
                .enumerate()
                .map(|(k, v)| target(k) * v.to_f64())
                .sum()
        };
        loss += weights[i] as f64 * (max + sum.ln() - mixed);
        let scale = weights[i] as f64 / n as f64;
        for (k, (pv, e)) in p.iter_mut().zip(&exps).enumerate() {
            let prob = e / sum;
            *pv = T::from_f64(prob);
            if let Some(d) = dlogits.as_deref_mut() {
                d[i * classes + k] = T::from_f64((prob - target(k)) * scale);
            }
        }
    }
    loss / n as f64
}

/// l1·Σ|w| + l2·Σw².
pub fn penalty<T: Real>(l1: f32, l2: f32, w: &[T]) -> f64 {
    let (mut a, mut s) = (0.0f64, 0.0f64);
    for v in w {
        let v = v.to_f64();
        a += v.abs();
        s += v * v;
    }
    l1 as f64 * a + l2 as f64 * s
}

/// Adds the penalty's gradient to `grad` (the L1 subgradient at 0 is 0).
pub fn penalty_backward<T: Real>(l1: f32, l2: f32, w: &[T], grad: &mut [T]) {
    let (l1, two_l2) = (T::from_f64(l1 as f64), T::from_f64(2.0 * l2 as f64));
    for (g, v) in grad.iter_mut().zip(w) {
        let sign = if *v > T::ZERO {
            T::ONE
        } else if *v < T::ZERO {
            -T::ONE
        } else {
            T::ZERO
        };
        *g += l1 * sign + two_l2 * *v;
    }
}

/// Which anchor of the batch's labels belongs to which sample, and how many positives
/// (label ≥ 1) the batch holds: the detection losses' normaliser, at least one.
fn anchors_and_positives(labels: &[i32], samples: usize) -> (usize, f64) {
    let per_sample = labels.len() / samples.max(1);
    let positives = labels.iter().filter(|&&l| l >= 1).count();
    (per_sample.max(1), positives.max(1) as f64)
}

/// RetinaNet's sigmoid focal loss over `classes` logits per anchor (torchvision's
/// `sigmoid_focal_loss` with reduction "sum", divided by the batch's positive anchors).
/// `labels` holds one entry per anchor: −1 ignored, 0 background, c + 1 for class c; an anchor's
/// targets are one-hot in c (all zero for the background). Each element contributes
/// α_t (1 − p_t)^γ · BCE(σ(x), y) with p_t = σ(x) for y = 1 and 1 − σ(x) for y = 0, α_t = α or
/// 1 − α; sample i's elements are multiplied by `weights[i]`; the sum is divided by
/// max(1, positive anchors in the batch), unweighted. Writes d loss / d logits with `dlogits`:
/// s·α_t·(1 − p_t)^γ·(γ p_t ln p_t − (1 − p_t)) with s = ±1 for y = 1 / 0, zero for ignored anchors.
/// Works in f64, with BCE and 1 − p_t from the logit directly so that saturated logits do not
/// cancel.
pub fn sigmoid_focal_loss<T: Real>(
    classes: usize,
    logits: &[T],
    labels: &[i32],
    weights: &[f32],
    alpha: f32,
    gamma: f32,
    mut dlogits: Option<&mut [T]>,
) -> f64 {
    let (per_sample, positives) = anchors_and_positives(labels, weights.len());
    let (alpha, gamma) = (alpha as f64, gamma as f64);
    let mut loss = 0.0f64;
    for (a, (z, &label)) in logits.chunks(classes).zip(labels).enumerate() {
        let w = weights[a / per_sample] as f64;
        for (k, x) in z.iter().enumerate() {
            let x = x.to_f64();
            let (value, grad) = if label < 0 {
                (0.0, 0.0)
            } else {
                let positive = label as usize == k + 1;
                // s·x is the logit of p_t: BCE = ln(1 + e^(−s·x)), 1 − p_t = σ(−s·x).
                let (s, alpha_t) = if positive {
                    (1.0, alpha)
                } else {
                    (-1.0, 1.0 - alpha)
                };
                let sx = s * x;
                let e = (-sx.abs()).exp();
                let bce = (-sx).max(0.0) + e.ln_1p();
                let (p_t, q) = if sx >= 0.0 {
                    (1.0 / (1.0 + e), e / (1.0 + e))
                } else {
                    (e / (1.0 + e), 1.0 / (1.0 + e))
                };
                let modulator = q.powf(gamma);
                (
                    alpha_t * modulator * bce,
                    s * alpha_t * modulator * (-gamma * p_t * bce - q),
                )
            };
            loss += w * value;
            if let Some(d) = dlogits.as_deref_mut() {
                d[a * classes + k] = T::from_f64(w * grad / positives);
            }
        }
    }
    loss / positives
}

/// Smooth-L1 (PyTorch's: ½d²/β below β, |d| − ½β above; plain L1 at β = 0) of the box
/// regression, over the 4 values of each positive anchor (`labels` ≥ 1, one label per anchor,
/// `pred` and `target` 4 values per anchor), sample i's terms multiplied by `weights[i]`, the
/// sum divided by max(1, positive anchors in the batch). Writes d loss / d pred with `grad`
/// (zero for the other anchors, and where pred = target).
pub fn box_smooth_l1<T: Real>(
    beta: f32,
    pred: &[T],
    target: &[T],
    labels: &[i32],
    weights: &[f32],
    mut grad: Option<&mut [T]>,
) -> f64 {
    let (per_sample, positives) = anchors_and_positives(labels, weights.len());
    let beta = beta as f64;
    let mut loss = 0.0f64;
    for (a, ((p, t), &label)) in pred.chunks(4).zip(target.chunks(4)).zip(labels).enumerate() {
        let w = weights[a / per_sample] as f64;
        for k in 0..4 {
            let (value, g) = if label < 1 {
                (0.0, 0.0)
            } else {
                let d = (p[k] - t[k]).to_f64();
                if d.abs() < beta {
                    (0.5 * d * d / beta, d / beta)
                } else if d == 0.0 {
                    (0.0, 0.0)
                } else {
                    (d.abs() - 0.5 * beta, d.signum())
                }
            };
            loss += w * value;
            if let Some(g_out) = grad.as_deref_mut() {
                g_out[a * 4 + k] = T::from_f64(w * g / positives);
            }
        }
    }
    loss / positives
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, values};
    use super::*;

    #[test]
    fn weighted_cross_entropy_is_keras_mean_and_its_gradient_matches() {
        let (n, c) = (4, 5);
        let z = values(n * c, 1).iter().map(|v| v * 3.0).collect::<Vec<_>>();
        let labels = [0u32, 4, 2, 2];
        let weights = [1.0f32, 0.5, 2.0, 0.25];
        let mut p = vec![0.0; n * c];
        let mut d = vec![0.0; n * c];
        let loss = softmax_cross_entropy(c, &z, &labels, &weights, 0.0, &mut p, Some(&mut d));
        let manual: f64 = (0..n)
            .map(|i| -(weights[i] as f64) * p[i * c + labels[i] as usize].ln())
            .sum::<f64>()
            / n as f64;
        assert!((loss - manual).abs() < 1e-12);
        assert_gradient("softmax cross-entropy", &z, &d, |z| {
            let mut p = vec![0.0; n * c];
            softmax_cross_entropy(c, z, &labels, &weights, 0.0, &mut p, None)
        });
    }

    #[test]
    fn label_smoothing_is_keras_closed_form_and_its_gradient_matches() {
        let (n, c, eps) = (3, 4, 0.2f32);
        let z = values(n * c, 7).iter().map(|v| v * 2.5).collect::<Vec<_>>();
        let labels = [2u32, 0, 3];
        let weights = [1.0f32, 2.0, 0.5];
        let mut p = vec![0.0; n * c];
        let mut d = vec![0.0; n * c];
        let loss = softmax_cross_entropy(c, &z, &labels, &weights, eps, &mut p, Some(&mut d));
        // Keras: categorical_crossentropy(y·(1−ε) + ε/K, softmax(z)), weighted mean.
        let manual: f64 = (0..n)
            .map(|i| {
                let ce: f64 = (0..c)
                    .map(|k| {
                        let one_hot = if k == labels[i] as usize { 1.0 } else { 0.0 };
                        let y = one_hot * (1.0 - eps as f64) + eps as f64 / c as f64;
                        -y * p[i * c + k].ln()
                    })
                    .sum();
                weights[i] as f64 * ce
            })
            .sum::<f64>()
            / n as f64;
        assert!((loss - manual).abs() < 1e-12, "{loss} vs {manual}");
        assert_gradient("smoothed cross-entropy", &z, &d, |z| {
            let mut p = vec![0.0; n * c];
            softmax_cross_entropy(c, z, &labels, &weights, eps, &mut p, None)
        });
        // ε = 0 is the plain one-hot loss.
        let plain = softmax_cross_entropy(c, &z, &labels, &weights, 0.0, &mut p, None);
        assert!((plain - loss).abs() > 1e-3, "smoothing changes the loss");
    }

    #[test]
    fn penalties_gradients() {
        let w: Vec<f64> = values(9, 3)
            .iter()
            .map(|v| if v.abs() < 0.05 { 0.3 } else { *v })
            .collect();
        let mut g = vec![0.0; 9];
        penalty_backward(0.01, 0.02, &w, &mut g);
        assert_gradient("l1 l2", &w, &g, |w| penalty(0.01, 0.02, w));
        assert!((penalty(0.0, 0.5, &[1.0f64, -2.0]) - 2.5).abs() < 1e-12);
    }

    /// Labels for `n · anchors` anchors: every fifth ignored, every third positive.
    fn anchor_labels(len: usize, classes: usize) -> Vec<i32> {
        (0..len)
            .map(|a| match a % 5 {
                4 => -1,
                0 | 2 => (a % classes) as i32 + 1,
                _ => 0,
            })
            .collect()
    }

    fn sigmoid_f64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn focal_loss_is_the_retinanet_formula_and_its_gradient_matches() {
        let (n, anchors, classes) = (3, 5, 4);
        let labels = anchor_labels(n * anchors, classes);
        let weights = [1.0f32, 0.5, 2.0];
        for (alpha, gamma, scale) in [(0.25f32, 2.0f32, 3.0), (0.6, 1.5, 1.0), (0.25, 0.0, 2.0)] {
            let z: Vec<f64> = values(n * anchors * classes, 11)
                .iter()
                .map(|v| v * scale)
                .collect();
            let mut d = vec![0.0; z.len()];
            let loss =
                sigmoid_focal_loss(classes, &z, &labels, &weights, alpha, gamma, Some(&mut d));
            // The textbook form, with p = σ(x) and the naive logarithms.
            let (a, g) = (alpha as f64, gamma as f64);
            let mut manual = 0.0;
            for (i, &label) in labels.iter().enumerate() {
                if label < 0 {
                    continue;
                }
                for k in 0..classes {
                    let p = sigmoid_f64(z[i * classes + k]);
                    let y = label == k as i32 + 1;
                    let (p_t, alpha_t) = if y { (p, a) } else { (1.0 - p, 1.0 - a) };
                    manual +=
                        weights[i / anchors] as f64 * -alpha_t * (1.0 - p_t).powf(g) * p_t.ln();
                }
            }
            let positives = labels.iter().filter(|&&l| l >= 1).count() as f64;
            manual /= positives;
            assert!(
                (loss - manual).abs() < 1e-10 * manual.abs(),
                "{loss} vs {manual}"
            );
            assert_gradient("focal", &z, &d, |z| {
                sigmoid_focal_loss(classes, z, &labels, &weights, alpha, gamma, None)
            });
            for (i, &label) in labels.iter().enumerate() {
                if label < 0 {
                    assert!(d[i * classes..(i + 1) * classes].iter().all(|v| *v == 0.0));
                }
            }
        }
        // A saturated, correct prediction costs nothing and its gradient does not blow up.
        let mut d = [0.0f64; 2];
        let loss = sigmoid_focal_loss(2, &[60.0f64, -60.0], &[1], &[1.0], 0.25, 2.0, Some(&mut d));
        assert!(
            loss.abs() < 1e-30 && d.iter().all(|v| v.abs() < 1e-30),
            "{loss} {d:?}"
        );
        // Without positives the sum is divided by one.
        let lone = sigmoid_focal_loss(1, &[0.0f64], &[0], &[1.0], 0.25, 0.0, None);
        assert!(
            (lone - 0.75 * std::f64::consts::LN_2).abs() < 1e-12,
            "{lone}"
        );
    }

    #[test]
    fn masked_smooth_l1_counts_positive_anchors_and_its_gradient_matches() {
        let (n, anchors) = (2, 6);
        let labels = anchor_labels(n * anchors, 3);
        let weights = [0.5f32, 1.5];
        let target = values(n * anchors * 4, 4);
        let offsets = values(n * anchors * 4, 5);
        for beta in [0.5f32, 1.0 / 9.0, 0.0] {
            // Offsets of 0.05 to 2: both sides of β, none at a kink.
            let pred: Vec<f64> = target
                .iter()
                .zip(&offsets)
                .map(|(t, o)| t + o.signum() * (0.05 + 1.95 * o.abs()))
                .collect();
            let mut g = vec![0.0; pred.len()];
            let loss = box_smooth_l1(beta, &pred, &target, &labels, &weights, Some(&mut g));
            let b = beta as f64;
            let mut manual = 0.0;
            for (a, &label) in labels.iter().enumerate() {
                if label < 1 {
                    continue;
                }
                for k in 0..4 {
                    let d = (pred[a * 4 + k] - target[a * 4 + k]).abs();
                    let huber = if d < b { 0.5 * d * d / b } else { d - 0.5 * b };
                    manual += weights[a / anchors] as f64 * huber;
                }
            }
            manual /= labels.iter().filter(|&&l| l >= 1).count() as f64;
            assert!(
                (loss - manual).abs() < 1e-12,
                "beta {beta}: {loss} vs {manual}"
            );
            assert_gradient("box smooth l1", &pred, &g, |p| {
                box_smooth_l1(beta, p, &target, &labels, &weights, None)
            });
            for (a, &label) in labels.iter().enumerate() {
                assert_eq!(
                    label < 1,
                    g[a * 4..a * 4 + 4].iter().all(|v| *v == 0.0),
                    "anchor {a}"
                );
            }
        }
    }

    #[derive(serde::Deserialize)]
    struct FocalCase {
        classes: usize,
        alpha: f32,
        gamma: f32,
        logits: Vec<f64>,
        labels: Vec<i32>,
        weights: Vec<f32>,
        loss: f64,
        grad: Vec<f64>,
    }

    #[derive(serde::Deserialize)]
    struct BoxCase {
        beta: f32,
        pred: Vec<f64>,
        target: Vec<f64>,
        labels: Vec<i32>,
        weights: Vec<f32>,
        loss: f64,
        grad: Vec<f64>,
    }

    #[derive(serde::Deserialize)]
    struct Fixture {
        focal: Vec<FocalCase>,
        boxes: Vec<BoxCase>,
    }

    fn assert_close(what: &str, got: f64, want: f64, rel: f64) {
        assert!(
            (got - want).abs() <= rel * want.abs().max(1e-3),
            "{what}: {got} vs {want}"
        );
    }

    /// tests/fixtures/engine/make_focal_fixture.py: torchvision's sigmoid_focal_loss and
    /// torch's smooth_l1_loss in float64, run in the engine's f32 and in f64.
    #[test]
    fn detection_losses_match_pytorch() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/engine/focal.json"
        );
        let fixture: Fixture =
            serde_json::from_str(&std::fs::read_to_string(path).expect("fixture present"))
                .expect("fixture parses");
        assert_eq!((fixture.focal.len(), fixture.boxes.len()), (4, 3));
        for (i, c) in fixture.focal.iter().enumerate() {
            let mut d = vec![0.0f64; c.grad.len()];
            let loss = sigmoid_focal_loss(
                c.classes,
                &c.logits,
                &c.labels,
                &c.weights,
                c.alpha,
                c.gamma,
                Some(&mut d),
            );
            assert_close(&format!("focal {i} loss"), loss, c.loss, 1e-6);
            let scale = c.grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (k, (g, w)) in d.iter().zip(&c.grad).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5 * scale,
                    "focal {i} grad {k}: {g} vs {w}"
                );
            }
            let logits: Vec<f32> = c.logits.iter().map(|&v| v as f32).collect();
            let mut d32 = vec![0.0f32; c.grad.len()];
            let loss32 = sigmoid_focal_loss(
                c.classes,
                &logits,
                &c.labels,
                &c.weights,
                c.alpha,
                c.gamma,
                Some(&mut d32),
            );
            assert_close(&format!("focal {i} loss in f32"), loss32, c.loss, 1e-6);
            for (k, (g, w)) in d32.iter().zip(&c.grad).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5 * scale,
                    "focal {i} f32 grad {k}: {g} vs {w}"
                );
            }
        }
        for (i, c) in fixture.boxes.iter().enumerate() {
            let mut g = vec![0.0f64; c.grad.len()];
            let loss = box_smooth_l1(
                c.beta,
                &c.pred,
                &c.target,
                &c.labels,
                &c.weights,
                Some(&mut g),
            );
            assert_close(&format!("boxes {i} loss"), loss, c.loss, 1e-6);
            let scale = c.grad.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            for (k, (a, w)) in g.iter().zip(&c.grad).enumerate() {
                assert!(
                    (a - w).abs() <= 1e-5 * scale,
                    "boxes {i} grad {k}: {a} vs {w}"
                );
            }
        }
    }
}
