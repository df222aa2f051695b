//! Input checks and small pieces shared by the inflated UNets.

use candle_core::{DType, Tensor};
use candle_nn::VarBuilder;
use vidgen_video_core::{Error, Result, VideoShape};

use vidgen_video_core::hooks::{HookPoint, HookSite, UNetHooks};
use vidgen_video_nn::Conv2d;

/// Timesteps as `[B]` f32: a scalar `[]`, a `[1]` broadcast to `B`, or one per video `[B]`;
/// any float or integer dtype.
pub(crate) fn timesteps(t: &Tensor, b: usize) -> Result<Tensor> {
    let t = t.to_dtype(DType::F32)?;
    let t = match t.dims() {
        [] => t.reshape(1)?,
        [_] => t,
        d => {
            return Err(Error::invalid(
                "timestep",
                format!("expected a scalar, [1] or [B = {b}] tensor, got shape {d:?}"),
            ))
        }
    };
    match t.dim(0)? {
        1 => Ok(t.broadcast_as(b)?.contiguous()?),
        n if n == b => Ok(t),
        n => Err(Error::invalid(
            "timestep",
            format!("{n} timesteps for a batch of {b} videos (give 1 or {b})"),
        )),
    }
}

/// Repeats each row `t` times along dim 0 (torch `repeat_interleave(t, dim=0)`).
///
/// # Shapes
/// `[B, …]` → `[B·t, …]`.
pub(crate) fn repeat_interleave(x: &Tensor, t: usize) -> Result<Tensor> {
    if t == 1 {
        return Ok(x.clone());
    }
    let dims = x.dims().to_vec();
    let mut exp = dims.clone();
    exp.insert(1, t);
    let mut out = dims;
    out[0] *= t;
    Ok(x.unsqueeze(1)?
        .broadcast_as(exp)?
        .contiguous()?
        .reshape(out)?)
}

/// The cross-attention context per frame: `[B, S, D]` is repeated over frames, `[B·T, S, D]`
/// (one per frame, as AnimateDiff's pipeline passes it) is used as is.
pub(crate) fn frame_context(ctx: &Tensor, s: VideoShape, width: usize) -> Result<Tensor> {
    match ctx.dims() {
        &[n, _, d] if d == width && n == s.b => repeat_interleave(ctx, s.t),
        &[n, _, d] if d == width && n == s.b * s.t => Ok(ctx.clone()),
        d => Err(Error::invalid(
            "encoder_hidden_states",
            format!(
                "expected [B = {}, S, {width}] or [B·T = {}, S, {width}], got shape {d:?}",
                s.b,
                s.b * s.t
            ),
        )),
    }
}

/// Checks a video input against the model's input channels.
pub(crate) fn check_sample(x: &Tensor, in_channels: usize) -> Result<VideoShape> {
    let s = VideoShape::of(x)?;
    if s.c != in_channels {
        return Err(Error::ShapeMismatch {
            key: "sample channels [B, C, T, H, W]".into(),
            expected: vec![s.b, in_channels, s.t, s.h, s.w],
            found: x.dims().to_vec(),
            file: None,
        });
    }
    Ok(s)
}

/// Runs a video-layout layer on frames: `[B·T, C, H, W]` → `[B, C, T, H, W]` → `f` → frames.
pub(crate) fn on_video(
    frames: &Tensor,
    t: usize,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    let v = VideoShape::unfold(frames, t)?;
    Ok(VideoShape::fold(&f(&v)?)?.0)
}

/// Calls a hook on frame-layout hidden states, skipping all work for no-op hooks.
pub(crate) fn hook(
    hooks: &dyn UNetHooks,
    block: &str,
    point: HookPoint,
    frames: Tensor,
    t: usize,
) -> Result<Tensor> {
    if hooks.is_noop() {
        return Ok(frames);
    }
    let site = HookSite {
        block,
        point,
        num_frames: t,
    };
    on_video(&frames, t, |v| {
        let out = hooks.apply(&site, v)?;
        if out.dims() != v.dims() {
            return Err(Error::shape(
                format!("hook output at {block}"),
                v.dims(),
                out.dims(),
            ));
        }
        Ok(out)
    })
}

/// Loads `conv_in` (3×3, padding 1) for `in_channels` inputs from a checkpoint that may have
/// fewer: the stored `[C0, c_ckpt, 3, 3]` weight is extended with zero columns for the extra
/// channels (InstructPix2Pix-style channel-concat conditioning), so the widened layer initially
/// ignores them. `ckpt_in` = `in_channels` is a plain load.
pub(crate) fn conv_in(
    in_channels: usize,
    ckpt_in: usize,
    out: usize,
    vb: VarBuilder,
) -> Result<Conv2d> {
    if ckpt_in >= in_channels {
        return Conv2d::new(in_channels, out, 3, 1, 1, true, vb);
    }
    let w = vb.get((out, ckpt_in, 3, 3), "weight")?;
    let b = vb.get(out, "bias")?;
    let w = w.pad_with_zeros(1, 0, in_channels - ckpt_in)?;
    let mut ts = std::collections::HashMap::new();
    ts.insert("weight".to_string(), w);
    ts.insert("bias".to_string(), b);
    let vb2 = VarBuilder::from_tensors(ts, vb.dtype(), vb.device());
    Conv2d::new(in_channels, out, 3, 1, 1, true, vb2)
}
