//! Losses and penalties: weighted softmax cross-entropy from logits (Keras semantics: the
//! mean over the batch of w_i · CE_i, labels optionally smoothed), L1/L2 weight penalties
//! (Keras: l1·Σ|w| + l2·Σw²), and smooth-L1 (PyTorch's, for box regression).

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

/// Mean smooth-L1 (Huber with threshold `beta`) and its gradient w.r.t. `pred`.
pub fn smooth_l1<T: Real>(beta: f64, pred: &[T], target: &[T], grad: &mut [T]) -> f64 {
    let n = pred.len().max(1) as f64;
    let mut loss = 0.0;
    for ((p, t), g) in pred.iter().zip(target).zip(grad.iter_mut()) {
        let d = (*p - *t).to_f64();
        if d.abs() < beta {
            loss += 0.5 * d * d / beta;
            *g = T::from_f64(d / beta / n);
        } else {
            loss += d.abs() - 0.5 * beta;
            *g = T::from_f64(d.signum() / n);
        }
    }
    loss / n
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
    fn penalties_and_smooth_l1_gradients() {
        let w: Vec<f64> = values(9, 3)
            .iter()
            .map(|v| if v.abs() < 0.05 { 0.3 } else { *v })
            .collect();
        let mut g = vec![0.0; 9];
        penalty_backward(0.01, 0.02, &w, &mut g);
        assert_gradient("l1 l2", &w, &g, |w| penalty(0.01, 0.02, w));
        assert!((penalty(0.0, 0.5, &[1.0f64, -2.0]) - 2.5).abs() < 1e-12);

        let target = values(9, 4);
        let pred: Vec<f64> = w.iter().zip(&target).map(|(a, b)| b + a * 2.0).collect();
        smooth_l1(1.0, &pred, &target, &mut g);
        assert_gradient("smooth l1", &pred, &g, |p| {
            smooth_l1(1.0, p, &target, &mut [0.0; 9])
        });
    }
}
