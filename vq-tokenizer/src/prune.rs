//! Pruning near-duplicate codes from a trained codebook.
//!
//! k-means and EMA place codes where the encoder's outputs are dense, and a flat background is
//! most of every frame: a trained codebook holds dozens of background codes whose decoded cells
//! look the same. When the encoder sees the whole frame (GroupNorm statistics, attention),
//! which of them a background cell gets depends on content far away, so a static background
//! changes tokens from frame to frame. A language model over those tokens then spends its loss
//! on arbitrary near-ties. Pruning removes codes whose loss the decoder's output barely notices.
//!
//! Greedy: codes are tried cheapest first (the latent-space cost of sending every sample vector
//! of the code to its next-nearest live code); a code is removed when the sample's round-trip
//! PSNR, re-encoded without it, stays within `max_psnr_drop` dB of the original. Codes the sample
//! never uses are removed.
//!
//! [`prune_vqmodel`] prunes a [`VQModel`] on sample clips; [`prune_codes`] is the core for any
//! tokenizer (its decoder given as a closure); [`write_folder_with_codebook`] writes the pruned
//! diffusers folder.

use std::path::Path;

use candle_core::{DType, Device, IndexOp, Tensor};
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};

use crate::vqmodel::VQModel;

/// What a pruning did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PruneReport {
    /// Codes before.
    pub codes_before: usize,
    /// Codes kept.
    pub codes_after: usize,
    /// Codes the sample used before pruning.
    pub used_before: usize,
    /// Frames of the sample.
    pub frames: usize,
    /// Round-trip PSNR (dB, 0–255 pixels) of the sample before.
    pub psnr_before: f64,
    /// After.
    pub psnr_after: f64,
    /// Mean tokens per frame that differ from the frame before, over consecutive frames of
    /// the sample's clips (a static background keeps its tokens only if its codes are
    /// canonical), before.
    pub changed_per_frame_before: f64,
    /// After.
    pub changed_per_frame_after: f64,
    /// The largest round-trip PSNR drop allowed.
    pub max_psnr_drop: f64,
}

/// The sample a pruning works on.
#[derive(Debug, Clone, Copy)]
pub struct PruneSample<'a> {
    /// The codebook the nearest-code search uses, `[K, D]`.
    pub codebook: &'a Tensor,
    /// Encoder outputs `[frames · cells, D]`, frame after frame, each frame's cells in token
    /// order.
    pub latents: &'a Tensor,
    /// Tokens per frame.
    pub cells: usize,
    /// Frames per clip, in order (they sum to the sample's frames; consecutive frames of a clip
    /// are compared for the report).
    pub clip_lens: &'a [usize],
    /// Pixel values of one frame (the PSNR's denominator, with the frame count).
    pub values_per_frame: usize,
}

/// A pruning's decoder: `(ids, frames)` → each listed frame's summed squared round-trip error
/// (0–255 pixel units), the ids being `frames.len() · cells`, frame after frame.
pub type FrameErrors<'a> = dyn FnMut(&[u32], &[usize]) -> Result<Vec<f64>> + 'a;

/// Removes near-duplicate codes (see the module docs). `sq_err(ids, frames)` decodes the ids
/// of the listed frames (`frames.len() · cells` ids, frame after frame) and returns each
/// frame's summed squared error against the original, in 0–255 pixel units.
///
/// Returns the kept codes' indices (ascending) and the report.
///
/// # Errors
/// An empty sample, mismatched sizes, or errors of `sq_err`.
pub fn prune_codes(
    sample: &PruneSample<'_>,
    max_psnr_drop: f64,
    sq_err: &mut FrameErrors<'_>,
) -> Result<(Vec<u32>, PruneReport)> {
    let (k, d) = sample.codebook.dims2()?;
    let (rows, d2) = sample.latents.dims2()?;
    let frames: usize = sample.clip_lens.iter().sum();
    if frames == 0 || sample.cells == 0 || k == 0 {
        return Err(Error::invalid("prune sample", "no frames, cells or codes"));
    }
    if d2 != d || rows != frames * sample.cells {
        return Err(Error::invalid(
            "prune sample",
            format!(
                "{rows} latent rows of {d2} values; {frames} frames of {} cells and codes of {d} values need {} rows",
                sample.cells,
                frames * sample.cells
            ),
        ));
    }
    if !(max_psnr_drop.is_finite() && max_psnr_drop >= 0.0) {
        return Err(Error::invalid(
            "max_psnr_drop",
            format!("{max_psnr_drop}: needs a finite value ≥ 0"),
        ));
    }
    let gg = sample.cells;
    let e: Vec<f32> = sample
        .codebook
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let z: Vec<f32> = sample
        .latents
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1()?;
    let dist = |r: usize, c: usize| -> f32 {
        z[r * d..(r + 1) * d]
            .iter()
            .zip(&e[c * d..(c + 1) * d])
            .map(|(a, b)| (a - b) * (a - b))
            .sum()
    };
    let nearest = |r: usize, live: &[bool]| -> (u32, f32) {
        let mut best = (0u32, f32::INFINITY);
        for c in (0..k).filter(|&c| live[c]) {
            let v = dist(r, c);
            if v < best.1 {
                best = (c as u32, v);
            }
        }
        best
    };
    let mut live = vec![true; k];
    let mut ids: Vec<u32> = (0..rows).map(|r| nearest(r, &live).0).collect();
    // The unpruned assignment, for the report.
    let orig = ids.clone();
    let mut count = vec![0usize; k];
    for &i in &ids {
        count[i as usize] += 1;
    }
    let used_before = count.iter().filter(|&&c| c > 0).count();
    for c in 0..k {
        live[c] = count[c] > 0;
    }
    // Per-frame squared error of the round trip through `ids`, in chunks of 64 frames.
    let mut err_of = |ids: &[u32], which: &[usize]| -> Result<Vec<f64>> {
        let mut out = Vec::with_capacity(which.len());
        for chunk in which.chunks(64) {
            let sel: Vec<u32> = chunk
                .iter()
                .flat_map(|&f| ids[f * gg..(f + 1) * gg].iter().copied())
                .collect();
            let e = sq_err(&sel, chunk)?;
            if e.len() != chunk.len() {
                return Err(Error::invalid(
                    "prune decoder",
                    format!("{} errors for {} frames", e.len(), chunk.len()),
                ));
            }
            out.extend(e);
        }
        Ok(out)
    };
    let all: Vec<usize> = (0..frames).collect();
    let mut err = err_of(&ids, &all)?;
    let n_values = (frames * sample.values_per_frame.max(1)) as f64;
    let psnr = |err: &[f64]| {
        let mse = err.iter().sum::<f64>() / n_values;
        10.0 * (255f64 * 255.0 / mse.max(1e-12)).log10()
    };
    let psnr_before = psnr(&err);
    let floor = psnr_before - max_psnr_drop;
    // Cheapest first: the latent cost of moving a code's vectors to their second choice.
    let mut cost = vec![0f64; k];
    for (r, &id) in ids.iter().enumerate() {
        let c = id as usize;
        let mut l2 = live.clone();
        l2[c] = false;
        if l2.iter().any(|&x| x) {
            cost[c] += f64::from(nearest(r, &l2).1 - dist(r, c));
        }
    }
    let mut order: Vec<usize> = (0..k).filter(|&c| live[c]).collect();
    order.sort_by(|&a, &b| cost[a].total_cmp(&cost[b]));
    for c in order {
        if live.iter().filter(|&&x| x).count() <= 1 {
            break;
        }
        live[c] = false;
        let moved: Vec<usize> = (0..rows).filter(|&r| ids[r] as usize == c).collect();
        let mut trial = ids.clone();
        for &r in &moved {
            trial[r] = nearest(r, &live).0;
        }
        let mut touched: Vec<usize> = moved.iter().map(|&r| r / gg).collect();
        touched.dedup();
        let new_err = err_of(&trial, &touched)?;
        let mut cand = err.clone();
        for (&f, &v) in touched.iter().zip(&new_err) {
            cand[f] = v;
        }
        if psnr(&cand) >= floor {
            ids = trial;
            err = cand;
        } else {
            live[c] = true;
        }
    }
    let changed = |ids: &[u32]| -> f64 {
        let (mut n, mut pairs, mut f0) = (0usize, 0usize, 0usize);
        for &len in sample.clip_lens {
            for t in 1..len {
                let (a, b) = ((f0 + t - 1) * gg, (f0 + t) * gg);
                n += (0..gg).filter(|&j| ids[a + j] != ids[b + j]).count();
                pairs += 1;
            }
            f0 += len;
        }
        n as f64 / pairs.max(1) as f64
    };
    let kept: Vec<u32> = (0..k as u32).filter(|&c| live[c as usize]).collect();
    let report = PruneReport {
        codes_before: k,
        codes_after: kept.len(),
        used_before,
        frames,
        psnr_before,
        psnr_after: psnr(&err),
        changed_per_frame_before: changed(&orig),
        changed_per_frame_after: changed(&ids),
        max_psnr_drop,
    };
    Ok((kept, report))
}

/// `[B, D, h, w]` → `[B·h·w, D]` (the quantiser's row order).
fn flat_rows(h: &Tensor) -> Result<Tensor> {
    let (b, d, gh, gw) = h.dims4()?;
    Ok(h.permute((0, 2, 3, 1))?.reshape((b * gh * gw, d))?)
}

/// Prunes a [`VQModel`]'s codebook on sample clips (see the module docs).
///
/// Returns the pruned codebook as stored (`[K', D]`, the kept rows in their old order) and the
/// report; write it with [`write_folder_with_codebook`].
///
/// # Shapes
/// Each clip `[T, C, H, W]` in `[-1, 1]` (the model's input); the round trip is compared in
/// 0–255 units after clamping to `[-1, 1]`.
///
/// # Errors
/// No clips, clips of another size, model errors.
pub fn prune_vqmodel(
    model: &VQModel,
    clips: &[Tensor],
    max_psnr_drop: f64,
) -> Result<(Tensor, PruneReport)> {
    if clips.is_empty() {
        return Err(Error::invalid("prune sample", "no clips"));
    }
    let x = Tensor::cat(clips, 0)?;
    let clip_lens: Vec<usize> = clips
        .iter()
        .map(|c| c.dim(0))
        .collect::<candle_core::Result<_>>()?;
    let (n, ch, hh, ww) = x.dims4()?;
    let normalise = model.quantizer().config().l2_normalize;
    let mut rows = Vec::new();
    let mut grid = (0, 0);
    for start in (0..n).step_by(64) {
        let h = model.encode(&x.narrow(0, start, 64.min(n - start))?)?;
        grid = (h.dim(2)?, h.dim(3)?);
        let r = flat_rows(&h)?.to_dtype(DType::F32)?;
        rows.push(if normalise {
            r.broadcast_div(&(r.sqr()?.sum_keepdim(1)?.sqrt()? + 1e-12)?)?
        } else {
            r
        });
    }
    let latents = Tensor::cat(&rows, 0)?;
    let codebook = model.quantizer().effective_codebook()?;
    let cells = grid.0 * grid.1;
    let dev = x.device().clone();
    let target = x.to_dtype(DType::F32)?.clamp(-1f32, 1f32)?;
    let mut sq_err = |ids: &[u32], which: &[usize]| -> Result<Vec<f64>> {
        let t = Tensor::from_vec(ids.to_vec(), (which.len(), grid.0, grid.1), &dev)?;
        let dec = model
            .detokenize(&t)?
            .to_dtype(DType::F32)?
            .clamp(-1f32, 1f32)?;
        let mut out = Vec::with_capacity(which.len());
        for (j, &f) in which.iter().enumerate() {
            let diff = ((dec.i(j)? - target.i(f)?)? * 127.5)?;
            out.push(f64::from(diff.sqr()?.sum_all()?.to_scalar::<f32>()?));
        }
        Ok(out)
    };
    let sample = PruneSample {
        codebook: &codebook,
        latents: &latents,
        cells,
        clip_lens: &clip_lens,
        values_per_frame: ch * hh * ww,
    };
    let (kept, report) = prune_codes(&sample, max_psnr_drop, &mut sq_err)?;
    let idx = Tensor::from_vec(kept.clone(), kept.len(), &Device::Cpu)?;
    let stored = model
        .quantizer()
        .codebook()
        .to_device(&Device::Cpu)?
        .index_select(&idx, 0)?;
    Ok((stored, report))
}

/// The weights file of a diffusers `VQModel` folder.
pub const WEIGHTS_FILE: &str = "diffusion_pytorch_model.safetensors";

/// Writes the diffusers `VQModel` folder `src` to `dst` (which may be `src`) with its codebook
/// replaced by `codebook` (`[K', D]`, stored in the folder's dtype) and `num_vq_embeddings` set
/// to `K'`; every other tensor and config field is kept.
///
/// # Errors
/// An unreadable or malformed folder, a codebook of another width, write errors.
pub fn write_folder_with_codebook(src: &Path, dst: &Path, codebook: &Tensor) -> Result<()> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let cfg_path = src.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(io(&cfg_path))?;
    let mut cfg: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| Error::config("config.json", e.to_string()))?;
    cfg["num_vq_embeddings"] = serde_json::json!(codebook.dim(0)?);
    let mut tensors = candle_core::safetensors::load(src.join(WEIGHTS_FILE), &Device::Cpu)?;
    let old = tensors
        .get("quantize.embedding.weight")
        .ok_or_else(|| Error::invalid("VQModel folder", "no quantize.embedding.weight"))?;
    if old.rank() != 2 || codebook.rank() != 2 || old.dim(1)? != codebook.dim(1)? {
        return Err(Error::shape(
            "quantize.embedding.weight",
            old.dims(),
            codebook.dims(),
        ));
    }
    let dtype = old.dtype();
    tensors.insert(
        "quantize.embedding.weight".into(),
        codebook.to_device(&Device::Cpu)?.to_dtype(dtype)?,
    );
    std::fs::create_dir_all(dst).map_err(io(dst))?;
    let text = serde_json::to_string_pretty(&cfg)
        .map_err(|e| Error::config("config.json", e.to_string()))?;
    let p = dst.join("config.json");
    std::fs::write(&p, text + "\n").map_err(io(&p))?;
    candle_core::safetensors::save(&tensors, dst.join(WEIGHTS_FILE))?;
    Ok(())
}
