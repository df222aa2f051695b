//! Side-by-side strips and grids of videos for looking at results (demo | query | generated).

use std::path::Path;

use vidgen_video_core::{Error, Result};

use crate::frames::{Frame, Video};

/// How cells of a grid are separated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridStyle {
    /// Width in pixels of the lines between cells (0 for none).
    pub separator: u32,
    /// Colour of the separator lines and of the padding around cells smaller than their slot.
    pub color: [u8; 3],
}

impl Default for GridStyle {
    /// 2-pixel white lines.
    fn default() -> Self {
        Self {
            separator: 2,
            color: [255, 255, 255],
        }
    }
}

/// Lays out `cells` (`rows[r][c]`, each a frame; `None` leaves a slot empty) into one frame.
/// Column `c` is as wide as its widest cell, row `r` as tall as its tallest; smaller cells sit
/// at the top-left of their slot and the rest is `style.color`.
pub fn grid_frame(rows: &[Vec<Option<&Frame>>], style: GridStyle) -> Result<Frame> {
    let ncols = rows.iter().map(Vec::len).max().unwrap_or(0);
    if rows.is_empty() || ncols == 0 {
        return Err(Error::invalid("grid", "needs at least one cell"));
    }
    let mut col_w = vec![0u32; ncols];
    let mut row_h = vec![0u32; rows.len()];
    for (r, row) in rows.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            if let Some(f) = cell {
                col_w[c] = col_w[c].max(f.width());
                row_h[r] = row_h[r].max(f.height());
            }
        }
    }
    // Empty columns / rows still take one pixel so the layout is never degenerate.
    col_w.iter_mut().for_each(|w| *w = (*w).max(1));
    row_h.iter_mut().for_each(|h| *h = (*h).max(1));
    let sep = style.separator as u64;
    let total_w = col_w.iter().map(|&w| w as u64).sum::<u64>() + sep * (ncols as u64 - 1);
    let total_h = row_h.iter().map(|&h| h as u64).sum::<u64>() + sep * (rows.len() as u64 - 1);
    let (Ok(tw), Ok(th)) = (u32::try_from(total_w), u32::try_from(total_h)) else {
        return Err(Error::invalid(
            "grid",
            format!("{total_w}x{total_h} is too large"),
        ));
    };
    let mut out = Frame::filled(tw, th, style.color)?;
    let out_w = tw as usize;
    let mut y0 = 0usize;
    for (r, row) in rows.iter().enumerate() {
        let mut x0 = 0usize;
        for (c, &w) in col_w.iter().enumerate() {
            if let Some(Some(f)) = row.get(c) {
                let fw = f.width() as usize;
                for y in 0..f.height() as usize {
                    let src = &f.data()[y * fw * 3..(y + 1) * fw * 3];
                    let d = ((y0 + y) * out_w + x0) * 3;
                    out.data_mut()[d..d + fw * 3].copy_from_slice(src);
                }
            }
            x0 += w as usize + style.separator as usize;
        }
        y0 += row_h[r] as usize + style.separator as usize;
    }
    Ok(out)
}

/// An animated grid: `rows[r][c]` is a video; frame `t` of the result shows frame `t` of every
/// video (a video shorter than the longest holds its last frame). The fps is the first video's.
pub fn grid_video(rows: &[Vec<&Video>], style: GridStyle) -> Result<Video> {
    let Some(first) = rows.iter().flatten().next() else {
        return Err(Error::invalid("grid", "needs at least one video"));
    };
    let len = rows.iter().flatten().map(|v| v.len()).max().unwrap_or(1);
    let frames = (0..len)
        .map(|t| {
            let cells: Vec<Vec<Option<&Frame>>> = rows
                .iter()
                .map(|row| {
                    row.iter()
                        .map(|v| v.frames().get(t.min(v.len() - 1)))
                        .collect()
                })
                .collect();
            grid_frame(&cells, style)
        })
        .collect::<Result<Vec<_>>>()?;
    Video::new(frames, first.fps())
}

/// The videos next to each other, left to right (e.g. demo | query | generated).
pub fn side_by_side(videos: &[&Video], style: GridStyle) -> Result<Video> {
    grid_video(&[videos.to_vec()], style)
}

/// A still contact sheet: one row per video, its frames left to right in time.
pub fn contact_sheet(videos: &[&Video], style: GridStyle) -> Result<Frame> {
    let rows: Vec<Vec<Option<&Frame>>> = videos
        .iter()
        .map(|v| v.frames().iter().map(Some).collect())
        .collect();
    grid_frame(&rows, style)
}

/// Writes `videos` side by side as an animated GIF at `path` (see [`side_by_side`]).
pub fn write_side_by_side_gif(
    path: impl AsRef<Path>,
    videos: &[&Video],
    style: GridStyle,
) -> Result<()> {
    crate::write_gif(path, &side_by_side(videos, style)?)
}

/// Writes the contact sheet of `videos` (one row per video, time left to right) as a PNG.
pub fn write_contact_sheet_png(
    path: impl AsRef<Path>,
    videos: &[&Video],
    style: GridStyle,
) -> Result<()> {
    crate::write_png(path, &contact_sheet(videos, style)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_places_cells_and_separators() {
        let a = Video::new(vec![Frame::filled(3, 2, [10, 0, 0]).unwrap(); 2], 5.0).unwrap();
        let b = Video::new(vec![Frame::filled(2, 3, [0, 20, 0]).unwrap()], 5.0).unwrap();
        let style = GridStyle {
            separator: 1,
            color: [9, 9, 9],
        };
        let s = side_by_side(&[&a, &b], style).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!((s.width(), s.height()), (3 + 1 + 2, 3));
        let f = &s.frames()[1];
        assert_eq!(f.get(0, 0), Some([10, 0, 0]));
        assert_eq!(f.get(3, 0), Some([9, 9, 9]));
        assert_eq!(f.get(4, 2), Some([0, 20, 0]));
        assert_eq!(f.get(0, 2), Some([9, 9, 9])); // padding under the shorter cell
    }

    #[test]
    fn contact_sheet_has_one_row_per_video() {
        let a = Video::new(vec![Frame::filled(4, 4, [1, 1, 1]).unwrap(); 3], 5.0).unwrap();
        let s = contact_sheet(&[&a, &a], GridStyle::default()).unwrap();
        assert_eq!((s.width(), s.height()), (3 * 4 + 2 * 2, 2 * 4 + 2));
        assert!(contact_sheet(&[], GridStyle::default()).is_err());
    }
}
