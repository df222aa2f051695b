//! Sanity bounds on the sizes a config may ask for, far above every published checkpoint, so
//! that a corrupt or hostile `config.json` gets a typed error instead of an arithmetic overflow
//! or a loop / allocation of billions of layers.

use vidgen_video_core::{Error, Result};

/// Resolutions (blocks) of a UNet or VAE; published models have 2–5.
pub(crate) const MAX_LEVELS: usize = 16;
/// Layers (ResNets, transformer blocks, motion modules) per block; SDXL has 10.
pub(crate) const MAX_LAYERS: usize = 256;
/// Any width: channels, context and embedding dimensions; SD uses up to 2048.
pub(crate) const MAX_WIDTH: usize = 1 << 16;
/// Rows of a sinusoidal frame-position table; AnimateDiff uses 32.
pub(crate) const MAX_POSITIONS: usize = 1 << 16;

/// `Err(BadConfig)` naming `field` when `value > max`.
pub(crate) fn at_most(field: &str, value: usize, max: usize) -> Result<()> {
    if value > max {
        return Err(Error::config(
            field,
            format!("{value} exceeds the sanity limit of {max}"),
        ));
    }
    Ok(())
}

/// [`at_most`] for every entry of a list (the entry named `field[i]`).
pub(crate) fn all_at_most(field: &str, values: &[usize], max: usize) -> Result<()> {
    for (i, &v) in values.iter().enumerate() {
        at_most(&format!("{field}[{i}]"), v, max)?;
    }
    Ok(())
}
