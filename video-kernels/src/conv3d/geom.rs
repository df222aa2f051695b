//! Shape checking and the derived geometry of one conv3d call.

use vidgen_video_core::{Error, Result};

use super::Conv3dOpts;

/// Everything a kernel needs to know about one call, validated once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Geom {
    pub b: usize,
    pub cin: usize,
    pub cout: usize,
    pub groups: usize,
    /// Input channels per group (`w.dims()[1]`).
    pub cin_g: usize,
    /// Output channels per group.
    pub cout_g: usize,
    /// Input `[T, H, W]`.
    pub inp: [usize; 3],
    /// Kernel `[kT, kH, kW]`.
    pub k: [usize; 3],
    pub stride: [usize; 3],
    pub pad: [usize; 3],
    pub dil: [usize; 3],
    /// Output `[T', H', W']`.
    pub out: [usize; 3],
}

/// The fast path a call takes (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Path {
    /// `groups == Cin`, one input channel per group, `Cout = m·Cin`.
    Depthwise,
    /// Kernel `(kT, 1, 1)` with unit spatial stride and no spatial padding; pointwise `(1, 1, 1)`
    /// is the case `kT = 1`.
    Temporal,
    /// Anything else: implicit gemm over a padded channels-last copy of the input.
    General,
}

impl Geom {
    /// Validates the shapes of `x` `[B, Cin, T, H, W]` and `w` `[Cout, Cin/groups, kT, kH, kW]`
    /// against `opts`; every error names both shapes.
    pub fn new(x: &[usize], w: &[usize], opts: &Conv3dOpts) -> Result<Self> {
        let both = || format!("x shape {x:?}, weight shape {w:?}");
        if x.len() != 5 {
            return Err(Error::invalid(
                "x",
                format!("conv3d expects x of rank 5 [B, Cin, T, H, W]; {}", both()),
            ));
        }
        if w.len() != 5 {
            return Err(Error::invalid(
                "weight",
                format!(
                    "conv3d expects a weight of rank 5 [Cout, Cin/groups, kT, kH, kW]; {}",
                    both()
                ),
            ));
        }
        if x.contains(&0) || w.contains(&0) {
            return Err(Error::invalid(
                "x/weight",
                format!("conv3d needs non-empty tensors; {}", both()),
            ));
        }
        let groups = opts.groups;
        if groups == 0 {
            return Err(Error::invalid(
                "groups",
                format!("groups must be ≥ 1; {}", both()),
            ));
        }
        for (name, v) in [("stride", opts.stride), ("dilation", opts.dilation)] {
            if v.contains(&0) {
                return Err(Error::invalid(
                    name,
                    format!("{name} {v:?} must be ≥ 1 in every dim; {}", both()),
                ));
            }
        }
        let (b, cin, cout, cin_g) = (x[0], x[1], w[0], w[1]);
        if cin % groups != 0 || cout % groups != 0 {
            return Err(Error::invalid(
                "groups",
                format!(
                    "groups = {groups} must divide Cin = {cin} and Cout = {cout}; {}",
                    both()
                ),
            ));
        }
        if cin_g * groups != cin {
            return Err(Error::invalid(
                "weight",
                format!(
                    "channel mismatch: weight dim 1 ({cin_g}) × groups ({groups}) must equal \
                     Cin ({cin}); {}",
                    both()
                ),
            ));
        }
        let inp = [x[2], x[3], x[4]];
        let k = [w[2], w[3], w[4]];
        let mut out = [0usize; 3];
        for d in 0..3 {
            let padded = opts.padding[d]
                .checked_mul(2)
                .and_then(|p| p.checked_add(inp[d]));
            let span = (k[d] - 1)
                .checked_mul(opts.dilation[d])
                .and_then(|s| s.checked_add(1));
            let (Some(padded), Some(span)) = (padded, span) else {
                return Err(Error::invalid(
                    "padding/dilation",
                    format!("sizes overflow in dim {d}; {}", both()),
                ));
            };
            if span > padded {
                return Err(Error::invalid(
                    "weight",
                    format!(
                        "kernel larger than padded input in dim {} ({}): dilated kernel {span} > \
                         padded size {padded} (padding {:?}, dilation {:?}); {}",
                        d + 2,
                        ["T", "H", "W"][d],
                        opts.padding,
                        opts.dilation,
                        both()
                    ),
                ));
            }
            out[d] = (padded - span) / opts.stride[d] + 1;
        }
        // Every kernel indexes with usize products of these sizes: make sure the largest buffer
        // (input or output, padded, upsampled for the input gradient) fits comfortably.
        let mut total = b.checked_mul(cin.max(cout));
        for d in 0..3 {
            let extent = opts.dilation[d]
                .checked_mul(k[d])
                .and_then(|e| e.checked_add(inp[d].checked_mul(opts.stride[d])?))
                .and_then(|e| e.checked_add(opts.padding[d].checked_mul(2)?));
            total = total.and_then(|t| t.checked_mul(extent?));
        }
        if !matches!(total, Some(n) if n < isize::MAX as usize / 8) {
            return Err(Error::invalid("x", format!("tensor too large; {}", both())));
        }
        Ok(Geom {
            b,
            cin,
            cout,
            groups,
            cin_g,
            cout_g: cout / groups,
            inp,
            k,
            stride: opts.stride,
            pad: opts.padding,
            dil: opts.dilation,
            out,
        })
    }

    /// `[B, Cout, T', H', W']`.
    pub fn out_dims(&self) -> [usize; 5] {
        [self.b, self.cout, self.out[0], self.out[1], self.out[2]]
    }

    /// `[B, Cin, T, H, W]`.
    pub fn in_dims(&self) -> [usize; 5] {
        [self.b, self.cin, self.inp[0], self.inp[1], self.inp[2]]
    }

    /// `[Cout, Cin/groups, kT, kH, kW]`.
    pub fn w_dims(&self) -> [usize; 5] {
        [self.cout, self.cin_g, self.k[0], self.k[1], self.k[2]]
    }

    pub fn in_len(&self) -> usize {
        self.in_dims().iter().product()
    }

    pub fn out_len(&self) -> usize {
        self.out_dims().iter().product()
    }

    pub fn w_len(&self) -> usize {
        self.w_dims().iter().product()
    }

    /// Taps per output channel: `kT·kH·kW`.
    pub fn taps(&self) -> usize {
        self.k.iter().product()
    }

    /// Which kernel family serves this call.
    pub fn path(&self) -> Path {
        if self.cin_g == 1 && self.groups == self.cin {
            Path::Depthwise
        } else if self.k[1] == 1
            && self.k[2] == 1
            && self.stride[1] == 1
            && self.stride[2] == 1
            && self.pad[1] == 0
            && self.pad[2] == 0
        {
            Path::Temporal
        } else {
            Path::General
        }
    }

    /// Multiply-adds of the forward pass.
    #[allow(dead_code)]
    pub fn macs(&self) -> usize {
        self.out_len() * self.cin_g * self.taps()
    }
}

/// Output indices `[lo, hi)` of one dim whose input index `o·s + j·d − p` lies in `[0, n)`, for
/// tap `j`. Empty ranges come back as `lo == hi`.
/// The output buffer `[B, Cout, T', H', W']`, each channel's plane filled with its bias (zeros
/// without one): kernels that accumulate into it then add the bias for free.
pub(crate) fn output_init(g: &Geom, bias: Option<&[f32]>) -> Vec<f32> {
    use rayon::prelude::*;
    let plane = g.out.iter().product::<usize>();
    let mut y = vec![0f32; g.out_len()];
    if let Some(b) = bias {
        y.par_chunks_mut(plane)
            .enumerate()
            .for_each(|(bc, p)| p.fill(b[bc % g.cout]));
    }
    y
}

pub(crate) fn valid_range(
    n: usize,
    n_out: usize,
    s: usize,
    d: usize,
    p: usize,
    j: usize,
) -> (usize, usize) {
    let off = j * d; // input index = o·s + off − p
    let lo = if off >= p { 0 } else { (p - off).div_ceil(s) };
    let hi = if n + p > off {
        ((n + p - off - 1) / s + 1).min(n_out)
    } else {
        0
    };
    (lo.min(hi), hi)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn valid_range_matches_brute_force() {
        for n in 1..7 {
            for s in 1..4 {
                for d in 1..3 {
                    for p in 0..4 {
                        for j in 0..4 {
                            let span = j * d + 1;
                            if span > n + 2 * p {
                                continue;
                            }
                            let n_out = (n + 2 * p - span) / s + 1;
                            let (lo, hi) = valid_range(n, n_out, s, d, p, j);
                            for o in 0..n_out {
                                let i = (o * s + j * d) as isize - p as isize;
                                let ok = i >= 0 && (i as usize) < n;
                                assert_eq!(ok, o >= lo && o < hi, "n{n} s{s} d{d} p{p} j{j} o{o}");
                            }
                        }
                    }
                }
            }
        }
    }
}
