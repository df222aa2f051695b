//! Does data loading keep up? Trains the same model for the same steps twice: once decoding
//! the shipped Big Buck Bunny mp4 (`vidgen_video_io::sample`) on the loader's worker thread for
//! every clip (seek + decode + resize + crop), once on the same clips already decoded in memory,
//! and prints steps per second of both and the time the loop waited for data.
//!
//! ```text
//! cargo run --release -p vidgen-trainer --features ffmpeg --example data_speed -- [small|tiny] [steps]
//! ```
//!
//! `small` is the peers' `unet3d_small` (channels 32, 64, 64, 64; 5.4 M parameters) on 16 frames
//! of 32×32 pixels; `tiny` a 2-level UNet3D of channels 16, 32 on 8 frames of 32×32, whose
//! step is short enough for decoding to matter on few cores.

use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use vidgen_diffusion_unet3d::sd::{UNet3DConditionModel, UNet3DConfig};
use vidgen_trainer::data::{
    Batch, ClipSource, ClipSpec, DataPosition, Dataset, FolderSource, Loader, LoaderConfig,
    MemorySource,
};
use vidgen_trainer::{
    fit, CondDropout, DiscreteObjective, Loss, ModelCache, Objective, OptimConfig, ParamStore,
    RunOptions, Selection, Trainer,
};
use vidgen_video_core::{Conditioning, Result};

fn unet(which: &str) -> serde_json::Value {
    if which == "tiny" {
        serde_json::json!({
            "in_channels": 3, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D"],
            "block_out_channels": [16, 32], "layers_per_block": 1, "norm_num_groups": 8,
            "cross_attention_dim": 64, "attention_head_dim": 8
        })
    } else {
        serde_json::json!({
            "in_channels": 3, "out_channels": 3,
            "down_block_types": ["CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "CrossAttnDownBlock3D", "DownBlock3D"],
            "up_block_types": ["UpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D", "CrossAttnUpBlock3D"],
            "block_out_channels": [32, 64, 64, 64], "layers_per_block": 2, "norm_num_groups": 32,
            "cross_attention_dim": 64, "attention_head_dim": 8
        })
    }
}

fn run(
    which: &str,
    source: Arc<dyn ClipSource>,
    spec: &ClipSpec,
    steps: usize,
) -> Result<(f64, f64)> {
    let dev = Device::Cpu;
    let cfg: UNet3DConfig = serde_json::from_value(unet(which))
        .map_err(|e| vidgen_video_core::Error::config("unet", e.to_string()))?;
    let store = ParamStore::new(0, &dev)
        .create(Selection::all())
        .trainable(Selection::all());
    let mut model = ModelCache::new(store.clone(), DType::F32, move |vb| {
        let m = UNet3DConditionModel::new(&cfg, vb)?;
        Ok(
            move |x: &Tensor, t: &Tensor, c: &Conditioning| -> Result<Tensor> {
                let ctx = c
                    .context
                    .as_ref()
                    .ok_or_else(|| vidgen_video_core::Error::invalid("context", "missing"))?;
                m.forward(x, t, ctx)
            },
        )
    })?;
    let mut trainer = Trainer::new(store, &OptimConfig::default(), steps, 0)?;
    let loss = Loss::new(
        Objective::Discrete(DiscreteObjective::stable_diffusion()),
        CondDropout::none(),
    )?;
    let data = Arc::new(Dataset::new(source, spec.clone())?);
    let mut loader = Loader::spawn(
        data,
        LoaderConfig {
            batch: 1,
            seed: 0,
            prefetch: 2,
        },
        DataPosition::default(),
        dev.clone(),
    )?;
    let ctx = Tensor::zeros((1, 77, 64), DType::F32, &dev)?;
    let mut prepare = |b: &Batch, _: &mut rand_chacha::ChaCha8Rng| {
        Ok((
            b.video.clone(),
            Conditioning::none().with_context(ctx.clone()),
        ))
    };
    let out = tempfile::tempdir().map_err(|e| vidgen_video_core::Error::Io {
        path: "tmp".into(),
        source: e,
    })?;
    // One untimed step (first-call allocations), then the timed ones.
    let warm = RunOptions {
        steps,
        stop_after: Some(1),
        out_dir: out.path().into(),
        checkpoint_every: None,
        progress: false,
        plot: false,
        title: String::new(),
    };
    fit(
        &mut trainer,
        &mut model,
        &loss,
        &mut loader,
        &mut prepare,
        &warm,
    )?;
    let opts = RunOptions {
        stop_after: None,
        ..warm
    };
    let s = fit(
        &mut trainer,
        &mut model,
        &loss,
        &mut loader,
        &mut prepare,
        &opts,
    )?;
    Ok((s.steps_per_second(), s.data_wait_seconds))
}

fn main() -> Result<()> {
    vidgen_trainer::prefer_rayon_threads();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("small", String::as_str).to_string();
    let steps: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(6);
    let frames = if which == "tiny" { 8 } else { 16 };
    let spec = ClipSpec {
        frames,
        stride: 2,
        random_start: true,
        width: 32,
        height: 32,
        flip: 0.5,
    };
    // The bunny mp4 as a dataset folder (one video, sampled at random starts), and the same
    // frames decoded once into memory.
    let dir = tempfile::tempdir().map_err(|e| vidgen_video_core::Error::Io {
        path: "tmp".into(),
        source: e,
    })?;
    let mp4 = dir.path().join("bunny.mp4");
    std::fs::copy(vidgen_video_io::sample::bunny_file()?, &mp4).map_err(|e| {
        vidgen_video_core::Error::Io {
            path: mp4.clone(),
            source: e,
        }
    })?;
    let folder: Arc<dyn ClipSource> = Arc::new(FolderSource::open(dir.path())?);
    let all = vidgen_video_io::read_video(&mp4, None)?;
    let memory: Arc<dyn ClipSource> = Arc::new(MemorySource::new(vec![(all, String::new())]));
    let (sm, wm) = run(&which, memory, &spec, steps)?;
    let (sf, wf) = run(&which, folder, &spec, steps)?;
    println!(
        "{which}: {steps} steps of {frames} frames at 32x32 from a 320x180 mp4: in memory {sm:.3} steps/s (waited {wm:.2} s for data), decoding mp4 {sf:.3} steps/s (waited {wf:.2} s); decoding / memory = {:.3}",
        sf / sm
    );
    Ok(())
}
