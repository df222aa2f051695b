//! # adapters
//!
//! Parameter-efficient additions to video diffusion UNets (planned; see the adapters issue):
//! the AID spatial, short-term (depthwise 3D convolution) and long-term (temporal attention)
//! adapters with zero-initialised up-projections, the DQFormer condition encoder, multimodal
//! instruction encoders (image embedding through an MLP concatenated with text), and tools to
//! freeze a model and count its trainable parameters.
