//! A Gaussian process over the feature cube: constant mean after standardising the outputs,
//! a Matérn-5/2 kernel with one length scale per feature (ARD), a signal variance and a noise
//! variance. Hyper-parameters maximise the log marginal likelihood plus weak log-normal priors
//! (MAP), by projected L-BFGS on the log-parameters from several starts, with the analytic
//! gradient. Why these choices: docs/decisions.md, "Search optimiser (issue 15)".

use super::lbfgs;
use super::linalg::Cholesky;
use rand::Rng;
use rand_chacha::ChaCha8Rng;

const SQRT5: f64 = 2.236_067_977_499_79;

/// Hyper-parameters on the log scale: `[log ℓ_1 … log ℓ_d, log σ²_signal, log σ²_noise]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Hyper(pub Vec<f64>);

impl Hyper {
    pub fn lengths(&self) -> impl Iterator<Item = f64> + '_ {
        self.0[..self.0.len() - 2].iter().map(|v| v.exp())
    }
    pub fn signal(&self) -> f64 {
        self.0[self.0.len() - 2].exp()
    }
    pub fn noise(&self) -> f64 {
        self.0[self.0.len() - 1].exp()
    }
}

/// The smallest noise variance (standardised units), and the one a deterministic objective gets.
pub const MIN_NOISE: f64 = 1e-6;

/// What the objective's noise is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Noise {
    /// Unknown: its variance is a hyper-parameter (training runs: seeds, data order).
    Fitted,
    /// None: the variance stays at `MIN_NOISE` (test functions; what Optuna's
    /// `deterministic_objective` does).
    Deterministic,
}

/// Bounds of the log-parameters, on inputs in [0, 1] and standardised outputs.
fn bounds(d: usize, noise: Noise) -> (Vec<f64>, Vec<f64>) {
    let mut lo = vec![(5e-3f64).ln(); d];
    let mut hi = vec![(1e3f64).ln(); d];
    let max_noise = match noise {
        Noise::Fitted => 1.0,
        Noise::Deterministic => MIN_NOISE,
    };
    lo.extend([(1e-2f64).ln(), MIN_NOISE.ln()]);
    hi.extend([(1e2f64).ln(), max_noise.ln()]);
    (lo, hi)
}

/// A log-normal prior `(μ, σ)` on each parameter, its density taken in the parameter's own
/// units as GPyTorch does (so its mode is at `e^{μ−σ²}`), and whether the density's `1/x`
/// factor applies. Length scales: Hvarfner et al. 2024 (BoTorch's default), `μ = √2 + ln(d)/2`,
/// `σ = √3`, a mode of 0.29 at d = 2 and 0.50 at d = 6 on the unit cube; noise variance:
/// BoTorch's `(−4, 1)`; signal variance: a wide normal on its log around 1, the outputs being
/// standardised.
fn priors(d: usize) -> Vec<(f64, f64, bool)> {
    let centre = std::f64::consts::SQRT_2 + 0.5 * (d as f64).ln();
    let mut p = vec![(centre, 3f64.sqrt(), true); d];
    p.extend([(0.0, 1.5, false), (-4.0, 1.0, true)]);
    p
}

/// Matérn-5/2 at scaled distance `r`, and `(5/3)(1 + √5 r) e^{-√5 r}`: the factor that, times
/// `(Δ/ℓ)²`, gives the kernel's derivative in `log ℓ`.
fn matern(r: f64) -> (f64, f64) {
    let e = (-SQRT5 * r).exp();
    (
        (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * e,
        5.0 / 3.0 * (1.0 + SQRT5 * r) * e,
    )
}

fn scaled_sq_dist(a: &[f64], b: &[f64], inv_len2: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(inv_len2)
        .map(|((p, q), w)| (p - q) * (p - q) * w)
        .sum()
}

/// The log marginal likelihood of standardised `y` at `x` under `h`, and its gradient in the
/// log-parameters. `None` when the covariance cannot be factored even with jitter.
pub fn log_marginal(x: &[Vec<f64>], y: &[f64], h: &Hyper) -> Option<(f64, Vec<f64>)> {
    let n = x.len();
    let d = h.0.len() - 2;
    let inv_len2: Vec<f64> = h.lengths().map(|l| 1.0 / (l * l)).collect();
    let (s2, n2) = (h.signal(), h.noise());
    let mut k = vec![0.0; n * n];
    let mut dk = vec![0.0; n * n];
    for i in 0..n {
        k[i * n + i] = s2 + n2;
        for j in 0..i {
            let (m, g) = matern(scaled_sq_dist(&x[i], &x[j], &inv_len2).sqrt());
            k[i * n + j] = s2 * m;
            k[j * n + i] = s2 * m;
            dk[i * n + j] = s2 * g;
        }
    }
    let chol = Cholesky::new(&k, n)?;
    let mut alpha = y.to_vec();
    chol.solve(&mut alpha);
    let fit: f64 = y.iter().zip(&alpha).map(|(a, b)| a * b).sum();
    let lml =
        -0.5 * fit - 0.5 * chol.log_det() - 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
    // ∂/∂θ = ½ tr(W ∂K/∂θ) with W = ααᵀ − K⁻¹.
    let kinv = chol.inverse();
    let w = |i: usize, j: usize| alpha[i] * alpha[j] - kinv[i * n + j];
    let mut grad = vec![0.0; d + 2];
    let mut trace_w = 0.0;
    let mut signal = 0.0;
    for i in 0..n {
        trace_w += w(i, i);
        signal += 0.5 * w(i, i) * s2;
        for j in 0..i {
            let wij = w(i, j);
            // Off-diagonal pairs count twice in the trace, halving cancels the ½.
            signal += wij * k[i * n + j];
            let g = wij * dk[i * n + j];
            for (c, gc) in grad[..d].iter_mut().enumerate() {
                let delta = x[i][c] - x[j][c];
                *gc += g * delta * delta * inv_len2[c];
            }
        }
    }
    grad[d] = signal;
    grad[d + 1] = 0.5 * n2 * trace_w;
    Some((lml, grad))
}

/// The log marginal likelihood plus the log priors, and its gradient.
fn log_posterior(x: &[Vec<f64>], y: &[f64], h: &Hyper) -> Option<(f64, Vec<f64>)> {
    let (mut v, mut g) = log_marginal(x, y, h)?;
    for ((t, gi), (mu, sd, density_in_x)) in h.0.iter().zip(&mut g).zip(priors(h.0.len() - 2)) {
        v -= 0.5 * ((t - mu) / sd).powi(2);
        *gi -= (t - mu) / (sd * sd);
        if density_in_x {
            // log(1/x) = −θ.
            v -= t;
            *gi -= 1.0;
        }
    }
    Some((v, g))
}

/// A GP conditioned on data, with its hyper-parameters fixed.
#[derive(Clone, Debug)]
pub struct Gp {
    x: Vec<Vec<f64>>,
    /// Standardised outputs, fantasies included.
    y: Vec<f64>,
    hyper: Hyper,
    inv_len2: Vec<f64>,
    chol: Cholesky,
    alpha: Vec<f64>,
}

/// How raw outputs map to the GP's standardised ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Standardise {
    pub mean: f64,
    pub scale: f64,
}

impl Standardise {
    pub fn of(y: &[f64]) -> Standardise {
        let n = y.len().max(1) as f64;
        let mean = y.iter().sum::<f64>() / n;
        let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
        let scale = if var.sqrt() > 1e-12 { var.sqrt() } else { 1.0 };
        Standardise { mean, scale }
    }
    pub fn apply(&self, y: f64) -> f64 {
        (y - self.mean) / self.scale
    }
}

/// How the hyper-parameters are fitted.
#[derive(Clone, Copy, Debug)]
pub struct FitOptions {
    /// L-BFGS runs: one from a fixed start, the rest from random ones.
    pub starts: usize,
    pub max_iter: usize,
    pub noise: Noise,
}

impl Default for FitOptions {
    fn default() -> Self {
        FitOptions {
            starts: 5,
            max_iter: 100,
            noise: Noise::Fitted,
        }
    }
}

impl Gp {
    /// Fits the hyper-parameters to standardised `y` at `x` (features in [0, 1]) and conditions.
    pub fn fit(
        x: Vec<Vec<f64>>,
        y: Vec<f64>,
        opts: FitOptions,
        rng: &mut ChaCha8Rng,
    ) -> Option<Gp> {
        let d = x.first()?.len();
        let (lo, hi) = bounds(d, opts.noise);
        let mut starts = vec![{
            let mut h = vec![(0.5f64).ln(); d];
            h.extend([0.0, (1e-3f64).ln()]);
            h
        }];
        for _ in 1..opts.starts {
            let mut h: Vec<f64> = (0..d)
                .map(|_| rng.gen_range((0.05f64).ln()..(2.0f64).ln()))
                .collect();
            h.extend([
                rng.gen_range((0.3f64).ln()..(3.0f64).ln()),
                rng.gen_range((1e-6f64).ln()..(1e-1f64).ln()),
            ]);
            starts.push(h);
        }
        let mut objective = |t: &[f64]| match log_posterior(&x, &y, &Hyper(t.to_vec())) {
            Some((v, g)) => (-v, g.into_iter().map(|v| -v).collect()),
            None => (f64::INFINITY, vec![0.0; t.len()]),
        };
        let mut best: Option<(Vec<f64>, f64)> = None;
        for s in &starts {
            let (t, v) = lbfgs::minimize(&mut objective, s, &lo, &hi, opts.max_iter);
            if v.is_finite() && best.as_ref().is_none_or(|(_, b)| v < *b) {
                best = Some((t, v));
            }
        }
        Gp::new(x, y, Hyper(best?.0))
    }

    /// Conditions on standardised `y` at `x` with the given hyper-parameters.
    pub fn new(x: Vec<Vec<f64>>, y: Vec<f64>, hyper: Hyper) -> Option<Gp> {
        let n = x.len();
        let inv_len2: Vec<f64> = hyper.lengths().map(|l| 1.0 / (l * l)).collect();
        let (s2, n2) = (hyper.signal(), hyper.noise());
        let mut k = vec![0.0; n * n];
        for i in 0..n {
            k[i * n + i] = s2 + n2;
            for j in 0..i {
                let v = s2 * matern(scaled_sq_dist(&x[i], &x[j], &inv_len2).sqrt()).0;
                k[i * n + j] = v;
                k[j * n + i] = v;
            }
        }
        let chol = Cholesky::new(&k, n)?;
        let mut alpha = y.clone();
        chol.solve(&mut alpha);
        Some(Gp {
            x,
            y,
            hyper,
            inv_len2,
            chol,
            alpha,
        })
    }

    pub fn hyper(&self) -> &Hyper {
        &self.hyper
    }

    /// The same GP with one more observation (a Kriging-believer fantasy), hyper-parameters
    /// unchanged.
    pub fn with_point(&self, u: Vec<f64>, y: f64) -> Option<Gp> {
        let mut x = self.x.clone();
        let mut ys = self.y.clone();
        x.push(u);
        ys.push(y);
        Gp::new(x, ys, self.hyper.clone())
    }

    /// Posterior mean and variance of the latent function at `u` (standardised units).
    pub fn predict(&self, u: &[f64]) -> (f64, f64) {
        let s2 = self.hyper.signal();
        let mut ks: Vec<f64> = self
            .x
            .iter()
            .map(|xi| s2 * matern(scaled_sq_dist(xi, u, &self.inv_len2).sqrt()).0)
            .collect();
        let mean: f64 = ks.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        self.chol.solve_lower(&mut ks);
        let var = s2 - ks.iter().map(|v| v * v).sum::<f64>();
        (mean, var.max(1e-12 * s2))
    }

    /// `predict` with the gradients of the mean and the variance in `u`.
    pub fn predict_with_grad(&self, u: &[f64]) -> (f64, f64, Vec<f64>, Vec<f64>) {
        let s2 = self.hyper.signal();
        let d = u.len();
        let n = self.x.len();
        let mut ks = Vec::with_capacity(n);
        // ∂k_i/∂u_c = −σ² (5/3)(1 + √5 r) e^{−√5 r} (u_c − x_ic) / ℓ_c².
        let mut dk = vec![0.0; n * d];
        for (i, xi) in self.x.iter().enumerate() {
            let (m, g) = matern(scaled_sq_dist(xi, u, &self.inv_len2).sqrt());
            ks.push(s2 * m);
            for c in 0..d {
                dk[i * d + c] = -s2 * g * (u[c] - xi[c]) * self.inv_len2[c];
            }
        }
        let mean: f64 = ks.iter().zip(&self.alpha).map(|(a, b)| a * b).sum();
        let mut v = ks;
        self.chol.solve_lower(&mut v);
        let var = s2 - v.iter().map(|x| x * x).sum::<f64>();
        // ∂var = −2 (K⁻¹k)ᵀ ∂k.
        let mut w = v;
        self.chol.solve_upper(&mut w);
        let mut dmean = vec![0.0; d];
        let mut dvar = vec![0.0; d];
        for i in 0..n {
            for c in 0..d {
                dmean[c] += self.alpha[i] * dk[i * d + c];
                dvar[c] -= 2.0 * w[i] * dk[i * d + c];
            }
        }
        if var < 1e-12 * s2 {
            dvar.iter_mut().for_each(|x| *x = 0.0);
        }
        (mean, var.max(1e-12 * s2), dmean, dvar)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn data() -> (Vec<Vec<f64>>, Vec<f64>) {
        let x = vec![
            vec![0.1, 0.2],
            vec![0.4, 0.9],
            vec![0.7, 0.5],
            vec![0.95, 0.05],
            vec![0.3, 0.6],
        ];
        let y = vec![0.5, -1.0, 1.2, 0.3, -0.4];
        (x, y)
    }

    /// `tests/fixtures/search/make_gp_fixture.py` computed these with NumPy/SciPy from the same
    /// data and hyper-parameters.
    #[test]
    fn posterior_and_marginal_likelihood_match_numpy() {
        let (x, y) = data();
        let h = Hyper(vec![
            (0.3f64).ln(),
            (0.7f64).ln(),
            (1.5f64).ln(),
            (0.01f64).ln(),
        ]);
        let gp = Gp::new(x.clone(), y.clone(), h.clone()).unwrap();
        let (m, v) = gp.predict(&[0.5, 0.5]);
        let fixture = include_str!("../../tests/fixtures/search/gp_fixture.json");
        let f: serde_json::Value = serde_json::from_str(fixture).unwrap();
        let close = |a: f64, key: &str| {
            let b = f[key].as_f64().unwrap();
            assert!((a - b).abs() < 1e-10 * (1.0 + b.abs()), "{key}: {a} vs {b}");
        };
        close(m, "mean");
        close(v, "var");
        close(log_marginal(&x, &y, &h).unwrap().0, "lml");
    }

    #[test]
    fn marginal_likelihood_gradient_matches_finite_differences() {
        let (x, y) = data();
        let h = Hyper(vec![
            (0.3f64).ln(),
            (0.7f64).ln(),
            (1.5f64).ln(),
            (0.02f64).ln(),
        ]);
        let (_, g) = log_marginal(&x, &y, &h).unwrap();
        for (i, gi) in g.iter().enumerate() {
            let eps = 1e-5;
            let mut up = h.clone();
            up.0[i] += eps;
            let mut down = h.clone();
            down.0[i] -= eps;
            let fd = (log_marginal(&x, &y, &up).unwrap().0
                - log_marginal(&x, &y, &down).unwrap().0)
                / (2.0 * eps);
            assert!(
                (fd - gi).abs() < 1e-6 * (1.0 + fd.abs()),
                "θ{i}: {fd} vs {gi}"
            );
        }
    }

    #[test]
    fn prediction_gradients_match_finite_differences() {
        let (x, y) = data();
        let h = Hyper(vec![
            (0.3f64).ln(),
            (0.7f64).ln(),
            (1.5f64).ln(),
            (0.01f64).ln(),
        ]);
        let gp = Gp::new(x, y, h).unwrap();
        let u = [0.55, 0.35];
        let (_, _, dm, dv) = gp.predict_with_grad(&u);
        for c in 0..2 {
            let eps = 1e-6;
            let mut up = u;
            up[c] += eps;
            let mut down = u;
            down[c] -= eps;
            let ((m1, v1), (m0, v0)) = (gp.predict(&up), gp.predict(&down));
            let (fm, fv) = ((m1 - m0) / (2.0 * eps), (v1 - v0) / (2.0 * eps));
            assert!((fm - dm[c]).abs() < 1e-6, "mean {c}: {fm} vs {}", dm[c]);
            assert!((fv - dv[c]).abs() < 1e-6, "var {c}: {fv} vs {}", dv[c]);
        }
    }

    #[test]
    fn fitting_recovers_a_smooth_function_and_interpolates() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let x: Vec<Vec<f64>> = (0..25)
            .map(|_| vec![rng.gen::<f64>(), rng.gen::<f64>()])
            .collect();
        let f = |u: &[f64]| (3.0 * u[0]).sin() + 0.1 * u[1];
        let y: Vec<f64> = x.iter().map(|u| f(u)).collect();
        let s = Standardise::of(&y);
        let ys: Vec<f64> = y.iter().map(|v| s.apply(*v)).collect();
        let gp = Gp::fit(x, ys, FitOptions::default(), &mut rng).unwrap();
        // The second input matters ten times less: a longer length scale.
        let l: Vec<f64> = gp.hyper().lengths().collect();
        assert!(l[1] > 2.0 * l[0], "{l:?}");
        let (m, v) = gp.predict(&[0.5, 0.5]);
        assert!((m * s.scale + s.mean - f(&[0.5, 0.5])).abs() < 0.02, "{m}");
        assert!(v.sqrt() * s.scale < 0.05);
    }
}
