//! Shape operators: nearest-neighbour upsampling. Flatten and reshape are free in NHWC: a
//! per-sample reshape keeps the bytes in place, so they are copies in the network and need
//! no kernel. Joins of several tensors (add, concat) live in `merge`.

use super::super::real::Real;

/// [n, h, w, c] → [n, h·f, w·f, c], each pixel repeated f×f times.
pub fn upsample_forward<T: Real>(h: usize, w: usize, c: usize, f: usize, x: &[T], y: &mut [T]) {
    let (oh, ow) = (h * f, w * f);
    for (xs, ys) in x.chunks(h * w * c).zip(y.chunks_mut(oh * ow * c)) {
        for oy in 0..oh {
            for ox in 0..ow {
                let src = ((oy / f) * w + ox / f) * c;
                ys[(oy * ow + ox) * c..][..c].copy_from_slice(&xs[src..src + c]);
            }
        }
    }
}

pub fn upsample_backward<T: Real>(h: usize, w: usize, c: usize, f: usize, dy: &[T], dx: &mut [T]) {
    let (oh, ow) = (h * f, w * f);
    for (dxs, dys) in dx.chunks_mut(h * w * c).zip(dy.chunks(oh * ow * c)) {
        dxs.fill(T::ZERO);
        for oy in 0..oh {
            for ox in 0..ow {
                let dst = ((oy / f) * w + ox / f) * c;
                for (a, b) in dxs[dst..dst + c]
                    .iter_mut()
                    .zip(&dys[(oy * ow + ox) * c..][..c])
                {
                    *a += *b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::check::{assert_gradient, dot, values};

    use super::*;

    #[test]
    fn upsample_gradient_matches_finite_differences() {
        let (h, w, c, f) = (3, 2, 2, 2);
        let x = values(2 * h * w * c, 6);
        let r3 = values(2 * h * w * c * f * f, 7);
        let mut dx = vec![0.0; x.len()];
        upsample_backward(h, w, c, f, &r3, &mut dx);
        assert_gradient("upsample", &x, &dx, |x| {
            let mut y = vec![0.0; r3.len()];
            upsample_forward(h, w, c, f, x, &mut y);
            dot(&y, &r3)
        });
    }
}
