//! Where the time of the ViT-B/32 towers goes (random weights, the bench's inputs):
//! `cargo run --release -p vidgen-clip-encoders --example profile_towers`.
//! Times the whole forward, then each stage of one encoder layer on the same activations.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use vidgen_clip_encoders::{
    CLIPTextConfig, CLIPTextModel, CLIPVisionConfig, CLIPVisionModelWithProjection,
};
use vidgen_video_nn::{Activation, LayerNorm, Linear, MhaConfig, MultiHeadAttention};

fn time<T>(what: &str, reps: usize, mut f: impl FnMut() -> T) {
    f();
    let t0 = Instant::now();
    for _ in 0..reps {
        std::hint::black_box(f());
    }
    println!(
        "{what:<40} {:>9.3} ms",
        t0.elapsed().as_secs_f64() * 1e3 / reps as f64
    );
}

/// A builder over plain tensors (random values from a `VarMap`, detached): the layers then
/// take their inference paths, as with a loaded checkpoint.
fn frozen<T>(dev: &Device, build: impl Fn(candle_nn::VarBuilder<'static>) -> T) -> T {
    build(vidgen_video_nn::seeded_var_builder(0, DType::F32, dev))
}

fn layer_parts(
    tag: &str,
    x: &Tensor,
    d: usize,
    heads: usize,
    ffn: usize,
    act: Activation,
    causal: bool,
) {
    let (ln, mha, fc1, fc2) = frozen(x.device(), |vb| {
        (
            LayerNorm::new(d, 1e-5, true, vb.pp("ln")).unwrap(),
            MultiHeadAttention::new(&MhaConfig::clip(d, heads), vb.pp("attn")).unwrap(),
            Linear::new(d, ffn, true, vb.pp("fc1")).unwrap(),
            Linear::new(ffn, d, true, vb.pp("fc2")).unwrap(),
        )
    });
    let h = fc1.forward(x).unwrap();
    time(&format!("{tag} layer_norm"), 20, || ln.forward(x).unwrap());
    time(
        &format!("{tag} self_attn (q,k,v,out + attention)"),
        10,
        || mha.forward(x, None, None, causal).unwrap(),
    );
    time(&format!("{tag} fc1"), 10, || fc1.forward(x).unwrap());
    time(&format!("{tag} activation {act:?}"), 20, || {
        act.forward(&h).unwrap()
    });
    time(&format!("{tag} fc2"), 10, || fc2.forward(&h).unwrap());
    time(&format!("{tag} residual add"), 20, || (x + x).unwrap());
}

fn main() {
    let dev = Device::Cpu;
    let text = frozen(&dev, |vb| {
        CLIPTextModel::new(&CLIPTextConfig::default(), vb).unwrap()
    });
    let ids = Tensor::from_vec(
        (0..8 * 77)
            .map(|i| (i * 7919 % 49_000) as u32)
            .collect::<Vec<_>>(),
        (8, 77),
        &dev,
    )
    .unwrap();
    time("text forward [8, 77]", 3, || text.forward(&ids).unwrap());
    let vision = frozen(&dev, |vb| {
        CLIPVisionModelWithProjection::new(&CLIPVisionConfig::default(), vb).unwrap()
    });
    let px = Tensor::randn(0f32, 1.0, (8, 3, 224, 224), &dev).unwrap();
    time("vision forward [8, 3, 224, 224]", 3, || {
        vision.forward(&px).unwrap()
    });

    let xt = Tensor::randn(0f32, 1.0, (8, 77, 512), &dev).unwrap();
    layer_parts("text", &xt, 512, 8, 2048, Activation::QuickGelu, true);
    let xv = Tensor::randn(0f32, 1.0, (8, 50, 768), &dev).unwrap();
    layer_parts("vision", &xv, 768, 12, 3072, Activation::Gelu, false);
}
