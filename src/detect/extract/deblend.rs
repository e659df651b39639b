//! Multi-threshold deblending (SExtractor's, as SEP's `deblend.c` does it): the detection is
//! cut at `nthresh` levels spaced exponentially between its threshold and its peak; a branch of
//! that tree becomes an object of its own when at least two of its sub-branches each hold more
//! than `cont` of the whole detection's flux above their level; the pixels below the cores go
//! to the cores by drawing from their Gaussian-profile probabilities.

use super::label::label_pixels;
use super::measure::{flags, Obj};

/// glibc's `rand_r`, which SEP draws from with seed 1 at every extraction: the same generator
/// keeps our draws as close to SEP's as different pixel orders allow.
pub(crate) struct RandR(u32);

impl RandR {
    pub const MAX: u32 = 2_147_483_647;

    pub fn new(seed: u32) -> RandR {
        RandR(seed)
    }

    pub fn next(&mut self) -> u32 {
        let mut next = self.0;
        next = next.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let mut result = (next / 65536) % 2048;
        next = next.wrapping_mul(1_103_515_245).wrapping_add(12345);
        result = (result << 10) ^ ((next / 65536) % 1024);
        next = next.wrapping_mul(1_103_515_245).wrapping_add(12345);
        result = (result << 10) ^ ((next / 65536) % 1024);
        self.0 = next;
        result
    }
}

struct Node {
    obj: Obj,
    sons: Vec<usize>,
    ok: bool,
}

/// Splits one detection into its deblended objects (the detection itself when it does not
/// split), measured as SEP measures them before its final pass.
pub(crate) fn deblend(
    root: Obj,
    nthresh: usize,
    cont: f64,
    minarea: usize,
    size: (i32, i32),
    rng: &mut RandR,
) -> Vec<Obj> {
    let thresh0 = root.thresh;
    let value0 = root.fdflux as f64 * cont;
    let child_minarea = minarea.min(3);
    let mut levels: Vec<Vec<Node>> = vec![vec![Node {
        obj: root,
        sons: Vec::new(),
        ok: true,
    }]];
    let peak = levels[0][0].obj.fdpeak;
    for k in 1..nthresh {
        let t = if peak > 0.0 {
            (thresh0 as f64 * (peak as f64 / thresh0 as f64).powf(k as f64 / nthresh as f64)) as f32
        } else {
            thresh0
        };
        let mut next = Vec::new();
        for parent in levels[k - 1].iter_mut() {
            for group in label_pixels(&parent.obj.pixels, t, child_minarea) {
                parent.sons.push(next.len());
                next.push(Node {
                    obj: Obj::new(group, t, size.0, size.1),
                    sons: Vec::new(),
                    ok: true,
                });
            }
        }
        levels.push(next);
    }
    // Top-down: a node whose sons include two significant ones splits there.
    let mut cores: Vec<(usize, usize)> = Vec::new();
    for k in (0..levels.len().saturating_sub(1)).rev() {
        let (upper, lower) = levels.split_at_mut(k + 1);
        let sons_level = &mut lower[0];
        for node in upper[k].iter_mut() {
            let significant = |o: &Obj| (o.fdflux - o.thresh * o.fdnpix as f32) as f64 > value0;
            let mut m = 0;
            for &j in &node.sons {
                if significant(&sons_level[j].obj) {
                    m += 1;
                }
                node.ok &= sons_level[j].ok;
            }
            if m > 1 {
                for &j in &node.sons {
                    if sons_level[j].ok && significant(&sons_level[j].obj) {
                        sons_level[j].obj.flag |= flags::MERGED;
                        cores.push((k + 1, j));
                    }
                }
                node.ok = false;
            }
        }
    }
    if levels[0][0].ok {
        return vec![levels.swap_remove(0).swap_remove(0).obj];
    }
    let cores: Vec<Obj> = cores
        .into_iter()
        .map(|(k, j)| std::mem::take(&mut levels[k][j].obj))
        .collect();
    let root = std::mem::take(&mut levels[0][0].obj);
    gather_up(root, cores, thresh0, rng)
}

/// Gives every pixel of the detection outside the cores to one core, drawn with probability
/// proportional to each core's Gaussian profile at the pixel.
fn gather_up(root: Obj, mut cores: Vec<Obj>, thresh0: f32, rng: &mut RandR) -> Vec<Obj> {
    let mut amp = Vec::with_capacity(cores.len());
    for core in cores.iter_mut() {
        core.analyse(false);
        core.thresh = thresh0;
        let dist = core.fdnpix as f32 / (2.0 * std::f32::consts::PI * core.abcor * core.a * core.b);
        let a = if dist < 70.0 {
            core.thresh * dist.exp()
        } else {
            4.0 * core.fdpeak
        };
        amp.push(a.min(4.0 * core.fdpeak));
    }
    let (xs, ys) = (root.xmin, root.ymin);
    let bw = (root.xmax - xs + 1) as usize;
    let mut taken = vec![false; bw * (root.ymax - ys + 1) as usize];
    for core in &cores {
        for p in &core.pixels {
            taken[(p.y - ys) as usize * bw + (p.x - xs) as usize] = true;
        }
    }
    let mut extra: Vec<Vec<super::measure::Pixel>> = vec![Vec::new(); cores.len()];
    let mut p = vec![0f32; cores.len()];
    for px in &root.pixels {
        if taken[(px.y - ys) as usize * bw + (px.x - xs) as usize] {
            continue;
        }
        let mut distmin = 1e31f32;
        let mut closest = 0;
        let mut acc = 0f32;
        for (i, core) in cores.iter().enumerate() {
            let dx = (px.x as f64 - core.mx) as f32;
            let dy = (px.y as f64 - core.my) as f32;
            let dist =
                0.5 * (core.cxx * dx * dx + core.cyy * dy * dy + core.cxy * dx * dy) / core.abcor;
            acc += if dist < 70.0 {
                amp[i] * (-dist).exp()
            } else {
                0.0
            };
            p[i] = acc;
            if dist < distmin {
                distmin = dist;
                closest = i;
            }
        }
        let chosen = if acc > 1e-31 {
            let drand = acc * rng.next() as f32 / RandR::MAX as f32;
            p.iter().position(|&v| v >= drand).unwrap_or(closest)
        } else {
            closest
        };
        extra[chosen].push(*px);
    }
    for (core, more) in cores.iter_mut().zip(extra) {
        core.pixels.extend(more);
    }
    cores
}

#[cfg(test)]
mod tests {
    use super::RandR;

    /// glibc's own `rand_r` from seed 1 (read through Python's ctypes).
    #[test]
    fn rand_r_is_glibcs() {
        let mut r = RandR::new(1);
        let drawn: Vec<u32> = (0..5).map(|_| r.next()).collect();
        assert_eq!(
            drawn,
            [476707713, 1186278907, 505671508, 2137716191, 936145377]
        );
    }
}
