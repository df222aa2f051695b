//! VIDiff (work in progress).
#![allow(missing_docs)]
pub struct VidiffCall;
pub struct VidiffOutput;
pub struct VidiffPipeline;
