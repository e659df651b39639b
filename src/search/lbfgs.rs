//! Limited-memory BFGS with box bounds by projection (the GP's hyper-parameter fit): the
//! two-loop recursion on the free coordinates, an Armijo backtracking line search along the
//! projected path, memory dropped when a direction fails to descend.

const MEMORY: usize = 8;

/// A function's value and gradient at a point.
pub type Objective<'a> = dyn FnMut(&[f64]) -> (f64, Vec<f64>) + 'a;

/// Minimises `f` (value and gradient) from `x0` inside `[lo, hi]`; returns the best point and
/// its value. `f` may return a non-finite value where it cannot be evaluated (a Cholesky that
/// failed): the line search backs off from it.
pub fn minimize(
    f: &mut Objective,
    x0: &[f64],
    lo: &[f64],
    hi: &[f64],
    max_iter: usize,
) -> (Vec<f64>, f64) {
    let clamp = |x: &mut [f64]| {
        for (i, v) in x.iter_mut().enumerate() {
            *v = v.clamp(lo[i], hi[i]);
        }
    };
    let mut x = x0.to_vec();
    clamp(&mut x);
    let (mut fx, mut g) = f(&x);
    if !fx.is_finite() {
        return (x, fx);
    }
    let mut s_mem: Vec<Vec<f64>> = Vec::new();
    let mut y_mem: Vec<Vec<f64>> = Vec::new();
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    for _ in 0..max_iter {
        // Coordinates held at a bound by a gradient pushing outwards are not free.
        let free: Vec<bool> = (0..x.len())
            .map(|i| !((x[i] <= lo[i] && g[i] > 0.0) || (x[i] >= hi[i] && g[i] < 0.0)))
            .collect();
        let pg: Vec<f64> = (0..x.len())
            .map(|i| if free[i] { g[i] } else { 0.0 })
            .collect();
        if pg.iter().all(|v| v.abs() < 1e-7) {
            break;
        }
        let mut d = two_loop(&pg, &s_mem, &y_mem);
        for (di, &fr) in d.iter_mut().zip(&free) {
            if !fr {
                *di = 0.0;
            }
        }
        if dot(&d, &pg) >= 0.0 {
            s_mem.clear();
            y_mem.clear();
            d = pg.iter().map(|v| -v).collect();
        }
        let mut t = if s_mem.is_empty() {
            (1.0 / pg.iter().map(|v| v.abs()).fold(0.0, f64::max)).min(1.0)
        } else {
            1.0
        };
        let mut accepted = None;
        for _ in 0..40 {
            let mut xn: Vec<f64> = x.iter().zip(&d).map(|(a, b)| a + t * b).collect();
            clamp(&mut xn);
            let step: Vec<f64> = xn.iter().zip(&x).map(|(a, b)| a - b).collect();
            let (fnew, gnew) = f(&xn);
            if fnew.is_finite() && fnew <= fx + 1e-4 * dot(&g, &step) {
                accepted = Some((xn, fnew, gnew, step));
                break;
            }
            t *= 0.5;
        }
        let Some((xn, fnew, gnew, step)) = accepted else {
            break;
        };
        let yv: Vec<f64> = gnew.iter().zip(&g).map(|(a, b)| a - b).collect();
        if dot(&step, &yv) > 1e-12 {
            if s_mem.len() == MEMORY {
                s_mem.remove(0);
                y_mem.remove(0);
            }
            s_mem.push(step);
            y_mem.push(yv);
        }
        let gain = fx - fnew;
        x = xn;
        fx = fnew;
        g = gnew;
        if gain < 1e-10 * (1.0 + fx.abs()) {
            break;
        }
    }
    (x, fx)
}

/// `-H g` by the two-loop recursion over the memory (oldest first).
fn two_loop(g: &[f64], s_mem: &[Vec<f64>], y_mem: &[Vec<f64>]) -> Vec<f64> {
    let dot = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(p, q)| p * q).sum::<f64>();
    let mut q = g.to_vec();
    let mut alpha = vec![0.0; s_mem.len()];
    for k in (0..s_mem.len()).rev() {
        let rho = 1.0 / dot(&y_mem[k], &s_mem[k]);
        alpha[k] = rho * dot(&s_mem[k], &q);
        for (qi, yi) in q.iter_mut().zip(&y_mem[k]) {
            *qi -= alpha[k] * yi;
        }
    }
    if let (Some(s), Some(y)) = (s_mem.last(), y_mem.last()) {
        let gamma = dot(s, y) / dot(y, y);
        q.iter_mut().for_each(|v| *v *= gamma);
    }
    for k in 0..s_mem.len() {
        let rho = 1.0 / dot(&y_mem[k], &s_mem[k]);
        let beta = rho * dot(&y_mem[k], &q);
        for (qi, si) in q.iter_mut().zip(&s_mem[k]) {
            *qi += (alpha[k] - beta) * si;
        }
    }
    q.iter().map(|v| -v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rosenbrock_minimum_and_respects_bounds() {
        let mut rosen = |x: &[f64]| {
            let (a, b) = (x[0], x[1]);
            let f = (1.0 - a).powi(2) + 100.0 * (b - a * a).powi(2);
            let g = vec![
                -2.0 * (1.0 - a) - 400.0 * a * (b - a * a),
                200.0 * (b - a * a),
            ];
            (f, g)
        };
        let (x, f) = minimize(&mut rosen, &[-1.2, 1.0], &[-5.0, -5.0], &[5.0, 5.0], 500);
        assert!(f < 1e-8, "f = {f}, x = {x:?}");
        // With b ≤ 0.5 the constrained minimum lies on the bound.
        let (x, _) = minimize(&mut rosen, &[-1.2, 0.0], &[-5.0, -5.0], &[5.0, 0.5], 500);
        assert!((x[1] - 0.5).abs() < 1e-12, "{x:?}");
    }
}
