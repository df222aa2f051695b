//! `vidgen icl`: Vid-ICL in-context video generation on a diffusers `VQModel` folder and a
//! Llama checkpoint (transformers folder or GGUF): demo clip(s) + a query clip → the query's
//! continuation.

use std::path::{Path, PathBuf};

use candle_core::Tensor;
use vidgen_clip_encoders::{CLIPTextModel, CLIPTokenizer};
use vidgen_llama_video::SamplingConfig;
use vidgen_pipelines::vidicl::{prepare_video, VidIclCall, VidIclPipeline};
use vidgen_video_core::{Error, Result};
use vidgen_video_io::{PixelRange, Video};

use super::edit::read_video;
use super::{device, write_output, Common, Timings};
use crate::vidicl::instruct::{InstructionEncoder, TextEncoderSpec};

/// Arguments of `vidgen icl`.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// The frame tokenizer: a diffusers `VQModel` folder.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// The decoder: a transformers Llama folder (with `text_projection.safetensors` for text)
    /// or a `.gguf` file.
    #[arg(long)]
    pub model: PathBuf,
    /// A demonstration clip (GIF, PNG folder, or mp4 etc. with the `ffmpeg` feature);
    /// repeat for several, in order.
    #[arg(long)]
    pub demo: Vec<PathBuf>,
    /// The query clip, which the generated frames continue.
    #[arg(long)]
    pub query: PathBuf,
    /// Frames to generate.
    #[arg(long, default_value_t = 4)]
    pub frames: usize,
    /// Resize and centre-crop every clip to WIDTHxHEIGHT (multiples of the tokenizer's
    /// stride); default: centre-crop to the largest multiples of the stride.
    #[arg(long, value_parser = parse_size)]
    pub size: Option<(u32, u32)>,
    /// Keep every K-th frame of each clip (before the limits below).
    #[arg(long, default_value_t = 1)]
    pub frame_step: usize,
    /// Keep at most the first N frames of each demo.
    #[arg(long)]
    pub demo_frames: Option<usize>,
    /// Keep at most the last N frames of the query.
    #[arg(long)]
    pub query_frames: Option<usize>,
    /// Vocabulary id of code 0 (a Llama whose vocabulary starts with text tokens).
    #[arg(long, default_value_t = 0)]
    pub token_offset: u32,
    /// Sampling temperature (0: greedy).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Top-k truncation.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Top-p (nucleus) truncation.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Repetition penalty (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// An instruction used as a text prefix ("move left"); needs `--text-encoder`.
    #[arg(long)]
    pub instruction: Option<String>,
    /// The text encoder: a transformers CLIP text folder (with its tokenizer, or a
    /// `tokenizer/` inside), or a miniature folder holding `text_encoder.json`.
    #[arg(long)]
    pub text_encoder: Option<PathBuf>,
    /// Classifier-free guidance scale against a zeroed text prefix (1: off).
    #[arg(long, default_value_t = 1.0)]
    pub guidance: f64,
    /// Write the query's frames before the generated ones.
    #[arg(long)]
    pub include_query: bool,
    #[command(flatten)]
    /// Shared flags.
    pub common: Common,
}

fn parse_size(s: &str) -> std::result::Result<(u32, u32), String> {
    let (w, h) = s
        .split_once(['x', 'X'])
        .ok_or_else(|| format!("{s:?}: expected WIDTHxHEIGHT"))?;
    let p = |v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{s:?}: expected WIDTHxHEIGHT"))
    };
    Ok((p(w)?, p(h)?))
}

/// Reads a clip and applies the frame step and the head / tail limit.
fn load_clip(path: &Path, step: usize, keep: Option<usize>, tail: bool) -> Result<Video> {
    let v = read_video(path, None)?;
    let v = if step > 1 { v.subsample(0, step)? } else { v };
    match keep {
        Some(0) => Err(Error::invalid(
            "--demo-frames / --query-frames",
            "must be >= 1",
        )),
        Some(n) if n < v.len() => {
            if tail {
                v.slice(v.len() - n, v.len())
            } else {
                v.slice(0, n)
            }
        }
        _ => Ok(v),
    }
}

/// Embeds the instruction with the text encoder (`[1, L, D]`).
fn embed_instruction(dir: &Path, text: &str) -> Result<Tensor> {
    let spec_path = dir.join("text_encoder.json");
    if spec_path.is_file() {
        let spec: TextEncoderSpec = vidgen_video_core::loading::read_config(&spec_path)?;
        return InstructionEncoder::with_vendored_tokenizer(&spec)?.embed(&[text]);
    }
    let (model, _) = CLIPTextModel::from_pretrained(dir, candle_core::DType::F32, &device())?;
    let tok = CLIPTokenizer::from_dir(dir)?;
    let t = tok.encode_batch(&[text], &device())?;
    Ok(model
        .forward_masked(&t.input_ids, Some(&t.attention_mask))?
        .last_hidden_state)
}

/// Runs the subcommand; returns the `--json` report.
///
/// # Errors
/// Unreadable folders or clips (named), clips smaller than the tokenizer's stride, a prompt
/// longer than the decoder's context, invalid sampling flags (named).
pub fn run(a: &Args) -> Result<serde_json::Value> {
    let dev = device();
    let mut t = Timings::start();
    if a.frame_step == 0 {
        return Err(Error::invalid("--frame-step", "must be >= 1"));
    }
    let pipe =
        VidIclPipeline::from_pretrained(&a.tokenizer, &a.model, a.common.dtype.dtype(), &dev)?
            .with_token_offset(a.token_offset)?;
    t.mark("load");
    let stride = pipe.stride() as u32;
    let mut demos = Vec::with_capacity(a.demo.len());
    let mut demo_info = Vec::new();
    for p in &a.demo {
        let v = load_clip(p, a.frame_step, a.demo_frames, false)?;
        let x = prepare_video(&v, a.size, stride, &dev)
            .map_err(|e| Error::invalid(format!("--demo {}", p.display()), e.to_string()))?;
        demo_info.push(
            serde_json::json!({"path": p, "frames": v.len(), "size": [x.dims()[4], x.dims()[3]]}),
        );
        demos.push(x);
    }
    let qv = load_clip(&a.query, a.frame_step, a.query_frames, true)?;
    let query = prepare_video(&qv, a.size, stride, &dev)
        .map_err(|e| Error::invalid(format!("--query {}", a.query.display()), e.to_string()))?;
    let text_prefix = match (&a.instruction, &a.text_encoder) {
        (Some(text), Some(dir)) => Some(embed_instruction(dir, text)?),
        (Some(_), None) => {
            return Err(Error::invalid("--instruction", "needs --text-encoder"));
        }
        _ => None,
    };
    t.mark("read");
    let sampling = SamplingConfig {
        temperature: a.temperature,
        top_k: a.top_k,
        top_p: a.top_p,
        repetition_penalty: a.repetition_penalty,
        cfg_scale: a.guidance,
        allowed: None,
    };
    let call = VidIclCall {
        num_frames: a.frames,
        sampling,
        seed: a.common.seed,
        text_prefix,
    };
    let bar = if a.common.json {
        indicatif::ProgressBar::hidden()
    } else {
        let pb = indicatif::ProgressBar::new(a.frames as u64);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:>10} [{bar:30}] {pos}/{len} frames {per_sec} eta {eta}",
        ) {
            pb.set_style(style.progress_chars("=> "));
        }
        pb.set_message("icl");
        pb
    };
    let out = pipe.call(&demos, &query, &call, |p| {
        bar.set_position(p.frames_done as u64)
    })?;
    bar.finish_and_clear();
    t.mark("generate");
    let mut frames = vidgen_video_io::tensor_to_videos(
        &out.frames,
        PixelRange::MinusOneToOne,
        a.common.out_fps,
    )?
    .into_iter()
    .next()
    .ok_or_else(|| Error::invalid("output", "no video"))?;
    if a.include_query {
        let q =
            vidgen_video_io::tensor_to_videos(&query, PixelRange::MinusOneToOne, a.common.out_fps)?;
        if let Some(q) = q.into_iter().next() {
            let mut all = q.into_frames();
            all.extend(frames.into_frames());
            frames = Video::new(all, a.common.out_fps)?;
        }
    }
    write_output(&a.common.out, &frames)?;
    t.mark("write");
    let (_, _, n, h, w) = out.frames.dims5()?;
    Ok(serde_json::json!({
        "command": "icl",
        "tokenizer": a.tokenizer,
        "model": a.model,
        "demos": demo_info,
        "query": {"path": a.query, "frames": qv.len(), "size": [query.dims()[4], query.dims()[3]]},
        "instruction": a.instruction,
        "generated_frames": n,
        "frame_size": [w, h],
        "written_frames": frames.len(),
        "out": a.common.out,
        "prompt_tokens": out.prompt_len,
        "generated_tokens": out.generated_tokens,
        "tokens_per_s": out.tokens_per_s(),
        "seed": a.common.seed,
        "timings_s": t.phases,
        "pipeline_timings_s": {
            "encode": out.timings.encode_s,
            "generate": out.timings.generate_s,
            "decode": out.timings.decode_s,
        },
    }))
}
