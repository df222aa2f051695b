//! Natural order of file names (`frame2.png` before `frame10.png`), the order in which frame
//! folders are read.

use std::cmp::Ordering;
use std::path::{Path, PathBuf};

use vidgen_video_core::{Error, Result};

/// Natural order of two names: runs of ASCII digits compare as numbers (`2` < `10`, any
/// length, no parsing), everything else byte by byte.
///
/// It is a total order consistent with equality: names equal as natural keys but spelled
/// differently (`01` and `1`, `a007` and `a7`) are ordered by their bytes, so sorting is
/// deterministic and `natural_cmp(a, b) == Equal` only when `a == b`.
///
/// ```
/// use std::cmp::Ordering;
/// use vidgen_video_io::natural_cmp;
///
/// assert_eq!(natural_cmp("2.png", "10.png"), Ordering::Less);
/// assert_eq!(natural_cmp("frame_9", "frame_009"), Ordering::Greater); // same number: bytes decide
/// let mut names = vec!["10.png", "9.png", "1.png", "100.png"];
/// names.sort_by(|a, b| natural_cmp(a, b));
/// assert_eq!(names, ["1.png", "9.png", "10.png", "100.png"]);
/// ```
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    natural_cmp_bytes(a.as_bytes(), b.as_bytes())
}

/// [`natural_cmp`] on raw bytes (for file names that are not UTF-8).
pub(crate) fn natural_cmp_bytes(a: &[u8], b: &[u8]) -> Ordering {
    let (mut x, mut y) = (a, b);
    loop {
        match (x.first(), y.first()) {
            (None, None) => return a.cmp(b),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(p), Some(q)) if p.is_ascii_digit() && q.is_ascii_digit() => {
                let nx = x.iter().take_while(|c| c.is_ascii_digit()).count();
                let ny = y.iter().take_while(|c| c.is_ascii_digit()).count();
                let (rx, ry) = (&x[..nx], &y[..ny]);
                // As numbers without parsing (runs may exceed u64): drop leading zeros, then
                // the longer run is larger, then the digits in order.
                let sx = &rx[rx.iter().take_while(|&&c| c == b'0').count()..];
                let sy = &ry[ry.iter().take_while(|&&c| c == b'0').count()..];
                let o = sx.len().cmp(&sy.len()).then_with(|| sx.cmp(sy));
                if o != Ordering::Equal {
                    return o;
                }
                x = &x[nx..];
                y = &y[ny..];
            }
            (Some(p), Some(q)) => {
                if p != q {
                    return p.cmp(q);
                }
                x = &x[1..];
                y = &y[1..];
            }
        }
    }
}

/// [`natural_cmp`] of two paths' file names (the whole paths' bytes break ties), for sorting
/// folder entries. Non-UTF-8 names are compared on their bytes.
pub fn natural_path_cmp(a: &Path, b: &Path) -> Ordering {
    let name = |p: &Path| p.file_name().map(|n| n.as_encoded_bytes().to_vec());
    natural_cmp_bytes(&name(a).unwrap_or_default(), &name(b).unwrap_or_default()).then_with(|| {
        natural_cmp_bytes(
            a.as_os_str().as_encoded_bytes(),
            b.as_os_str().as_encoded_bytes(),
        )
    })
}

/// The regular files of `dir` (not recursive) whose extension is one of `extensions` (ASCII
/// case ignored; all files when `extensions` is empty), in natural order of their names
/// ([`natural_cmp`]: `2.png` before `10.png`). This is the order [`crate::read_png_folder`]
/// reads frames in.
///
/// # Errors
/// [`Error::Io`] naming `dir` when it cannot be listed. An empty result is not an error here.
pub fn sorted_frame_paths(dir: impl AsRef<Path>, extensions: &[&str]) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })? {
        let entry = entry.map_err(|source| Error::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = entry.path();
        let ext_ok = extensions.is_empty()
            || path.extension().is_some_and(|e| {
                extensions
                    .iter()
                    .any(|x| e.as_encoded_bytes().eq_ignore_ascii_case(x.as_bytes()))
            });
        if ext_ok && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort_by(|a, b| natural_path_cmp(a, b));
    Ok(paths)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn examples() {
        use Ordering::*;
        let cases = [
            ("2.png", "10.png", Less),
            ("10.png", "2.png", Greater),
            ("frame_2.png", "frame_10.png", Less),
            ("frame_000010.png", "frame_000009.png", Greater),
            ("a.png", "a.png", Equal),
            ("1", "01", Greater), // same number, bytes decide
            ("a1b2", "a1b10", Less),
            ("a", "a0", Less),
            ("b1", "a2", Greater),
            (
                "x99999999999999999999999",
                "x100000000000000000000000",
                Less,
            ), // > u64
            ("img9.png", "img9a.png", Less),
            ("", "0", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(natural_cmp(a, b), want, "{a} vs {b}");
        }
    }
}
