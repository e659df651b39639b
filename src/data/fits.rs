//! FITS images (the astronomers' format), read by a small reader of our own: the primary HDU
//! or an image extension holding a 2-D image (BITPIX 8, 16, 32, 64, −32, −64; big-endian;
//! BSCALE/BZERO applied; BLANK and NaN pixels masked as NaN), and the celestial TAN WCS
//! (CRPIX, CRVAL, CD or PC·CDELT or CDELT with CROTA2) with pixel → (RA, Dec).
//! Why our own reader and not cfitsio: docs/decisions.md, "FITS without cfitsio".

use std::path::{Path, PathBuf};

const BLOCK: usize = 2880;
const CARD: usize = 80;

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum FitsError {
    #[error("{path}: cannot read: {detail}")]
    #[diagnostic(code(gpl::fits::io))]
    Io { path: PathBuf, detail: String },

    #[error("{path}: not a FITS file (it does not start with `SIMPLE  =                    T`)")]
    #[diagnostic(
        code(gpl::fits::not_fits),
        help("FITS files start with a header of 80-character cards; check the path")
    )]
    NotFits { path: PathBuf },

    #[error("{path}: HDU {hdu}: header card {card} `{text}`: {detail}")]
    #[diagnostic(code(gpl::fits::bad_card))]
    BadCard {
        path: PathBuf,
        hdu: usize,
        card: usize,
        text: String,
        detail: String,
    },

    #[error("{path}: HDU {hdu}: {detail}")]
    #[diagnostic(code(gpl::fits::bad_header))]
    BadHeader {
        path: PathBuf,
        hdu: usize,
        detail: String,
    },

    #[error("{path}: truncated: HDU {hdu} needs {needed} bytes of data, the file has {found}")]
    #[diagnostic(
        code(gpl::fits::truncated),
        help("the download or copy was probably interrupted")
    )]
    Truncated {
        path: PathBuf,
        hdu: usize,
        needed: usize,
        found: usize,
    },

    #[error("{path}: {detail}")]
    #[diagnostic(
        code(gpl::fits::no_image),
        help("name the HDU that holds a 2-D image (0 is the primary)")
    )]
    NoImage { path: PathBuf, detail: String },
}

/// A header card's keyword and value text (strings without their quotes).
#[derive(Clone, Debug, PartialEq)]
pub struct Card {
    pub keyword: String,
    pub value: Option<String>,
}

/// A 2-D image read from a FITS file.
#[derive(Clone, Debug)]
pub struct FitsImage {
    pub path: PathBuf,
    /// Which HDU (0 = primary).
    pub hdu: usize,
    pub width: usize,
    pub height: usize,
    /// Physical values (BSCALE·raw + BZERO), row-major from FITS row 1 (y = 0); masked
    /// pixels are NaN.
    pub data: Vec<f32>,
    pub header: Vec<Card>,
    /// The celestial WCS, when the header has a TAN one.
    pub wcs: Option<TanWcs>,
}

/// The gnomonic (TAN) projection of a FITS header: intermediate world coordinates
/// CD·(pixel − CRPIX), deprojected about (CRVAL1, CRVAL2) with LONPOLE (default 180°).
#[derive(Clone, Debug, PartialEq)]
pub struct TanWcs {
    pub crpix: [f64; 2],
    pub crval: [f64; 2],
    pub cd: [[f64; 2]; 2],
    pub lonpole: f64,
}

impl TanWcs {
    /// (RA, Dec) in degrees of the 0-based pixel (x, y) (FITS pixel x + 1, y + 1).
    pub fn pixel_to_world(&self, x: f64, y: f64) -> (f64, f64) {
        let (px, py) = (x + 1.0 - self.crpix[0], y + 1.0 - self.crpix[1]);
        let ix = self.cd[0][0] * px + self.cd[0][1] * py;
        let iy = self.cd[1][0] * px + self.cd[1][1] * py;
        let r = (ix * ix + iy * iy).sqrt();
        let phi = if r == 0.0 { 0.0 } else { ix.atan2(-iy) };
        let theta = (180.0 / std::f64::consts::PI).atan2(r);
        let (a0, d0) = (self.crval[0].to_radians(), self.crval[1].to_radians());
        let dphi = phi - self.lonpole.to_radians();
        let dec = (theta.sin() * d0.sin() + theta.cos() * d0.cos() * dphi.cos())
            .clamp(-1.0, 1.0)
            .asin();
        let ra = a0
            + (-theta.cos() * dphi.sin())
                .atan2(theta.sin() * d0.cos() - theta.cos() * d0.sin() * dphi.cos());
        (ra.to_degrees().rem_euclid(360.0), dec.to_degrees())
    }
}

struct Header {
    cards: Vec<Card>,
    /// Bytes the header takes, padding included.
    len: usize,
}

/// Reads the 2-D image of `hdu`, or of the first HDU that holds one when `hdu` is `None`.
pub fn read_fits(path: &Path, hdu: Option<usize>) -> Result<FitsImage, FitsError> {
    let mut reader = open_fits(path, hdu)?;
    let data = reader.read_rows(0, reader.height)?;
    Ok(FitsImage {
        path: path.into(),
        hdu: reader.hdu,
        width: reader.width,
        height: reader.height,
        data,
        wcs: reader.wcs.take(),
        header: std::mem::take(&mut reader.header),
    })
}

/// A 2-D image HDU whose header has been read and whose data has not: rows are read on
/// demand, so a caller can walk a large image in bands (`detect::tile`) in bounded memory.
#[derive(Debug)]
pub struct FitsReader {
    file: std::fs::File,
    pub path: PathBuf,
    pub hdu: usize,
    pub width: usize,
    pub height: usize,
    pub header: Vec<Card>,
    pub wcs: Option<TanWcs>,
    bitpix: i64,
    bscale: f64,
    bzero: f64,
    blank: Option<i64>,
    /// Byte offset of the first pixel in the file.
    data_start: u64,
}

/// Opens the 2-D image of `hdu` (or the first HDU holding one) and reads its header only;
/// every header on the way is read by seeking past the data before it. The file must hold
/// all of the image's data.
pub fn open_fits(path: &Path, hdu: Option<usize>) -> Result<FitsReader, FitsError> {
    use std::io::{Seek, SeekFrom};
    let io = |e: std::io::Error| FitsError::Io {
        path: path.into(),
        detail: e.to_string(),
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len() as u128;
    let mut offset: u128 = 0;
    let mut index = 0;
    while offset < file_len {
        file.seek(SeekFrom::Start(offset as u64)).map_err(io)?;
        let bytes = read_header_blocks(&mut file).map_err(io)?;
        if index == 0 && (!bytes.starts_with(b"SIMPLE  =") || bytes.len() < CARD) {
            return Err(FitsError::NotFits { path: path.into() });
        }
        let header = parse_header(path, index, &bytes)?;
        let get = |k: &str| header.cards.iter().find(|c| c.keyword == k);
        let int = |k: &str| -> Result<i64, FitsError> { card_int(path, index, &header, k) };
        if index == 0 && get("SIMPLE").and_then(|c| c.value.as_deref()) != Some("T") {
            return Err(FitsError::NotFits { path: path.into() });
        }
        let bitpix = int("BITPIX")?;
        if ![8, 16, 32, 64, -32, -64].contains(&bitpix) {
            return Err(bad_card(
                path,
                index,
                &header,
                "BITPIX",
                "must be 8, 16, 32, 64, -32 or -64",
            ));
        }
        let naxis = int("NAXIS")?;
        if !(0..=999).contains(&naxis) {
            return Err(bad_card(
                path,
                index,
                &header,
                "NAXIS",
                "must be between 0 and 999",
            ));
        }
        let mut axes = Vec::new();
        for n in 1..=naxis {
            let v = int(&format!("NAXIS{n}"))?;
            if v < 0 {
                return Err(bad_card(
                    path,
                    index,
                    &header,
                    &format!("NAXIS{n}"),
                    "must not be negative",
                ));
            }
            axes.push(v as usize);
        }
        let pcount = if get("PCOUNT").is_some() {
            int("PCOUNT")?
        } else {
            0
        };
        let gcount = if get("GCOUNT").is_some() {
            int("GCOUNT")?
        } else {
            1
        };
        // Sizes in u128 with checked products: a header may claim anything.
        let overflow = || FitsError::BadHeader {
            path: path.into(),
            hdu: index,
            detail: format!("the data size NAXISn = {axes:?} overflows"),
        };
        let elements: u128 = if axes.is_empty() {
            0
        } else {
            axes.iter()
                .try_fold(1u128, |acc, &a| acc.checked_mul(a as u128))
                .ok_or_else(overflow)?
        };
        let bytes_per = bitpix.unsigned_abs() as u128 / 8;
        let data_len = (pcount.max(0) as u128 + elements)
            .checked_mul(gcount.max(0) as u128)
            .and_then(|v| v.checked_mul(bytes_per))
            .ok_or_else(overflow)?;
        let start = offset + header.len as u128;
        let is_image = index == 0
            || get("XTENSION")
                .and_then(|c| c.value.as_deref())
                .map(str::trim)
                == Some("IMAGE");
        let two_d = axes.len() >= 2 && axes[2..].iter().all(|&a| a == 1) && elements > 0;
        if is_image && two_d && hdu.is_none_or(|h| h == index) {
            let needed = elements * bytes_per;
            let found = file_len.saturating_sub(start);
            if found < needed {
                return Err(FitsError::Truncated {
                    path: path.into(),
                    hdu: index,
                    needed: needed as usize,
                    found: found as usize,
                });
            }
            let cards = header.cards;
            let wcs = read_wcs(path, index, &cards)?;
            return Ok(FitsReader {
                file,
                path: path.into(),
                hdu: index,
                width: axes[0],
                height: axes[1],
                bitpix,
                bscale: card_float(&cards, "BSCALE").unwrap_or(1.0),
                bzero: card_float(&cards, "BZERO").unwrap_or(0.0),
                blank: card_float(&cards, "BLANK").map(|b| b as i64),
                header: cards,
                wcs,
                data_start: start as u64,
            });
        }
        if hdu == Some(index) {
            return Err(FitsError::NoImage {
                path: path.into(),
                detail: format!("HDU {index} holds no 2-D image (NAXIS = {naxis}, axes {axes:?})"),
            });
        }
        let padded = data_len.div_ceil(BLOCK as u128) * BLOCK as u128;
        offset = (start + padded).min(file_len);
        index += 1;
    }
    Err(FitsError::NoImage {
        path: path.into(),
        detail: match hdu {
            Some(h) => format!("no HDU {h}: the file has {index} HDU(s)"),
            None => format!("none of its {index} HDU(s) holds a 2-D image"),
        },
    })
}

/// Header blocks from the reader's position up to and including the one holding the END
/// card, or to the end of the file (then `parse_header` reports the missing END).
fn read_header_blocks(file: &mut std::fs::File) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut bytes = Vec::new();
    loop {
        let mut block = Vec::with_capacity(BLOCK);
        let got = file.by_ref().take(BLOCK as u64).read_to_end(&mut block)?;
        let done = got < BLOCK
            || block
                .chunks(CARD)
                .any(|c| c.starts_with(b"END     ") || c == b"END");
        bytes.extend_from_slice(&block);
        if done {
            return Ok(bytes);
        }
    }
}

impl FitsReader {
    /// Rows `y0..y1` (0-based, FITS row y + 1) as physical values, row-major; masked pixels
    /// are NaN.
    pub fn read_rows(&mut self, y0: usize, y1: usize) -> Result<Vec<f32>, FitsError> {
        use std::io::{Read, Seek, SeekFrom};
        assert!(
            y0 <= y1 && y1 <= self.height,
            "rows {y0}..{y1} of {}",
            self.height
        );
        let bytes_per = self.bitpix.unsigned_abs() as usize / 8;
        let row = self.width * bytes_per;
        let mut bytes = vec![0u8; (y1 - y0) * row];
        let path = &self.path;
        let io = |e: std::io::Error| FitsError::Io {
            path: path.clone(),
            detail: e.to_string(),
        };
        self.file
            .seek(SeekFrom::Start(self.data_start + (y0 * row) as u64))
            .map_err(io)?;
        self.file.read_exact(&mut bytes).map_err(io)?;
        Ok(self.decode(&bytes))
    }

    fn decode(&self, bytes: &[u8]) -> Vec<f32> {
        let (bscale, bzero, blank) = (self.bscale, self.bzero, self.blank);
        let scale = |raw: i64| -> f32 {
            if Some(raw) == blank {
                f32::NAN
            } else {
                (raw as f64 * bscale + bzero) as f32
            }
        };
        match self.bitpix {
            8 => bytes.iter().map(|&b| scale(b as i64)).collect(),
            16 => bytes
                .chunks_exact(2)
                .map(|c| scale(i16::from_be_bytes([c[0], c[1]]) as i64))
                .collect(),
            32 => bytes
                .chunks_exact(4)
                .map(|c| scale(i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as i64))
                .collect(),
            64 => bytes
                .chunks_exact(8)
                .map(|c| scale(i64::from_be_bytes(c.try_into().expect("chunks of 8"))))
                .collect(),
            -32 => bytes
                .chunks_exact(4)
                .map(|c| {
                    let v = f32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64;
                    (v * bscale + bzero) as f32
                })
                .map(|v| if v.is_finite() { v } else { f32::NAN })
                .collect(),
            -64 => bytes
                .chunks_exact(8)
                .map(|c| {
                    let v = f64::from_be_bytes(c.try_into().expect("chunks of 8"));
                    (v * bscale + bzero) as f32
                })
                .map(|v| if v.is_finite() { v } else { f32::NAN })
                .collect(),
            _ => unreachable!("BITPIX checked by open_fits"),
        }
    }
}

/// Writes a BITPIX −32 primary image (row-major from y = 0; NaN stays NaN), atomically: test
/// skies and tiling checks write their own images with it.
pub fn write_fits_f32(
    path: &Path,
    width: usize,
    height: usize,
    mut rows: impl FnMut(usize) -> Vec<f32>,
) -> std::io::Result<()> {
    crate::fsutil::write_atomic_with(path, |out| {
        let mut header = String::new();
        for card in [
            "SIMPLE  =                    T".to_string(),
            "BITPIX  =                  -32".to_string(),
            "NAXIS   =                    2".to_string(),
            format!("NAXIS1  = {width:>20}"),
            format!("NAXIS2  = {height:>20}"),
            "END".to_string(),
        ] {
            header.push_str(&format!("{card:<80}"));
        }
        let padded = header.len().div_ceil(BLOCK) * BLOCK;
        out.write_all(format!("{header:<padded$}").as_bytes())?;
        for y in 0..height {
            let row = rows(y);
            if row.len() != width {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("row {y} has {} values, not {width}", row.len()),
                ));
            }
            for v in row {
                out.write_all(&v.to_be_bytes())?;
            }
        }
        let data = width * height * 4;
        out.write_all(&vec![0u8; data.div_ceil(BLOCK) * BLOCK - data])
    })
}

fn bad_card(path: &Path, hdu: usize, header: &Header, keyword: &str, detail: &str) -> FitsError {
    let (card, text) = header
        .cards
        .iter()
        .position(|c| c.keyword == keyword)
        .map(|i| {
            let c = &header.cards[i];
            (
                i + 1,
                format!("{} = {}", c.keyword, c.value.clone().unwrap_or_default()),
            )
        })
        .unwrap_or((0, keyword.to_string()));
    FitsError::BadCard {
        path: path.into(),
        hdu,
        card,
        text,
        detail: detail.into(),
    }
}

fn card_int(path: &Path, hdu: usize, header: &Header, keyword: &str) -> Result<i64, FitsError> {
    let card = header
        .cards
        .iter()
        .find(|c| c.keyword == keyword)
        .ok_or_else(|| FitsError::BadHeader {
            path: path.into(),
            hdu,
            detail: format!("the mandatory keyword {keyword} is missing"),
        })?;
    card.value
        .as_deref()
        .and_then(|v| v.trim().parse::<i64>().ok())
        .ok_or_else(|| bad_card(path, hdu, header, keyword, "expected an integer"))
}

fn card_float(header: &[Card], keyword: &str) -> Option<f64> {
    header
        .iter()
        .find(|c| c.keyword == keyword)
        .and_then(|c| c.value.as_deref())
        .and_then(|v| v.trim().replace(['D', 'd'], "E").parse::<f64>().ok())
}

fn card_str<'a>(header: &'a [Card], keyword: &str) -> Option<&'a str> {
    header
        .iter()
        .find(|c| c.keyword == keyword)
        .and_then(|c| c.value.as_deref())
        .map(str::trim)
}

fn parse_header(path: &Path, hdu: usize, bytes: &[u8]) -> Result<Header, FitsError> {
    let mut cards = Vec::new();
    for (i, raw) in bytes.chunks(CARD).enumerate() {
        if raw.len() < CARD {
            break;
        }
        let text = std::str::from_utf8(raw)
            .ok()
            .filter(|t| t.bytes().all(|b| (0x20..=0x7e).contains(&b)))
            .ok_or_else(|| FitsError::BadCard {
                path: path.into(),
                hdu,
                card: i + 1,
                text: String::from_utf8_lossy(raw).trim_end().to_string(),
                detail: "a header card must be printable ASCII".into(),
            })?;
        let keyword = text[..8].trim_end().to_string();
        if keyword == "END" {
            let len = (i + 1) * CARD;
            return Ok(Header {
                cards,
                len: len.div_ceil(BLOCK) * BLOCK,
            });
        }
        let value = if &text[8..10] == "= " {
            Some(parse_value(&text[10..]).ok_or_else(|| FitsError::BadCard {
                path: path.into(),
                hdu,
                card: i + 1,
                text: text.trim_end().to_string(),
                detail: "unterminated string value".into(),
            })?)
        } else {
            None
        };
        cards.push(Card { keyword, value });
    }
    Err(FitsError::BadHeader {
        path: path.into(),
        hdu,
        detail: "the header has no END card (truncated or not FITS)".into(),
    })
}

/// The value part of a card: a quoted string (with '' for a quote) or the text before `/`.
fn parse_value(text: &str) -> Option<String> {
    let t = text.trim_start();
    if let Some(rest) = t.strip_prefix('\'') {
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    chars.next();
                    out.push('\'');
                } else {
                    return Some(out.trim_end().to_string());
                }
            } else {
                out.push(c);
            }
        }
        None
    } else {
        Some(t.split('/').next().unwrap_or("").trim().to_string())
    }
}

/// The TAN WCS when CTYPE1/2 are RA---TAN / DEC--TAN; a header that says TAN but lacks the
/// numbers is an error naming the missing keyword.
fn read_wcs(path: &Path, hdu: usize, cards: &[Card]) -> Result<Option<TanWcs>, FitsError> {
    let (Some(c1), Some(c2)) = (card_str(cards, "CTYPE1"), card_str(cards, "CTYPE2")) else {
        return Ok(None);
    };
    if !(c1 == "RA---TAN" && c2 == "DEC--TAN") {
        return Ok(None);
    }
    let need = |k: &str| {
        card_float(cards, k).ok_or_else(|| FitsError::BadHeader {
            path: path.into(),
            hdu,
            detail: format!("CTYPE says RA---TAN/DEC--TAN but {k} is missing or not a number"),
        })
    };
    let crpix = [need("CRPIX1")?, need("CRPIX2")?];
    let crval = [need("CRVAL1")?, need("CRVAL2")?];
    let has_cd = ["CD1_1", "CD1_2", "CD2_1", "CD2_2"]
        .iter()
        .any(|k| card_float(cards, k).is_some());
    let cd = if has_cd {
        let g = |k: &str| card_float(cards, k).unwrap_or(0.0);
        [[g("CD1_1"), g("CD1_2")], [g("CD2_1"), g("CD2_2")]]
    } else {
        let cdelt = [need("CDELT1")?, need("CDELT2")?];
        let has_pc = ["PC1_1", "PC1_2", "PC2_1", "PC2_2"]
            .iter()
            .any(|k| card_float(cards, k).is_some());
        let pc = if has_pc {
            let g = |k: &str, d: f64| card_float(cards, k).unwrap_or(d);
            [
                [g("PC1_1", 1.0), g("PC1_2", 0.0)],
                [g("PC2_1", 0.0), g("PC2_2", 1.0)],
            ]
        } else {
            let rho = card_float(cards, "CROTA2").unwrap_or(0.0).to_radians();
            [
                [rho.cos(), -rho.sin() * cdelt[1] / cdelt[0]],
                [rho.sin() * cdelt[0] / cdelt[1], rho.cos()],
            ]
        };
        [
            [cdelt[0] * pc[0][0], cdelt[0] * pc[0][1]],
            [cdelt[1] * pc[1][0], cdelt[1] * pc[1][1]],
        ]
    };
    Ok(Some(TanWcs {
        crpix,
        crval,
        cd,
        lonpole: card_float(cards, "LONPOLE").unwrap_or(180.0),
    }))
}
