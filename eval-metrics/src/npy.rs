//! A small, defensive reader for NumPy `.npy` arrays and `.npz` archives (a zip of `.npy`
//! files), enough for pytorch-fid / clean-fid statistics: float64 / float32 (`<f8 >f8 <f4 >f4`),
//! C or Fortran order. Every malformed input (bad magic, truncated header, unknown dtype,
//! shape/data length disagreement, overflow) is an error, never a panic, and nothing is
//! allocated before the data length has been checked against the shape.

use std::collections::HashMap;
use std::io::{Cursor, Read};

use vidgen_video_core::{Error, Result};

/// Why an `.npy` / `.npz` could not be read (the caller attaches the path).
#[derive(Debug, Clone)]
pub(crate) struct NpyError(pub(crate) String);

type NResult<T> = std::result::Result<T, NpyError>;

/// Values (row-major) and shape of one array.
pub(crate) type Array = (Vec<f64>, Vec<usize>);

fn bad<T>(msg: impl Into<String>) -> NResult<T> {
    Err(NpyError(msg.into()))
}

/// A decoded `.npy` array: values as f64 in C (row-major) order, and its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyArray {
    /// The values, row-major.
    pub data: Vec<f64>,
    /// The shape (empty for a scalar).
    pub shape: Vec<usize>,
}

/// Parses one `.npy` file's bytes.
///
/// Errors ([`Error::InvalidArgument`] named `npy`) on anything other than a well-formed
/// float32 / float64 array.
pub fn parse_npy(bytes: &[u8]) -> Result<NpyArray> {
    parse(bytes).map_err(|e| Error::invalid("npy", e.0))
}

pub(crate) fn parse(bytes: &[u8]) -> NResult<NpyArray> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return bad("not an .npy file (bad magic)");
    }
    let major = bytes[6];
    let (hlen, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 => {
            if bytes.len() < 12 {
                return bad("truncated .npy header length");
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12usize,
            )
        }
        v => return bad(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(hlen)
        .filter(|&e| e <= bytes.len())
        .ok_or_else(|| NpyError("truncated .npy header".into()))?;
    let header = std::str::from_utf8(&bytes[start..end])
        .map_err(|_| NpyError("the .npy header is not text".into()))?;
    let descr = dict_str(header, "descr")?;
    let fortran = match dict_raw(header, "fortran_order")?.trim() {
        "True" => true,
        "False" => false,
        o => return bad(format!("bad fortran_order `{o}`")),
    };
    let shape = parse_shape(dict_raw(header, "shape")?)?;
    let (little, size) = match descr.as_str() {
        "<f8" | "=f8" => (true, 8usize),
        ">f8" => (false, 8),
        "<f4" | "=f4" => (true, 4),
        ">f4" => (false, 4),
        o => return bad(format!("unsupported dtype `{o}` (float32 / float64 only)")),
    };
    let count = shape
        .iter()
        .try_fold(1usize, |a, &b| a.checked_mul(b))
        .ok_or_else(|| NpyError(format!("shape {shape:?} overflows")))?;
    let nbytes = count
        .checked_mul(size)
        .ok_or_else(|| NpyError(format!("shape {shape:?} overflows")))?;
    let body = &bytes[end..];
    if body.len() != nbytes {
        return bad(format!(
            "shape {shape:?} of `{descr}` needs {nbytes} data bytes, found {}",
            body.len()
        ));
    }
    let mut data: Vec<f64> = Vec::with_capacity(count);
    for c in body.chunks_exact(size) {
        let v = match (size, little) {
            (8, true) => f64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            (8, false) => f64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
            (_, true) => f32::from_le_bytes([c[0], c[1], c[2], c[3]]) as f64,
            (_, false) => f32::from_be_bytes([c[0], c[1], c[2], c[3]]) as f64,
        };
        data.push(v);
    }
    if fortran && shape.len() > 1 {
        data = fortran_to_c(&data, &shape);
    }
    Ok(NpyArray { data, shape })
}

/// Reorders column-major (first index fastest) values into row-major.
fn fortran_to_c(data: &[f64], shape: &[usize]) -> Vec<f64> {
    let n = data.len();
    let mut out = vec![0.0; n];
    let rank = shape.len();
    let mut idx = vec![0usize; rank];
    for &v in data.iter() {
        // idx enumerates in Fortran order; compute its C offset.
        let mut off = 0usize;
        for (k, &i) in idx.iter().enumerate() {
            off = off * shape[k] + i;
        }
        out[off] = v;
        for (k, i) in idx.iter_mut().enumerate() {
            *i += 1;
            if *i < shape[k] {
                break;
            }
            *i = 0;
        }
    }
    out
}

/// The raw text of `'key': <value>` in a Python dict literal, up to the next top-level comma.
fn dict_raw<'a>(header: &'a str, key: &str) -> NResult<&'a str> {
    let pat = format!("'{key}'");
    let at = header
        .find(&pat)
        .ok_or_else(|| NpyError(format!("the .npy header has no `{key}`")))?;
    let rest = header[at + pat.len()..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .ok_or_else(|| NpyError(format!("no `:` after `{key}` in the .npy header")))?
        .trim_start();
    let mut depth = 0i32;
    for (i, ch) in rest.char_indices() {
        match ch {
            '(' | '[' => depth += 1,
            ')' | ']' => {
                depth -= 1;
                if depth < 0 {
                    return Ok(&rest[..i]);
                }
            }
            ',' | '}' if depth == 0 => return Ok(&rest[..i]),
            _ => {}
        }
    }
    bad(format!("unterminated `{key}` in the .npy header"))
}

fn dict_str(header: &str, key: &str) -> NResult<String> {
    let raw = dict_raw(header, key)?.trim();
    let s = raw
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .ok_or_else(|| NpyError(format!("`{key}` is not a string: `{raw}`")))?;
    Ok(s.to_string())
}

fn parse_shape(raw: &str) -> NResult<Vec<usize>> {
    let raw = raw.trim();
    let inner = raw
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| NpyError(format!("shape is not a tuple: `{raw}`")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| NpyError(format!("bad shape entry `{s}`")))
        })
        .collect()
}

/// Reads the arrays `names` (without `.npy`) from an `.npz` archive's bytes.
pub(crate) fn read_npz(bytes: &[u8], names: &[&str]) -> NResult<HashMap<String, Array>> {
    let mut zip = zip::ZipArchive::new(Cursor::new(bytes))
        .map_err(|e| NpyError(format!("not a zip (.npz) archive: {e}")))?;
    let mut out = HashMap::new();
    for &name in names {
        let file = format!("{name}.npy");
        let mut entry = match zip.by_name(&file) {
            Ok(e) => e,
            Err(_) => continue,
        };
        // Deflate inflates at most ~1032:1, so an entry may not exceed 1100x the archive (or
        // 1 MiB): an entry declaring more is refused before reading, and one that inflates
        // past it regardless of what it declares (a lying header, a zip bomb) is cut off there.
        let limit = (bytes.len() as u64).saturating_mul(1100).max(1 << 20);
        let declared = entry.size();
        if declared > limit {
            return bad(format!(
                "`{file}` declares {declared} bytes, more than the archive can hold"
            ));
        }
        // Reserve no more than the archive's own size up front: the declared size is a claim.
        let reserve = declared.min(bytes.len() as u64);
        let mut buf = Vec::with_capacity(usize::try_from(reserve).unwrap_or(0));
        (&mut entry)
            .take(limit.saturating_add(1))
            .read_to_end(&mut buf)
            .map_err(|e| NpyError(format!("cannot read `{file}`: {e}")))?;
        if buf.len() as u64 > limit {
            return bad(format!(
                "`{file}` inflates past {limit} bytes, more than the archive can hold"
            ));
        }
        let arr = parse(&buf).map_err(|e| NpyError(format!("`{file}`: {}", e.0)))?;
        out.insert(name.to_string(), (arr.data, arr.shape));
    }
    Ok(out)
}

/// Writes a little-endian float64 `.npy` (version 1.0), C order. Used by tests and by tools
/// that export statistics for Python.
pub fn write_npy(data: &[f64], shape: &[usize]) -> Result<Vec<u8>> {
    let count: usize = shape.iter().product();
    if count != data.len() {
        return Err(Error::shape("data", shape, &[data.len()]));
    }
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape_s = match dims.len() {
        1 => format!("({},)", dims[0]),
        _ => format!("({})", dims.join(", ")),
    };
    let mut header = format!("{{'descr': '<f8', 'fortran_order': False, 'shape': {shape_s}, }}");
    // Pad so that magic + len + header + '\n' is a multiple of 64, as numpy does.
    let total = 10 + header.len() + 1;
    let pad = (64 - total % 64) % 64;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 8);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    let hl =
        u16::try_from(header.len()).map_err(|_| Error::invalid("shape", "npy header too long"))?;
    out.extend_from_slice(&hl.to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    Ok(out)
}
