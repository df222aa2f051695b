//! Optimisation: [`AdamW`] (decoupled weight decay, PyTorch's update order, state that can be
//! saved and restored exactly), [`Gradients`] accumulated over micro-batches with clipping by
//! global norm, the learning-rate schedule ([`LrSchedule`]) and the [`Ema`] of the trained
//! weights.
//!
//! Optimiser state, accumulated gradients and EMA weights are plain `f32` vectors (one per
//! trainable variable), updated by fused loops over all elements on rayon: one pass per
//! update instead of a dozen tensor operations, and bytes that save and load exactly.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vidgen_video_core::{Error, Result};

/// Elements per rayon task in the fused loops.
const CHUNK: usize = 1 << 14;

/// A variable's values as a host `f32` vector.
pub(crate) fn to_host(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?
        .to_device(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

/// Writes host values back into a variable (its shape, dtype and device).
pub(crate) fn set_var(var: &Var, values: Vec<f32>) -> Result<()> {
    let t = Tensor::from_vec(values, var.shape(), &Device::Cpu)?
        .to_dtype(var.dtype())?
        .to_device(var.device())?;
    var.set(&t)?;
    Ok(())
}

/// Gradients of the trainable variables, summed over the micro-batches of one optimiser step.
#[derive(Debug, Clone, Default)]
pub struct Gradients {
    grads: BTreeMap<String, Vec<f32>>,
}

impl Gradients {
    /// No gradients yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `scale · ∂loss/∂var` for every variable of `vars` (a variable the loss does not
    /// reach gets a zero gradient, as PyTorch's optimisers skip it only when `.grad` is
    /// `None`; AdamW still decays it, which is what `torch.optim.AdamW` does for a zero grad).
    ///
    /// # Errors
    /// Device copies.
    pub fn accumulate(
        &mut self,
        grads: &GradStore,
        vars: &[(String, Var)],
        scale: f32,
    ) -> Result<()> {
        for (name, var) in vars {
            let n = var.elem_count();
            let acc = self
                .grads
                .entry(name.clone())
                .or_insert_with(|| vec![0f32; n]);
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = to_host(g)?;
                if g.len() != n {
                    return Err(Error::shape(
                        format!("gradient of {name}"),
                        var.dims(),
                        &[g.len()],
                    ));
                }
                acc.par_chunks_mut(CHUNK)
                    .zip(g.par_chunks(CHUNK))
                    .for_each(|(a, g)| {
                        if scale == 1.0 {
                            a.iter_mut().zip(g).for_each(|(a, g)| *a += g);
                        } else {
                            a.iter_mut().zip(g).for_each(|(a, g)| *a += g * scale);
                        }
                    });
            }
        }
        Ok(())
    }

    /// The gradient of `name`.
    pub fn get(&self, name: &str) -> Option<&[f32]> {
        self.grads.get(name).map(Vec::as_slice)
    }

    /// The global L2 norm `√Σ g²` over every gradient (accumulated in f64).
    pub fn global_norm(&self) -> f64 {
        self.grads
            .values()
            .map(|g| {
                // Chunk sums in parallel, added in chunk order: a parallel `sum` would add
                // them in an order that depends on work stealing, and the norm (which scales
                // every gradient when clipping) would differ in its last bits between runs.
                let parts: Vec<f64> = g
                    .par_chunks(CHUNK)
                    .map(|c| c.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>())
                    .collect();
                parts.iter().sum::<f64>()
            })
            .sum::<f64>()
            .sqrt()
    }

    /// Clips by global norm as `torch.nn.utils.clip_grad_norm_`: when the norm exceeds
    /// `max_norm`, every gradient is scaled by `max_norm / (norm + 1e-6)`. Returns the norm
    /// before clipping.
    pub fn clip_global_norm(&mut self, max_norm: f64) -> f64 {
        let norm = self.global_norm();
        let coef = max_norm / (norm + 1e-6);
        if coef < 1.0 {
            let c = coef as f32;
            for g in self.grads.values_mut() {
                g.par_chunks_mut(CHUNK)
                    .for_each(|x| x.iter_mut().for_each(|v| *v *= c));
            }
        }
        norm
    }

    /// True when any gradient holds NaN or infinity.
    pub fn has_non_finite(&self) -> bool {
        self.grads
            .values()
            .any(|g| g.par_iter().any(|v| !v.is_finite()))
    }

    /// Replaces every gradient by its mean over the ranks of `group` (data-parallel
    /// training): one all-reduce of all gradients, flattened in name order, then `1 / world`.
    ///
    /// # Errors
    /// Backend failures.
    pub fn all_reduce_mean(&mut self, group: &dyn vidgen_collective::Collective) -> Result<()> {
        let world = group.world_size();
        if world == 1 {
            return Ok(());
        }
        let total: usize = self.grads.values().map(Vec::len).sum();
        let mut flat = Vec::with_capacity(total);
        for g in self.grads.values() {
            flat.extend_from_slice(g);
        }
        group.all_reduce_sum_f32(&mut flat)?;
        let inv = 1.0 / world as f32;
        let mut at = 0;
        for g in self.grads.values_mut() {
            let n = g.len();
            g.iter_mut()
                .zip(&flat[at..at + n])
                .for_each(|(d, s)| *d = s * inv);
            at += n;
        }
        Ok(())
    }

    /// Forgets every gradient (the next step starts from zero).
    pub fn clear(&mut self) {
        self.grads.clear();
    }
}

/// AdamW's hyper-parameters (PyTorch's defaults except the weight decay, 0.01 as in
/// diffusers' training scripts and `torch.optim.AdamW`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AdamWConfig {
    /// β₁ (first-moment decay).
    pub beta1: f64,
    /// β₂ (second-moment decay).
    pub beta2: f64,
    /// ε added to the denominator.
    pub eps: f64,
    /// Decoupled weight decay λ: `θ ← θ·(1 − lr·λ)` before the Adam update.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 1e-2,
        }
    }
}

impl AdamWConfig {
    /// Checks the ranges.
    ///
    /// # Errors
    /// [`Error::BadConfig`] naming the field.
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [("beta1", self.beta1), ("beta2", self.beta2)] {
            if !(0.0..1.0).contains(&v) {
                return Err(Error::config(name, format!("{v} is not in [0, 1)")));
            }
        }
        if !(self.eps > 0.0 && self.eps.is_finite()) {
            return Err(Error::config("eps", format!("{} must be > 0", self.eps)));
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err(Error::config(
                "weight_decay",
                format!("{} must be >= 0", self.weight_decay),
            ));
        }
        Ok(())
    }
}

/// AdamW with decoupled weight decay (Loshchilov & Hutter), the update of
/// `torch.optim.AdamW` (single-tensor path, float32), element by element:
///
/// ```text
/// θ ← θ·(1 − lr·λ)
/// m ← m + (1 − β₁)(g − m)            (torch's lerp)
/// v ← β₂·v + (1 − β₂)·g²
/// θ ← θ − (lr / (1 − β₁ᵗ)) · m / (√v / √(1 − β₂ᵗ) + ε)
/// ```
///
/// The state (`t` and the moments of every variable) saves to and loads from tensors
/// bit-exactly, so a resumed run continues the same trajectory.
#[derive(Debug, Clone)]
pub struct AdamW {
    cfg: AdamWConfig,
    t: u64,
    m: BTreeMap<String, Vec<f32>>,
    v: BTreeMap<String, Vec<f32>>,
}

impl AdamW {
    /// A fresh optimiser.
    ///
    /// # Errors
    /// An invalid config.
    pub fn new(cfg: AdamWConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            cfg,
            t: 0,
            m: BTreeMap::new(),
            v: BTreeMap::new(),
        })
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &AdamWConfig {
        &self.cfg
    }

    /// Updates taken so far.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// One update of every variable in `vars` with the gradients in `grads` at learning rate
    /// `lr` (a variable without a gradient is treated as having a zero one).
    ///
    /// # Errors
    /// A gradient of the wrong length; device copies.
    pub fn step(&mut self, vars: &[(String, Var)], grads: &Gradients, lr: f64) -> Result<()> {
        self.t += 1;
        let t = self.t as i32;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        let step_size = (lr / bc1) as f32;
        let bc2_sqrt = bc2.sqrt() as f32;
        let decay = (1.0 - lr * c.weight_decay) as f32;
        let (b1w, b2, b2w) = (
            (1.0 - c.beta1) as f32,
            c.beta2 as f32,
            (1.0 - c.beta2) as f32,
        );
        let eps = c.eps as f32;
        for (name, var) in vars {
            let n = var.elem_count();
            let mut p = to_host(var.as_tensor())?;
            let zero;
            let g: &[f32] = match grads.get(name) {
                Some(g) if g.len() == n => g,
                Some(g) => {
                    return Err(Error::shape(
                        format!("gradient of {name}"),
                        &[n],
                        &[g.len()],
                    ))
                }
                None => {
                    zero = vec![0f32; n];
                    &zero
                }
            };
            let m = self.m.entry(name.clone()).or_insert_with(|| vec![0f32; n]);
            let v = self.v.entry(name.clone()).or_insert_with(|| vec![0f32; n]);
            if m.len() != n || v.len() != n {
                return Err(Error::shape(
                    format!("AdamW state of {name}"),
                    &[n],
                    &[m.len()],
                ));
            }
            p.par_chunks_mut(CHUNK)
                .zip(g.par_chunks(CHUNK))
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .for_each(|(((p, g), m), v)| {
                    for i in 0..p.len() {
                        let gi = g[i];
                        let pi = p[i] * decay;
                        let mi = m[i] + b1w * (gi - m[i]);
                        let vi = v[i] * b2 + b2w * gi * gi;
                        let denom = vi.sqrt() / bc2_sqrt + eps;
                        p[i] = pi - step_size * (mi / denom);
                        m[i] = mi;
                        v[i] = vi;
                    }
                });
            set_var(var, p)?;
        }
        Ok(())
    }

    /// The state as tensors: `exp_avg.<name>`, `exp_avg_sq.<name>` (f32, flat) and `step`
    /// (`[1]` u32 pair, low and high words), for a safetensors file.
    ///
    /// # Errors
    /// Tensor creation.
    pub fn state_tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (k, m) in &self.m {
            out.insert(
                format!("exp_avg.{k}"),
                Tensor::from_slice(m, m.len(), &Device::Cpu)?,
            );
        }
        for (k, v) in &self.v {
            out.insert(
                format!("exp_avg_sq.{k}"),
                Tensor::from_slice(v, v.len(), &Device::Cpu)?,
            );
        }
        let words = [self.t as u32, (self.t >> 32) as u32];
        out.insert("step".into(), Tensor::from_slice(&words, 2, &Device::Cpu)?);
        Ok(out)
    }

    /// Restores the state written by [`AdamW::state_tensors`].
    ///
    /// # Errors
    /// A missing `step` or a tensor of another dtype ([`Error::Malformed`] naming `file`).
    pub fn load_state_tensors(
        &mut self,
        state: &BTreeMap<String, Tensor>,
        file: &std::path::Path,
    ) -> Result<()> {
        let bad = |reason: String| Error::Malformed {
            path: file.to_path_buf(),
            reason,
        };
        let step = state
            .get("step")
            .ok_or_else(|| bad("no `step` tensor".into()))?
            .to_vec1::<u32>()
            .map_err(|e| bad(format!("`step`: {e}")))?;
        if step.len() != 2 {
            return Err(bad("`step` must hold 2 words".into()));
        }
        self.t = u64::from(step[0]) | (u64::from(step[1]) << 32);
        self.m.clear();
        self.v.clear();
        for (k, t) in state {
            let vals = || -> Result<Vec<f32>> {
                t.to_vec1::<f32>().map_err(|e| bad(format!("`{k}`: {e}")))
            };
            if let Some(name) = k.strip_prefix("exp_avg_sq.") {
                self.v.insert(name.to_string(), vals()?);
            } else if let Some(name) = k.strip_prefix("exp_avg.") {
                self.m.insert(name.to_string(), vals()?);
            }
        }
        Ok(())
    }
}

/// The learning-rate curve after warm-up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LrDecay {
    /// Constant (transformers' `constant_with_warmup`).
    #[default]
    Constant,
    /// Half a cosine from the peak to 0 at the last step (transformers' `cosine`).
    Cosine,
}

/// Linear warm-up then constant or cosine learning rate, as transformers' `get_scheduler`
/// (`get_constant_schedule_with_warmup`, `get_cosine_schedule_with_warmup`), which the
/// diffusers training scripts use. Step `k` (0-based optimiser step) runs at
/// `lr · k / warmup` during warm-up (so the first step of a warm-up is at zero, as there),
/// then at `lr` or `lr · ½(1 + cos(π·(k − warmup)/(total − warmup)))`.
///
/// ```
/// use vidgen_trainer::{LrDecay, LrSchedule};
/// let s = LrSchedule { peak: 1e-3, warmup: 10, total: 110, decay: LrDecay::Cosine };
/// assert_eq!(s.at(0), 0.0);
/// assert!((s.at(5) - 5e-4).abs() < 1e-12);
/// assert!((s.at(10) - 1e-3).abs() < 1e-12);
/// assert!((s.at(60) - 5e-4).abs() < 1e-12);
/// assert!(s.at(110).abs() < 1e-12);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LrSchedule {
    /// The peak learning rate.
    pub peak: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// Total optimiser steps (the end of the cosine).
    pub total: usize,
    /// The curve after warm-up.
    pub decay: LrDecay,
}

impl LrSchedule {
    /// The learning rate of optimiser step `k` (0-based).
    pub fn at(&self, k: usize) -> f64 {
        if k < self.warmup {
            return self.peak * k as f64 / self.warmup.max(1) as f64;
        }
        match self.decay {
            LrDecay::Constant => self.peak,
            LrDecay::Cosine => {
                let span = self.total.saturating_sub(self.warmup).max(1) as f64;
                let progress = (k - self.warmup) as f64 / span;
                self.peak * (0.5 * (1.0 + (std::f64::consts::PI * progress).cos())).max(0.0)
            }
        }
    }
}

/// The exponential moving average of the trained weights, as diffusers' `EMAModel`
/// (`use_ema_warmup = False`, `update_after_step = 0`): at its `n`-th update the decay is
/// `min(decay, (1 + (n − 1)) / (10 + (n − 1)))` (0 at the first update, which copies the
/// weights), and `ema ← ema − (1 − decay)·(ema − θ)`.
#[derive(Debug, Clone)]
pub struct Ema {
    decay: f64,
    updates: u64,
    shadow: BTreeMap<String, Vec<f32>>,
}

impl Ema {
    /// An EMA with maximum decay `decay` (e.g. 0.9999).
    ///
    /// # Errors
    /// `decay` outside `[0, 1]`.
    pub fn new(decay: f64) -> Result<Self> {
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::config(
                "ema_decay",
                format!("{decay} is not in [0, 1]"),
            ));
        }
        Ok(Self {
            decay,
            updates: 0,
            shadow: BTreeMap::new(),
        })
    }

    /// The decay of the next update.
    pub fn next_decay(&self) -> f64 {
        let step = self.updates as f64; // (updates + 1) − 1
        if step <= 0.0 {
            return 0.0;
        }
        ((1.0 + step) / (10.0 + step)).min(self.decay)
    }

    /// Moves the average towards the current values of `vars`.
    ///
    /// # Errors
    /// Device copies.
    pub fn update(&mut self, vars: &[(String, Var)]) -> Result<()> {
        let d = self.next_decay();
        self.updates += 1;
        let one_minus = (1.0 - d) as f32;
        for (name, var) in vars {
            let p = to_host(var.as_tensor())?;
            match self.shadow.get_mut(name) {
                Some(s) if s.len() == p.len() => {
                    s.par_chunks_mut(CHUNK)
                        .zip(p.par_chunks(CHUNK))
                        .for_each(|(s, p)| {
                            s.iter_mut()
                                .zip(p)
                                .for_each(|(s, p)| *s -= one_minus * (*s - p))
                        });
                }
                _ => {
                    self.shadow.insert(name.clone(), p);
                }
            }
        }
        Ok(())
    }

    /// Updates made so far.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    /// The averaged weights, shaped like `vars` (names as theirs).
    ///
    /// # Errors
    /// A variable never averaged; tensor creation.
    pub fn tensors(&self, vars: &[(String, Var)]) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, var) in vars {
            let s = self
                .shadow
                .get(name)
                .ok_or_else(|| Error::invalid("ema", format!("`{name}` was never averaged")))?;
            out.insert(
                name.clone(),
                Tensor::from_slice(s, var.shape(), &Device::Cpu)?,
            );
        }
        Ok(out)
    }

    /// Restores the average from saved tensors (`updates` as saved in the run state).
    ///
    /// # Errors
    /// A tensor that is not f32.
    pub fn load(&mut self, tensors: &BTreeMap<String, Tensor>, updates: u64) -> Result<()> {
        self.shadow.clear();
        for (k, t) in tensors {
            self.shadow.insert(k.clone(), to_host(t)?);
        }
        self.updates = updates;
        Ok(())
    }
}
