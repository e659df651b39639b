//! The little dense linear algebra a GP over ≤ a few hundred trials needs: Cholesky with
//! jitter, triangular solves, the inverse from the factor. Row-major `n × n` in a `Vec<f64>`.
//! Written here rather than taken from a crate: docs/decisions.md, "Search optimiser".

/// A lower-triangular Cholesky factor `L` with `L Lᵀ = A + jitter·I`.
#[derive(Clone, Debug)]
pub struct Cholesky {
    n: usize,
    l: Vec<f64>,
    /// What was added to the diagonal to make the factorisation succeed.
    pub jitter: f64,
}

impl Cholesky {
    /// Factors the symmetric `a` (`n × n`, row-major), adding 1e-10, 1e-9, … up to 1e-4 times
    /// the mean diagonal when `a` is not numerically positive definite.
    pub fn new(a: &[f64], n: usize) -> Option<Cholesky> {
        let mean_diag = (0..n).map(|i| a[i * n + i]).sum::<f64>() / n.max(1) as f64;
        let mut jitter = 0.0;
        for step in 0..8 {
            if let Some(l) = factor(a, n, jitter) {
                return Some(Cholesky { n, l, jitter });
            }
            jitter = mean_diag.abs().max(1e-300) * 10f64.powi(step - 10);
        }
        None
    }

    pub fn n(&self) -> usize {
        self.n
    }

    /// `log det(L Lᵀ)`.
    pub fn log_det(&self) -> f64 {
        2.0 * (0..self.n)
            .map(|i| self.l[i * self.n + i].ln())
            .sum::<f64>()
    }

    /// Solves `L x = b` in place.
    pub fn solve_lower(&self, b: &mut [f64]) {
        let n = self.n;
        for i in 0..n {
            let row = &self.l[i * n..i * n + i];
            let s: f64 = row.iter().zip(&b[..i]).map(|(a, x)| a * x).sum();
            b[i] = (b[i] - s) / self.l[i * n + i];
        }
    }

    /// Solves `Lᵀ x = b` in place.
    pub fn solve_upper(&self, b: &mut [f64]) {
        let n = self.n;
        for i in (0..n).rev() {
            let s: f64 = (i + 1..n).map(|k| self.l[k * n + i] * b[k]).sum();
            b[i] = (b[i] - s) / self.l[i * n + i];
        }
    }

    /// Solves `L Lᵀ x = b` in place.
    pub fn solve(&self, b: &mut [f64]) {
        self.solve_lower(b);
        self.solve_upper(b);
    }

    /// `(L Lᵀ)⁻¹`, row-major.
    pub fn inverse(&self) -> Vec<f64> {
        let n = self.n;
        // Columns of L⁻¹ by forward substitution, then (L⁻¹)ᵀ L⁻¹.
        let mut linv = vec![0.0; n * n];
        let mut e = vec![0.0; n];
        for j in 0..n {
            e.iter_mut().for_each(|x| *x = 0.0);
            e[j] = 1.0;
            self.solve_lower(&mut e);
            for i in 0..n {
                linv[i * n + j] = e[i];
            }
        }
        let mut inv = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                // L⁻¹ is lower triangular: rows below max(i, j) contribute.
                let s: f64 = (i..n).map(|k| linv[k * n + i] * linv[k * n + j]).sum();
                inv[i * n + j] = s;
                inv[j * n + i] = s;
            }
        }
        inv
    }
}

fn factor(a: &[f64], n: usize, jitter: f64) -> Option<Vec<f64>> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            if i == j {
                let d = a[i * n + i] + jitter - s;
                if !(d > 0.0 && d.is_finite()) {
                    return None;
                }
                l[i * n + i] = d.sqrt();
            } else {
                l[i * n + j] = (a[i * n + j] - s) / l[j * n + j];
            }
        }
    }
    Some(l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solves_and_inverts_a_small_system() {
        let a = [4.0, 2.0, 0.4, 2.0, 5.0, 1.0, 0.4, 1.0, 3.0];
        let c = Cholesky::new(&a, 3).unwrap();
        assert_eq!(c.jitter, 0.0);
        let mut x = vec![1.0, 2.0, 3.0];
        c.solve(&mut x);
        for i in 0..3 {
            let ax: f64 = (0..3).map(|j| a[i * 3 + j] * x[j]).sum();
            assert!((ax - (i + 1) as f64).abs() < 1e-12);
        }
        let inv = c.inverse();
        for i in 0..3 {
            for j in 0..3 {
                let p: f64 = (0..3).map(|k| a[i * 3 + k] * inv[k * 3 + j]).sum();
                assert!((p - f64::from(i == j)).abs() < 1e-12);
            }
        }
        // det = 4(15 - 1) - 2(6 - 0.4) + 0.4(2 - 2) = 44.8
        assert!((c.log_det() - 44.8f64.ln()).abs() < 1e-12);
    }

    #[test]
    fn a_singular_matrix_gets_jitter() {
        let a = [1.0, 1.0, 1.0, 1.0];
        let c = Cholesky::new(&a, 2).unwrap();
        assert!(c.jitter > 0.0 && c.jitter < 1e-3);
    }
}
