//! Big images in tiles: cover the image with overlapping tiles, detect in each, and merge. A
//! tile's objects that touch one of its inner edges (not the image's) are dropped when the
//! neighbouring tile holds them whole (they are narrower than the overlap); what is left is
//! merged by non-maximum suppression on the intersection over the *smaller* box (IoS), so a
//! copy cut by a tile edge, much smaller than the whole object, is still recognised as the
//! same object (IoU would see two different boxes). `detect_tiled` reads the image one band
//! of tile rows at a time, so a 4096 × 4096 FITS is extracted in memory bounded by the tile
//! size, not the image size. Why: docs/decisions.md, "Big images in tiles".

use super::catalog::{detect_image, CatalogError, LoadedImage};
use super::extract::{BackgroundParams, ExtractParams, Object};
use super::DetectError;
use crate::data::fits::{FitsReader, TanWcs};

/// One tile: the half-open pixel rectangle `x0..x1` × `y0..y1`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tile {
    pub x0: usize,
    pub y0: usize,
    pub x1: usize,
    pub y1: usize,
}

/// Tiles of at most `tile` × `tile` pixels covering a `width` × `height` image, neighbours
/// overlapping by at least `overlap` pixels; the last tile of a row or column is moved back to
/// end at the image's edge, so no tile is smaller than the image allows. Row-major order.
pub fn tiles(
    width: usize,
    height: usize,
    tile: usize,
    overlap: usize,
) -> Result<Vec<Tile>, DetectError> {
    if tile == 0 || overlap >= tile {
        return Err(DetectError::BadSetting {
            setting: "tile / overlap".into(),
            value: format!("{tile} / {overlap}"),
            expected: "a tile of at least 1 pixel and an overlap smaller than the tile".into(),
        });
    }
    let starts = |len: usize| -> Vec<(usize, usize)> {
        if len <= tile {
            return vec![(0, len)];
        }
        let step = tile - overlap;
        let mut out: Vec<(usize, usize)> = (0..)
            .map(|i| i * step)
            .take_while(|&s| s + tile < len)
            .map(|s| (s, s + tile))
            .collect();
        out.push((len - tile, len));
        out
    };
    let (xs, ys) = (starts(width), starts(height));
    Ok(ys
        .iter()
        .flat_map(|&(y0, y1)| xs.iter().map(move |&(x0, x1)| Tile { x0, y0, x1, y1 }))
        .collect())
}

/// A box in continuous pixel coordinates (`xmin < xmax`), with the score NMS ranks by.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScoredBox {
    pub xmin: f64,
    pub ymin: f64,
    pub xmax: f64,
    pub ymax: f64,
    pub score: f64,
}

impl ScoredBox {
    fn area(&self) -> f64 {
        (self.xmax - self.xmin).max(0.0) * (self.ymax - self.ymin).max(0.0)
    }

    /// Intersection over the smaller box's area (0 when either box is empty).
    pub fn ios(&self, other: &ScoredBox) -> f64 {
        let w = self.xmax.min(other.xmax) - self.xmin.max(other.xmin);
        let h = self.ymax.min(other.ymax) - self.ymin.max(other.ymin);
        let smaller = self.area().min(other.area());
        if w <= 0.0 || h <= 0.0 || smaller <= 0.0 {
            return 0.0;
        }
        w * h / smaller
    }
}

/// Greedy non-maximum suppression by IoS: boxes in decreasing score (ties: the earlier
/// first), each kept unless it overlaps a kept box by `min_ios` of the smaller one or more.
/// Returns the kept indices in that order.
pub fn merge_detections(boxes: &[ScoredBox], min_ios: f64) -> Vec<usize> {
    merge_across(boxes, &vec![0; boxes.len()], min_ios, true)
}

/// [`merge_detections`] where box `i` came from group `groups[i]` (its tile): with
/// `within` false, a box is suppressed only by a kept box of another group, so the
/// deblended neighbours one extraction separated stay separate.
pub fn merge_across(
    boxes: &[ScoredBox],
    groups: &[usize],
    min_ios: f64,
    within: bool,
) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score).then(a.cmp(&b)));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        let clash =
            |k: usize| (within || groups[k] != groups[i]) && boxes[k].ios(&boxes[i]) >= min_ios;
        if !kept.iter().any(|&k| clash(k)) {
            kept.push(i);
        }
    }
    kept
}

/// An image read a band of rows at a time.
pub trait Rows {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    /// Rows `y0..y1`, row-major.
    fn rows(&mut self, y0: usize, y1: usize) -> Result<Vec<f32>, CatalogError>;
}

impl Rows for FitsReader {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    fn rows(&mut self, y0: usize, y1: usize) -> Result<Vec<f32>, CatalogError> {
        self.read_rows(y0, y1).map_err(CatalogError::from)
    }
}

impl Rows for LoadedImage {
    fn width(&self) -> usize {
        self.width
    }
    fn height(&self) -> usize {
        self.height
    }
    fn rows(&mut self, y0: usize, y1: usize) -> Result<Vec<f32>, CatalogError> {
        Ok(self.data[y0 * self.width..y1 * self.width].to_vec())
    }
}

/// Tiling settings: the tile side, the overlap, and the IoS at which two copies are one.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TileParams {
    pub tile: usize,
    pub overlap: usize,
    pub min_ios: f64,
}

/// The merged objects of a tiled extraction (image coordinates), brightest first.
pub struct TiledCatalog {
    pub objects: Vec<Object>,
    pub wcs: Option<TanWcs>,
    pub tiles: usize,
}

/// Background and extraction tile by tile (each tile its own background mesh and global RMS),
/// reading one band of tile rows at a time; objects cut by an inner tile edge are left to the
/// neighbour that holds them whole, and the rest merged by IoS non-maximum suppression with
/// the isophotal flux as the score.
pub fn detect_tiled(
    image: &mut dyn Rows,
    wcs: Option<TanWcs>,
    back: &BackgroundParams,
    params: &ExtractParams,
    tiling: &TileParams,
) -> Result<TiledCatalog, CatalogError> {
    let (width, height) = (image.width(), image.height());
    let all = tiles(width, height, tiling.tile, tiling.overlap)?;
    let mut found: Vec<Object> = Vec::new();
    let mut groups: Vec<usize> = Vec::new();
    // Tiles come row-major: one band of rows is read per row of tiles, and freed after it.
    for band in all.chunk_by(|a, b| a.y0 == b.y0) {
        let rows = image.rows(band[0].y0, band[0].y1)?;
        for (t, index) in band.iter().zip(groups_of(&all, band)) {
            let data: Vec<f32> = rows
                .chunks_exact(width)
                .flat_map(|row| row[t.x0..t.x1].iter().copied())
                .collect();
            let tile_image = LoadedImage {
                width: t.x1 - t.x0,
                height: t.y1 - t.y0,
                data,
                wcs: None,
            };
            let catalog = detect_image(&tile_image, back, params)?;
            for o in catalog.objects {
                if !cut_by_inner_edge(&o, t, width, height, tiling.overlap) {
                    found.push(shifted(o, t.x0, t.y0));
                    groups.push(index);
                }
            }
        }
    }
    let boxes: Vec<ScoredBox> = found.iter().map(object_box).collect();
    // Only copies from different tiles are merged: within a tile the deblender has already
    // decided what is one object.
    let kept = merge_across(&boxes, &groups, tiling.min_ios, false);
    let mut objects: Vec<Object> = Vec::with_capacity(kept.len());
    let mut found: Vec<Option<Object>> = found.into_iter().map(Some).collect();
    for i in kept {
        if let Some(o) = found[i].take() {
            objects.push(o);
        }
    }
    Ok(TiledCatalog {
        objects,
        wcs,
        tiles: all.len(),
    })
}

/// Opens `path`'s `hdu` and runs [`detect_tiled`] on it, reading only the rows each band needs.
pub fn detect_tiled_fits(
    path: &std::path::Path,
    hdu: Option<usize>,
    back: &BackgroundParams,
    params: &ExtractParams,
    tiling: &TileParams,
) -> Result<TiledCatalog, CatalogError> {
    let mut reader = crate::data::fits::open_fits(path, hdu)?;
    let wcs = reader.wcs.clone();
    detect_tiled(&mut reader, wcs, back, params, tiling)
}

/// The indices in `all` of the tiles of `band` (a run of `all`).
fn groups_of(all: &[Tile], band: &[Tile]) -> std::ops::Range<usize> {
    let start = all.iter().position(|t| t == &band[0]).unwrap_or(0);
    start..start + band.len()
}

/// Whether `o` (tile coordinates) touches an inner edge of `t` and is narrower than the
/// overlap along that axis, so the neighbour across that edge holds all of it.
fn cut_by_inner_edge(o: &Object, t: &Tile, width: usize, height: usize, overlap: usize) -> bool {
    let (tw, th) = ((t.x1 - t.x0) as i32, (t.y1 - t.y0) as i32);
    let narrow_x = ((o.xmax - o.xmin + 1) as usize) < overlap;
    let narrow_y = ((o.ymax - o.ymin + 1) as usize) < overlap;
    let left = t.x0 > 0 && o.xmin == 0;
    let right = t.x1 < width && o.xmax == tw - 1;
    let top = t.y0 > 0 && o.ymin == 0;
    let bottom = t.y1 < height && o.ymax == th - 1;
    (narrow_x && (left || right)) || (narrow_y && (top || bottom))
}

fn shifted(mut o: Object, dx: usize, dy: usize) -> Object {
    let (dx, dy) = (dx as i32, dy as i32);
    o.x += f64::from(dx);
    o.y += f64::from(dy);
    o.xmin += dx;
    o.xmax += dx;
    o.ymin += dy;
    o.ymax += dy;
    o.xpeak += dx;
    o.ypeak += dy;
    o
}

/// An object's box: the outer edges of its first and last pixels.
fn object_box(o: &Object) -> ScoredBox {
    ScoredBox {
        xmin: f64::from(o.xmin) - 0.5,
        ymin: f64::from(o.ymin) - 0.5,
        xmax: f64::from(o.xmax) + 0.5,
        ymax: f64::from(o.ymax) + 0.5,
        score: f64::from(o.flux),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiles_cover_every_pixel_and_overlap_by_at_least_the_overlap() {
        for (w, h, tile, overlap) in [
            (4096, 4096, 1024, 128),
            (1000, 333, 256, 32),
            (100, 100, 100, 10),
            (50, 700, 64, 63),
            (7, 9, 3, 1),
        ] {
            let all = tiles(w, h, tile, overlap).unwrap();
            let mut hits = vec![0u32; w * h];
            for t in &all {
                assert!(t.x1 - t.x0 <= tile && t.y1 - t.y0 <= tile && t.x1 <= w && t.y1 <= h);
                for y in t.y0..t.y1 {
                    for x in t.x0..t.x1 {
                        hits[y * w + x] += 1;
                    }
                }
            }
            assert!(
                hits.iter().all(|&n| n >= 1),
                "{w}x{h} tile {tile}: a pixel missed"
            );
            // Neighbours along a row overlap by at least `overlap` (or span the whole image).
            let xs: Vec<&Tile> = all.iter().filter(|t| t.y0 == 0).collect();
            for pair in xs.windows(2) {
                assert!(pair[0].x1 - pair[1].x0 >= overlap, "{pair:?}");
            }
        }
        assert!(tiles(10, 10, 4, 4)
            .unwrap_err()
            .to_string()
            .contains("overlap"));
        assert!(tiles(10, 10, 0, 0).is_err());
    }

    #[test]
    fn merge_keeps_the_higher_scoring_copy_of_one_object_by_intersection_over_the_smaller() {
        let b = |xmin: f64, xmax: f64, score: f64| ScoredBox {
            xmin,
            ymin: 0.0,
            xmax,
            ymax: 10.0,
            score,
        };
        // The whole object, a copy cut at x = 14 (IoU 0.4, IoS 1), and a separate object.
        let boxes = [b(10.0, 14.0, 5.0), b(10.0, 20.0, 9.0), b(30.0, 40.0, 1.0)];
        assert_eq!(merge_detections(&boxes, 0.5), vec![1, 2]);
        assert_eq!(boxes[0].ios(&boxes[1]), 1.0);
        // Touching boxes do not intersect.
        assert_eq!(b(0.0, 5.0, 1.0).ios(&b(5.0, 9.0, 1.0)), 0.0);
        // Ties keep the earlier box.
        assert_eq!(
            merge_detections(&[b(0.0, 5.0, 1.0), b(0.0, 5.0, 1.0)], 0.5),
            vec![0]
        );
    }
}
