//! Matched filtering with a kernel and 8-connected labelling of the pixels above a threshold.

use super::measure::Pixel;

/// A filter kernel, row-major. SEP normalises it by the sum of its absolute values.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub width: usize,
    pub height: usize,
    pub values: Vec<f32>,
}

impl Kernel {
    /// SEP's and SExtractor's default: a 3×3 pyramid approximating a Gaussian of FWHM 2 px.
    pub fn sep_default() -> Kernel {
        Kernel {
            width: 3,
            height: 3,
            values: vec![1.0, 2.0, 1.0, 2.0, 4.0, 2.0, 1.0, 2.0, 1.0],
        }
    }

    fn normalised(&self) -> Vec<f32> {
        let sum: f32 = self.values.iter().map(|v| v.abs()).sum();
        self.values.iter().map(|v| v / sum).collect()
    }
}

/// Convolves the image with the normalised kernel; outside the image counts as zero. The sum
/// over the kernel runs in its row-major order in single precision, as SEP's `convolve`.
pub(crate) fn convolve(data: &[f32], width: usize, height: usize, kernel: &Kernel) -> Vec<f32> {
    let k = kernel.normalised();
    let (kw, kh) = (kernel.width as isize, kernel.height as isize);
    let (w, h) = (width as isize, height as isize);
    let mut out = vec![0f32; data.len()];
    for y in 0..h {
        let row = &mut out[(y * w) as usize..((y + 1) * w) as usize];
        for cy in 0..kh {
            let sy = y - kh / 2 + cy;
            if sy < 0 || sy >= h {
                continue;
            }
            let src = &data[(sy * w) as usize..((sy + 1) * w) as usize];
            for cx in 0..kw {
                let c = k[(cy * kw + cx) as usize];
                let d = cx - kw / 2;
                let (x0, x1) = ((-d).max(0), (w - d).min(w));
                if x0 >= x1 {
                    continue;
                }
                let dst = &mut row[x0 as usize..x1 as usize];
                let s = &src[(x0 + d) as usize..(x1 + d) as usize];
                for (o, v) in dst.iter_mut().zip(s) {
                    *o += c * v;
                }
            }
        }
    }
    out
}

const NEIGHBOURS: [(isize, isize); 8] = [
    (-1, -1),
    (0, -1),
    (1, -1),
    (-1, 0),
    (1, 0),
    (-1, 1),
    (0, 1),
    (1, 1),
];

/// The 8-connected groups of image pixels whose filtered value is above `thresh`, each with at
/// least `minarea` pixels, in the order SEP's line scan completes them (by last row, then by
/// the right end of that row).
pub(crate) fn label_image(
    data: &[f32],
    filtered: &[f32],
    width: usize,
    height: usize,
    thresh: f32,
    minarea: usize,
) -> Vec<Vec<Pixel>> {
    let mut seen = vec![false; data.len()];
    let mut groups = Vec::new();
    let mut stack = Vec::new();
    for start in 0..data.len() {
        if seen[start] || filtered[start] <= thresh {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let mut group = Vec::new();
        while let Some(i) = stack.pop() {
            let (x, y) = ((i % width) as isize, (i / width) as isize);
            group.push(Pixel {
                x: x as i32,
                y: y as i32,
                value: data[i],
                cd: filtered[i],
            });
            for (dx, dy) in NEIGHBOURS {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= width as isize || ny >= height as isize {
                    continue;
                }
                let j = ny as usize * width + nx as usize;
                if !seen[j] && filtered[j] > thresh {
                    seen[j] = true;
                    stack.push(j);
                }
            }
        }
        if group.len() >= minarea {
            groups.push(group);
        }
    }
    sort_by_completion(&mut groups);
    groups
}

/// The 8-connected groups among `pixels` (one object's) whose filtered value is above
/// `thresh`, with at least `minarea` pixels, in completion order.
pub(crate) fn label_pixels(pixels: &[Pixel], thresh: f32, minarea: usize) -> Vec<Vec<Pixel>> {
    let Some(first) = pixels.first() else {
        return Vec::new();
    };
    let (mut x0, mut y0, mut x1, mut y1) = (first.x, first.y, first.x, first.y);
    for p in pixels {
        x0 = x0.min(p.x);
        y0 = y0.min(p.y);
        x1 = x1.max(p.x);
        y1 = y1.max(p.y);
    }
    let (w, h) = ((x1 - x0 + 1) as usize, (y1 - y0 + 1) as usize);
    let mut grid = vec![u32::MAX; w * h];
    for (k, p) in pixels.iter().enumerate() {
        if p.cd > thresh {
            grid[(p.y - y0) as usize * w + (p.x - x0) as usize] = k as u32;
        }
    }
    let mut groups = Vec::new();
    let mut stack = Vec::new();
    for start in 0..grid.len() {
        if grid[start] == u32::MAX {
            continue;
        }
        stack.push((start, grid[start]));
        grid[start] = u32::MAX;
        let mut group = Vec::new();
        while let Some((i, k)) = stack.pop() {
            group.push(pixels[k as usize]);
            let (x, y) = ((i % w) as isize, (i / w) as isize);
            for (dx, dy) in NEIGHBOURS {
                let (nx, ny) = (x + dx, y + dy);
                if nx < 0 || ny < 0 || nx >= w as isize || ny >= h as isize {
                    continue;
                }
                let j = ny as usize * w + nx as usize;
                if grid[j] != u32::MAX {
                    stack.push((j, grid[j]));
                    grid[j] = u32::MAX;
                }
            }
        }
        if group.len() >= minarea {
            groups.push(group);
        }
    }
    sort_by_completion(&mut groups);
    groups
}

fn sort_by_completion(groups: &mut [Vec<Pixel>]) {
    groups.sort_by_cached_key(|g| {
        let ymax = g.iter().map(|p| p.y).max().unwrap_or(0);
        let xend = g
            .iter()
            .filter(|p| p.y == ymax)
            .map(|p| p.x)
            .max()
            .unwrap_or(0);
        (ymax, xend)
    });
}
