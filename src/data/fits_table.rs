//! Writing a FITS binary table (`BINTABLE`): an empty primary HDU, then one table extension
//! with 8-byte floats (`D`), 8-byte integers (`K`) and fixed-width strings (`A`), big-endian,
//! every unit padded to 2,880 bytes. Enough for a catalogue astropy and TOPCAT open
//! (`astropy.table.Table.read("catalog.fits")`).

use std::path::Path;

use super::DataError;

const BLOCK: usize = 2880;

/// One column's values.
#[derive(Clone, Debug, PartialEq)]
pub enum ColumnData {
    F64(Vec<f64>),
    I64(Vec<i64>),
    Str(Vec<String>),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    /// `TUNITn`, e.g. `pix` or `deg`; empty for none.
    pub unit: String,
    pub data: ColumnData,
}

impl Column {
    pub fn f64(name: &str, unit: &str, values: Vec<f64>) -> Column {
        Column {
            name: name.into(),
            unit: unit.into(),
            data: ColumnData::F64(values),
        }
    }

    pub fn i64(name: &str, values: Vec<i64>) -> Column {
        Column {
            name: name.into(),
            unit: String::new(),
            data: ColumnData::I64(values),
        }
    }

    pub fn str(name: &str, values: Vec<String>) -> Column {
        Column {
            name: name.into(),
            unit: String::new(),
            data: ColumnData::Str(values),
        }
    }

    fn rows(&self) -> usize {
        match &self.data {
            ColumnData::F64(v) => v.len(),
            ColumnData::I64(v) => v.len(),
            ColumnData::Str(v) => v.len(),
        }
    }

    /// Bytes per row and the `TFORM` code.
    fn form(&self) -> (usize, String) {
        match &self.data {
            ColumnData::F64(_) => (8, "D".into()),
            ColumnData::I64(_) => (8, "K".into()),
            ColumnData::Str(v) => {
                let width = v.iter().map(|s| s.len()).max().unwrap_or(0).max(1);
                (width, format!("{width}A"))
            }
        }
    }
}

/// One 80-character header card.
/// Strings (quoted) start at column 11; numbers and logicals end at column 30.
fn card(out: &mut Vec<u8>, key: &str, value: &str, comment: &str) {
    let mut text = match value.starts_with('\'') {
        true => format!("{key:<8}= {value:<20}"),
        false => format!("{key:<8}= {value:>20}"),
    };
    if !comment.is_empty() {
        text.push_str(" / ");
        text.push_str(comment);
    }
    text.truncate(80);
    out.extend_from_slice(format!("{text:<80}").as_bytes());
}

fn string_value(s: &str) -> String {
    // FITS strings are quoted, quotes doubled, padded to at least 8 characters.
    format!("'{:<8}'", s.replace('\'', "''"))
}

fn end_header(out: &mut Vec<u8>) {
    out.extend_from_slice(format!("{:<80}", "END").as_bytes());
    pad(out, b' ');
}

fn pad(out: &mut Vec<u8>, byte: u8) {
    let rem = out.len() % BLOCK;
    if rem != 0 {
        out.resize(out.len() + BLOCK - rem, byte);
    }
}

/// The file's bytes; `Err` names the column whose length differs or whose text is not ASCII.
pub fn bintable_bytes(extname: &str, columns: &[Column]) -> Result<Vec<u8>, String> {
    let rows = columns.first().map_or(0, Column::rows);
    for c in columns {
        if c.rows() != rows {
            return Err(format!(
                "column {} has {} rows, expected {rows}",
                c.name,
                c.rows()
            ));
        }
        if !c.name.is_ascii()
            || matches!(&c.data, ColumnData::Str(v) if v.iter().any(|s| !s.is_ascii()))
        {
            return Err(format!("column {} is not ASCII text", c.name));
        }
    }
    let forms: Vec<(usize, String)> = columns.iter().map(Column::form).collect();
    let row_bytes: usize = forms.iter().map(|f| f.0).sum();
    let mut out = Vec::new();
    card(&mut out, "SIMPLE", "T", "written by gpl");
    card(&mut out, "BITPIX", "8", "");
    card(&mut out, "NAXIS", "0", "");
    card(&mut out, "EXTEND", "T", "");
    end_header(&mut out);
    card(
        &mut out,
        "XTENSION",
        &string_value("BINTABLE"),
        "binary table",
    );
    card(&mut out, "BITPIX", "8", "");
    card(&mut out, "NAXIS", "2", "");
    card(&mut out, "NAXIS1", &row_bytes.to_string(), "bytes per row");
    card(&mut out, "NAXIS2", &rows.to_string(), "rows");
    card(&mut out, "PCOUNT", "0", "");
    card(&mut out, "GCOUNT", "1", "");
    card(&mut out, "TFIELDS", &columns.len().to_string(), "");
    for (i, (c, (_, form))) in columns.iter().zip(&forms).enumerate() {
        let n = i + 1;
        card(&mut out, &format!("TTYPE{n}"), &string_value(&c.name), "");
        card(&mut out, &format!("TFORM{n}"), &string_value(form), "");
        if !c.unit.is_empty() {
            card(&mut out, &format!("TUNIT{n}"), &string_value(&c.unit), "");
        }
    }
    card(&mut out, "EXTNAME", &string_value(extname), "");
    end_header(&mut out);
    for r in 0..rows {
        for (c, (width, _)) in columns.iter().zip(&forms) {
            match &c.data {
                ColumnData::F64(v) => out.extend_from_slice(&v[r].to_be_bytes()),
                ColumnData::I64(v) => out.extend_from_slice(&v[r].to_be_bytes()),
                ColumnData::Str(v) => {
                    let mut bytes = v[r].as_bytes().to_vec();
                    bytes.resize(*width, b' ');
                    out.extend_from_slice(&bytes);
                }
            }
        }
    }
    pad(&mut out, 0);
    Ok(out)
}

/// Writes the table through a temp file and a rename.
pub fn write_bintable(path: &Path, extname: &str, columns: &[Column]) -> Result<(), DataError> {
    let bytes =
        bintable_bytes(extname, columns).map_err(|e| DataError::invalid("FITS table", e))?;
    crate::fsutil::write_atomic_with(path, |out| out.write_all(&bytes))
        .map_err(|e| DataError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_block_aligned_with_big_endian_rows_after_its_header() {
        let columns = [
            Column::str("field", vec!["f0".into(), "field_1".into()]),
            Column::i64("id", vec![1, 2]),
            Column::f64("x", "pix", vec![1.5, -2.25]),
        ];
        let bytes = bintable_bytes("CATALOG", &columns).unwrap();
        assert_eq!(bytes.len() % BLOCK, 0);
        let text = String::from_utf8_lossy(&bytes[..2 * BLOCK]);
        assert!(text.starts_with("SIMPLE  =                    T"));
        let ext = &text[BLOCK..];
        assert!(ext.starts_with("XTENSION= 'BINTABLE'"));
        for card in [
            "NAXIS1  =                   23",
            "NAXIS2  =                    2",
            "TFIELDS =                    3",
            "TFORM1  = '7A      '",
            "TFORM2  = 'K       '",
            "TUNIT3  = 'pix     '",
        ] {
            assert!(ext.contains(card), "missing {card}");
        }
        // The data start at the third block: row 2 is `field_1`, 2, -2.25.
        let row2 = &bytes[2 * BLOCK + 23..2 * BLOCK + 46];
        assert_eq!(&row2[..7], b"field_1");
        assert_eq!(i64::from_be_bytes(row2[7..15].try_into().unwrap()), 2);
        assert_eq!(f64::from_be_bytes(row2[15..23].try_into().unwrap()), -2.25);
        assert!(
            bintable_bytes("T", &[Column::i64("a", vec![1]), Column::i64("b", vec![])]).is_err()
        );
    }
}
