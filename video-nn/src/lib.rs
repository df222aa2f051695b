#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

pub mod attention;
pub mod embeddings;
pub mod init;
pub mod mha;
pub mod nn;
pub mod record;
pub mod resnet;
pub mod transformer2d;
pub mod vae;

pub use attention::{
    Attention, AttentionConfig, BasicTransformerBlock, BasicTransformerBlockConfig, FeedForward,
    FeedForwardActivation, SinusoidalPositionalEmbedding,
};
pub use embeddings::{timestep_embedding, TimestepEmbedding, Timesteps};
pub use init::{reinit_var_map, seeded_var_builder, SeededVarMap};
pub use mha::{MhaConfig, MultiHeadAttention};
pub use nn::{
    geglu, swiglu, to_f32, Activation, Conv2d, Conv2dConfig, Conv3d, Conv3dConfig, Embedding,
    GroupNorm, LayerNorm, Linear, RmsNorm, TemporalConv,
};
pub use resnet::{
    upsample_nearest2x, Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, ResnetBlockCondNorm2D,
    SpatialNorm, TimeEmbeddingNorm, Upsample2D,
};
pub use transformer2d::{Transformer2DConfig, Transformer2DModel};
pub use vae::{Decoder, DecoderConfig, Encoder, EncoderConfig, VaeMidBlock};

/// Maps a vidgen error into a candle error (for `candle_nn::Module` impls).
pub(crate) fn into_candle(e: vidgen_video_core::Error) -> candle_core::Error {
    match e {
        vidgen_video_core::Error::Candle(c) => c,
        other => candle_core::Error::wrap(other),
    }
}

mod count;
pub use count::count_by_construction;
