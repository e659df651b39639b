//! Shape operators: element-wise add (residual joins), concatenation along channels, and
//! nearest-neighbour upsampling. Flatten and reshape are free in NHWC: a per-sample reshape
//! keeps the bytes in place, so they are copies in the network and need no kernel.

use super::super::real::Real;

/// y = a + b; the gradient reaches both inputs unchanged.
pub fn add_forward<T: Real>(a: &[T], b: &[T], y: &mut [T]) {
    for ((y, a), b) in y.iter_mut().zip(a).zip(b) {
        *y = *a + *b;
    }
}

pub fn add_backward<T: Real>(dy: &[T], da: &mut [T], db: &mut [T]) {
    da.copy_from_slice(dy);
    db.copy_from_slice(dy);
}

/// Concatenates rows of `ca` and `cb` channels into rows of `ca + cb`.
pub fn concat_forward<T: Real>(ca: usize, cb: usize, a: &[T], b: &[T], y: &mut [T]) {
    for ((yr, ar), br) in y.chunks_mut(ca + cb).zip(a.chunks(ca)).zip(b.chunks(cb)) {
        yr[..ca].copy_from_slice(ar);
        yr[ca..].copy_from_slice(br);
    }
}

pub fn concat_backward<T: Real>(ca: usize, cb: usize, dy: &[T], da: &mut [T], db: &mut [T]) {
    for ((dr, ar), br) in dy
        .chunks(ca + cb)
        .zip(da.chunks_mut(ca))
        .zip(db.chunks_mut(cb))
    {
        ar.copy_from_slice(&dr[..ca]);
        br.copy_from_slice(&dr[ca..]);
    }
}

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
    fn shape_gradients_match_finite_differences() {
        let a = values(12, 1);
        let b = values(12, 2);
        let r = values(12, 3);
        let (mut da, mut db) = (vec![0.0; 12], vec![0.0; 12]);
        add_backward(&r, &mut da, &mut db);
        let add = |a: &[f64], b: &[f64]| {
            let mut y = vec![0.0; 12];
            add_forward(a, b, &mut y);
            dot(&y, &r)
        };
        assert_gradient("add a", &a, &da, |a| add(a, &b));
        assert_gradient("add b", &b, &db, |b| add(&a, b));

        let (ca, cb) = (3, 2);
        let b2 = values(8, 4);
        let r2 = values(20, 5);
        let (mut da, mut db) = (vec![0.0; 12], vec![0.0; 8]);
        concat_backward(ca, cb, &r2, &mut da, &mut db);
        let cat = |a: &[f64], b: &[f64]| {
            let mut y = vec![0.0; 20];
            concat_forward(ca, cb, a, b, &mut y);
            dot(&y, &r2)
        };
        assert_gradient("concat a", &a, &da, |a| cat(a, &b2));
        assert_gradient("concat b", &b2, &db, |b| cat(&a, b));

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
