//! Attention sites (where hooks run) of every UNet layout, computed from configs alone.

use vidgen_video_core::AttentionSite;

/// The layout of a symmetric UNet's transformers, in the terms every diffusers UNet shares.
pub(crate) struct SiteLayout<'a> {
    /// Channels per level (encoder order).
    pub channels: &'a [usize],
    /// Whether each down block (encoder order) has transformers.
    pub down_attn: &'a [bool],
    /// Whether each up block (decoder order) has transformers.
    pub up_attn: &'a [bool],
    /// ResNets (= transformers) per down block, encoder order; up blocks have one more.
    pub layers: &'a [usize],
    /// Transformer layers per site, per down block (encoder order).
    pub transformer_layers: &'a [usize],
    /// Transformer layers of the mid block's site, `None` when the mid block has none.
    pub mid_layers: Option<usize>,
}

/// Every site in forward order: `down_blocks.i.attentions.j`, `mid_block.attentions.0`,
/// `up_blocks.i.attentions.j` (up blocks walk the levels reversed and have one more layer).
pub(crate) fn sites(l: &SiteLayout<'_>) -> Vec<AttentionSite> {
    let n = l.channels.len();
    let mut out = Vec::new();
    for i in 0..n {
        if l.down_attn.get(i).copied().unwrap_or(false) {
            for j in 0..l.layers[i] {
                out.push(AttentionSite {
                    path: format!("down_blocks.{i}.attentions.{j}"),
                    channels: l.channels[i],
                    layers: l.transformer_layers[i],
                });
            }
        }
    }
    if let Some(m) = l.mid_layers {
        out.push(AttentionSite {
            path: "mid_block.attentions.0".into(),
            channels: l.channels[n - 1],
            layers: m,
        });
    }
    for i in 0..n {
        let ri = n - 1 - i;
        if l.up_attn.get(i).copied().unwrap_or(false) {
            for j in 0..l.layers[ri] + 1 {
                out.push(AttentionSite {
                    path: format!("up_blocks.{i}.attentions.{j}"),
                    channels: l.channels[ri],
                    layers: l.transformer_layers[ri],
                });
            }
        }
    }
    out
}
