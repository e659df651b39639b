//! The contact sheet `gpl data preview` draws: one row of examples per class, the class id in a
//! small bitmap font in the left margin.

use crate::data::ImageSet;

/// One row per class: the class id drawn in a left margin, then the first `per_class`
/// examples of that class.
pub fn contact_sheet(set: &ImageSet, per_class: usize) -> image::RgbImage {
    let (h, w, gap, margin) = (set.height as u32, set.width as u32, 2u32, 16u32);
    let rows = set.class_names.len() as u32;
    let mut sheet = image::RgbImage::from_pixel(
        margin + per_class as u32 * (w + gap),
        rows * (h + gap),
        image::Rgb([40, 40, 40]),
    );
    let mut filled = vec![0usize; set.class_names.len()];
    for i in 0..set.len() {
        let c = set.labels[i] as usize;
        if filled[c] >= per_class {
            continue;
        }
        let (x0, y0) = (margin + filled[c] as u32 * (w + gap), c as u32 * (h + gap));
        let img = set.image(i);
        for y in 0..h {
            for x in 0..w {
                let p = ((y * w + x) as usize) * set.channels;
                let rgb = if set.channels >= 3 {
                    [img[p], img[p + 1], img[p + 2]]
                } else {
                    [img[p]; 3]
                };
                sheet.put_pixel(x0 + x, y0 + y, image::Rgb(rgb));
            }
        }
        filled[c] += 1;
    }
    for c in 0..rows {
        draw_number(&mut sheet, c as usize, 2, c * (h + gap) + h / 2 - 5);
    }
    sheet
}

/// Draws a small number with a 3×5 bitmap font at twice the size.
fn draw_number(img: &mut image::RgbImage, n: usize, x0: u32, y0: u32) {
    const DIGITS: [[u8; 5]; 10] = [
        [7, 5, 5, 5, 7],
        [2, 6, 2, 2, 7],
        [7, 1, 7, 4, 7],
        [7, 1, 7, 1, 7],
        [5, 5, 7, 1, 1],
        [7, 4, 7, 1, 7],
        [7, 4, 7, 5, 7],
        [7, 1, 1, 1, 1],
        [7, 5, 7, 5, 7],
        [7, 5, 7, 1, 7],
    ];
    for (k, ch) in n.to_string().bytes().enumerate() {
        let glyph = DIGITS[(ch - b'0') as usize];
        for (row, bits) in glyph.iter().enumerate() {
            for col in 0..3 {
                if bits & (4 >> col) != 0 {
                    for (dx, dy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
                        let (x, y) = (x0 + k as u32 * 8 + col * 2 + dx, y0 + row as u32 * 2 + dy);
                        if x < img.width() && y < img.height() {
                            img.put_pixel(x, y, image::Rgb([230, 230, 230]));
                        }
                    }
                }
            }
        }
    }
}
