//! The training loop: [`Trainer`] (one optimiser step over accumulated micro-batches:
//! gradients, clipping, AdamW, EMA, with exact save / restore), [`ModelCache`] (the network,
//! rebuilt after each step when it computes in bf16), and [`fit`], which runs steps from a
//! [`Loader`] with logs, checkpoints and a progress bar.

use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

use candle_core::{DType, Tensor, Var};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vidgen_collective::{all_reduce_scalar, broadcast_tensor, Collective, Local};
use vidgen_samplers::Network;
use vidgen_video_core::{Conditioning, Error, Result};

use crate::checkpoint::{checkpoint_dir, Checkpoint, RngState, RunState};
use crate::data::{Batch, DataPosition, Loader};
use crate::log::{plot_loss, progress_bar, CsvLog, LogRow};
use crate::objective::Loss;
use crate::optim::{AdamW, AdamWConfig, Ema, Gradients, LrDecay, LrSchedule};
use crate::params::{ParamReport, ParamStore};

/// Optimisation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimConfig {
    /// Peak learning rate.
    pub lr: f64,
    /// Linear warm-up steps.
    pub warmup: usize,
    /// The curve after warm-up.
    pub decay: LrDecay,
    /// AdamW's β, ε and weight decay.
    pub adamw: AdamWConfig,
    /// Clip the gradients to this global L2 norm (`None`: no clipping).
    pub grad_clip: Option<f64>,
    /// Micro-batches per optimiser step (gradient accumulation).
    pub accumulation: usize,
    /// Keep an EMA of the trained weights with this maximum decay.
    pub ema_decay: Option<f64>,
}

impl Default for OptimConfig {
    fn default() -> Self {
        Self {
            lr: 1e-4,
            warmup: 0,
            decay: LrDecay::Constant,
            adamw: AdamWConfig::default(),
            grad_clip: Some(1.0),
            accumulation: 1,
            ema_decay: None,
        }
    }
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Steps completed (this one included).
    pub step: usize,
    /// Mean loss over the micro-batches.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Wall time, seconds.
    pub seconds: f64,
    /// Of which waiting for the gradient all-reduce (data-parallel training), seconds.
    pub comm_seconds: f64,
}

/// The optimiser side of a run: the trainable variables of a [`ParamStore`], AdamW, the EMA,
/// the learning-rate schedule and the run's generator (noise, σ / t, dropout, augmentation).
#[derive(Debug)]
pub struct Trainer {
    store: ParamStore,
    vars: Vec<(String, Var)>,
    opt: AdamW,
    ema: Option<Ema>,
    schedule: LrSchedule,
    cfg: OptimConfig,
    rng: ChaCha8Rng,
    step: usize,
    grads: Gradients,
    group: Group,
}

/// The process group a [`Trainer`] averages gradients over.
#[derive(Clone)]
struct Group(Rc<dyn Collective>);

impl std::fmt::Debug for Group {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} rank {} of {}",
            self.0.backend(),
            self.0.rank(),
            self.0.world_size()
        )
    }
}

impl Trainer {
    /// A trainer over the store's trainable variables (build the model once first, so that
    /// they exist), for a run of `total_steps` optimiser steps, its generator seeded by `seed`.
    ///
    /// # Errors
    /// An invalid config; no trainable variable.
    pub fn new(
        store: ParamStore,
        cfg: &OptimConfig,
        total_steps: usize,
        seed: u64,
    ) -> Result<Self> {
        if cfg.accumulation == 0 {
            return Err(Error::config("accumulation", "must be >= 1"));
        }
        if !(cfg.lr.is_finite() && cfg.lr >= 0.0) {
            return Err(Error::config("lr", format!("{} must be >= 0", cfg.lr)));
        }
        if let Some(c) = cfg.grad_clip {
            if !(c > 0.0 && c.is_finite()) {
                return Err(Error::config("grad_clip", format!("{c} must be > 0")));
            }
        }
        let vars = store.trainable_vars();
        if vars.is_empty() {
            return Err(Error::invalid(
                "trainable",
                "no variable is trainable: check the trainable patterns against the model's names",
            ));
        }
        let ema = cfg.ema_decay.map(Ema::new).transpose()?;
        Ok(Self {
            store,
            vars,
            opt: AdamW::new(cfg.adamw)?,
            ema,
            schedule: LrSchedule {
                peak: cfg.lr,
                warmup: cfg.warmup,
                total: total_steps,
                decay: cfg.decay,
            },
            cfg: cfg.clone(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            step: 0,
            grads: Gradients::new(),
            group: Group(Rc::new(Local)),
        })
    }

    /// Trains data-parallel over `group`: each step's gradients (and its logged loss) are
    /// averaged over the ranks before clipping and AdamW, so every rank applies the same
    /// update. Every rank must hold the same weights and generator state when training
    /// starts: build the model from the same seed or checkpoint, then call
    /// [`Trainer::broadcast_weights`]. Give each rank its part of every global batch
    /// ([`crate::data::Loader::spawn_shard`]); [`fit`] then writes logs and checkpoints from
    /// rank 0 only.
    pub fn with_group(mut self, group: Rc<dyn Collective>) -> Self {
        self.group = Group(group);
        self
    }

    /// The process group (a one-process [`Local`] unless [`Trainer::with_group`] set one).
    pub fn group(&self) -> &dyn Collective {
        self.group.0.as_ref()
    }

    /// Whether this rank writes logs and checkpoints (rank 0).
    pub fn is_root(&self) -> bool {
        self.group.0.rank() == 0
    }

    /// Sets every trainable variable to rank 0's values on every rank.
    ///
    /// # Errors
    /// Backend failures; tensor copies.
    pub fn broadcast_weights(&self) -> Result<()> {
        if self.group.0.world_size() == 1 {
            return Ok(());
        }
        for (_, var) in &self.vars {
            let t = broadcast_tensor(self.group.0.as_ref(), var.as_tensor(), 0)?;
            var.set(&t)?;
        }
        Ok(())
    }

    /// Steps completed.
    pub fn step_count(&self) -> usize {
        self.step
    }

    /// The store.
    pub fn store(&self) -> &ParamStore {
        &self.store
    }

    /// The trainable variables, sorted by name.
    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    /// The EMA, if kept.
    pub fn ema(&self) -> Option<&Ema> {
        self.ema.as_ref()
    }

    /// The learning-rate schedule.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// The run's generator.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }

    /// One optimiser step: `micro(k, rng)` returns the loss of micro-batch `k` (of
    /// `accumulation`); gradients of `loss / accumulation` are summed, checked for NaN /
    /// infinity, clipped, and applied by AdamW at the schedule's learning rate; then the EMA
    /// moves.
    ///
    /// # Errors
    /// The closure's errors; [`Error::NonFinite`] for non-finite gradients (nothing is
    /// updated then).
    pub fn step(
        &mut self,
        micro: &mut dyn FnMut(usize, &mut ChaCha8Rng) -> Result<Tensor>,
    ) -> Result<StepStats> {
        let t0 = Instant::now();
        self.grads.clear();
        let lr = self.schedule.at(self.step);
        let n = self.cfg.accumulation;
        let mut total = 0f64;
        for k in 0..n {
            let loss = micro(k, &mut self.rng)?;
            total += loss.to_dtype(DType::F32)?.to_scalar::<f32>()? as f64;
            // On a rayon worker, as the models' forwards run: the backward's few thousand
            // parallel ops are then nested jobs instead of injections from an outside thread
            // that sleeps until each one finishes (AID's training step: 1.25 → 1.12 s on 2
            // cores). The backward's parallel sums use fixed partitions, so the gradients are
            // the same bits wherever it runs (tests/determinism.rs, tests/resume.rs).
            let g = vidgen_video_core::in_pool(|| loss.backward())?;
            self.grads.accumulate(&g, &self.vars, 1.0 / n as f32)?;
        }
        let t_comm = Instant::now();
        if self.group.0.world_size() > 1 {
            // The mean of the ranks' gradients of their rows' mean loss is the gradient of
            // the global batch's mean loss (every rank holds the same number of rows).
            self.grads.all_reduce_mean(self.group.0.as_ref())?;
            total =
                all_reduce_scalar(self.group.0.as_ref(), total)? / self.group.0.world_size() as f64;
        }
        let comm_seconds = if self.group.0.world_size() > 1 {
            t_comm.elapsed().as_secs_f64()
        } else {
            0.0
        };
        if self.grads.has_non_finite() {
            return Err(Error::NonFinite {
                location: format!("gradients of step {}", self.step + 1),
                nan: 0,
                inf: 0,
                total: self.vars.iter().map(|(_, v)| v.elem_count()).sum(),
            });
        }
        let grad_norm = match self.cfg.grad_clip {
            Some(c) => self.grads.clip_global_norm(c),
            None => self.grads.global_norm(),
        };
        self.opt.step(&self.vars, &self.grads, lr)?;
        if let Some(e) = &mut self.ema {
            e.update(&self.vars)?;
        }
        self.step += 1;
        Ok(StepStats {
            step: self.step,
            loss: (total / n as f64) as f32,
            lr,
            grad_norm,
            seconds: t0.elapsed().as_secs_f64(),
            comm_seconds,
        })
    }

    /// Everything needed to continue from here, with the loader's next position.
    ///
    /// # Errors
    /// Tensor copies.
    pub fn checkpoint(&self, data: DataPosition) -> Result<Checkpoint> {
        Ok(Checkpoint {
            state: RunState {
                format: 1,
                step: self.step,
                data,
                rng: RngState::of(&self.rng),
                ema_updates: self.ema.as_ref().map_or(0, Ema::updates),
            },
            trainable: self.store.trainable_tensors(),
            optimizer: self.opt.state_tensors()?,
            ema: self
                .ema
                .as_ref()
                .map(|e| e.tensors(&self.vars))
                .transpose()?,
        })
    }

    /// Restores a checkpoint (weights, optimiser, EMA, generator, step) and returns its data
    /// position; `dir` names the checkpoint in errors.
    ///
    /// # Errors
    /// Missing or mis-shaped tensors, malformed state (named).
    pub fn restore(&mut self, ck: &Checkpoint, dir: &Path) -> Result<DataPosition> {
        self.store
            .load_trainable(&ck.trainable, &dir.join(crate::checkpoint::TRAINABLE_FILE))?;
        self.opt
            .load_state_tensors(&ck.optimizer, &dir.join(crate::checkpoint::OPTIMIZER_FILE))?;
        match (&mut self.ema, &ck.ema) {
            (Some(e), Some(t)) => e.load(t, ck.state.ema_updates)?,
            (Some(_), None) => {
                return Err(Error::Malformed {
                    path: dir.to_path_buf(),
                    reason: "the run keeps an EMA but the checkpoint has no ema.safetensors".into(),
                })
            }
            _ => {}
        }
        self.rng = ck
            .state
            .rng
            .restore(&dir.join(crate::checkpoint::STATE_FILE))?;
        self.step = ck.state.step;
        Ok(ck.state.data)
    }
}

/// The network of a run, built from its [`ParamStore`]. In f32 it is built once (the model
/// holds the variables themselves, which the optimiser updates in place); in another compute
/// dtype it is rebuilt after every optimiser step from fresh conversions of the f32 masters.
pub struct ModelCache<M> {
    store: ParamStore,
    dtype: DType,
    build: Box<dyn Fn(VarBuilder<'static>) -> Result<M>>,
    model: Option<M>,
}

impl<M> std::fmt::Debug for ModelCache<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ModelCache({:?}, built: {})",
            self.dtype,
            self.model.is_some()
        )
    }
}

impl<M> ModelCache<M> {
    /// Builds the model once (creating its variables in the store).
    ///
    /// # Errors
    /// The builder's errors (missing keys, bad config).
    pub fn new(
        store: ParamStore,
        dtype: DType,
        build: impl Fn(VarBuilder<'static>) -> Result<M> + 'static,
    ) -> Result<Self> {
        let build: Box<dyn Fn(VarBuilder<'static>) -> Result<M>> = Box::new(build);
        let model = Some(build(store.var_builder(dtype))?);
        Ok(Self {
            store,
            dtype,
            build,
            model,
        })
    }

    /// The model (rebuilt when stale).
    ///
    /// # Errors
    /// The builder's errors.
    pub fn get(&mut self) -> Result<&M> {
        if self.model.is_none() {
            self.model = Some((self.build)(self.store.var_builder(self.dtype))?);
        }
        self.model
            .as_ref()
            .ok_or_else(|| Error::invalid("model", "not built"))
    }

    /// Builds the model again from the store's current tensors (after
    /// [`ParamStore::zero_created`] changed frozen ones).
    ///
    /// # Errors
    /// The builder's errors.
    pub fn rebuild(&mut self) -> Result<()> {
        self.model = Some((self.build)(self.store.var_builder(self.dtype))?);
        Ok(())
    }

    /// Call after each optimiser step: a model holding converted copies is dropped.
    pub fn after_update(&mut self) {
        if self.dtype != DType::F32 {
            self.model = None;
        }
    }

    /// The compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }
}

/// Turns a batch into the clean sample `x₀` and its conditioning (VAE encoding, text
/// encoding, conditioning frames…), drawing any randomness (noise augmentation) from the
/// run's generator.
pub trait Prepare {
    /// # Shapes
    /// `batch.video [B, 3, T, H, W]` → `x₀ [B, C, T, h, w]` and a batch-first conditioning.
    fn prepare(&mut self, batch: &Batch, rng: &mut ChaCha8Rng) -> Result<(Tensor, Conditioning)>;
}

impl<F> Prepare for F
where
    F: FnMut(&Batch, &mut ChaCha8Rng) -> Result<(Tensor, Conditioning)>,
{
    fn prepare(&mut self, batch: &Batch, rng: &mut ChaCha8Rng) -> Result<(Tensor, Conditioning)> {
        self(batch, rng)
    }
}

/// How [`fit`] runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    /// Steps of the whole run (the schedule's end).
    pub steps: usize,
    /// Stop once this many steps are done (a checkpoint is written), to resume later.
    pub stop_after: Option<usize>,
    /// Output folder: `loss.csv`, `loss.png`, `checkpoints/step-N/`.
    pub out_dir: PathBuf,
    /// Write a checkpoint every this many steps (and always at the end).
    pub checkpoint_every: Option<usize>,
    /// Show the progress bar.
    pub progress: bool,
    /// Draw `loss.png` at the end.
    pub plot: bool,
    /// The plot's title.
    pub title: String,
}

/// What [`fit`] did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Every logged step of the run (resumed runs include the earlier ones).
    pub rows: Vec<LogRow>,
    /// Steps completed.
    pub steps_done: usize,
    /// Steps this session ran.
    pub session_steps: usize,
    /// Wall seconds of this session's steps.
    pub session_seconds: f64,
    /// Seconds of it spent waiting for the data worker.
    pub data_wait_seconds: f64,
    /// Seconds of it spent in the gradient all-reduce (data-parallel training; 0 on one
    /// process), which includes waiting for the slowest rank.
    pub comm_seconds: f64,
    /// The last checkpoint written.
    pub checkpoint: Option<PathBuf>,
    /// The parameter report.
    pub report: ParamReport,
}

impl RunSummary {
    /// Steps per second of this session.
    pub fn steps_per_second(&self) -> f64 {
        if self.session_seconds > 0.0 {
            self.session_steps as f64 / self.session_seconds
        } else {
            0.0
        }
    }
}

/// Runs optimiser steps from `trainer.step_count()` to `opts.steps` (or `stop_after`): each
/// micro-batch takes the next batch from `loader`, `prepare`s it and computes `loss` on the
/// model; logs every step to `loss.csv`, writes checkpoints, and draws `loss.png` at the end.
/// `trainer` may have been restored from a checkpoint (with `loader` spawned at its data
/// position): the CSV then keeps the rows up to that step.
///
/// # Errors
/// Data, model, loss and I/O errors, each naming what failed.
pub fn fit<M: Network>(
    trainer: &mut Trainer,
    model: &mut ModelCache<M>,
    loss: &Loss,
    loader: &mut Loader,
    prepare: &mut dyn Prepare,
    opts: &RunOptions,
) -> Result<RunSummary> {
    std::fs::create_dir_all(&opts.out_dir).map_err(|e| Error::Io {
        path: opts.out_dir.clone(),
        source: e,
    })?;
    let start = trainer.step_count();
    let resumed = (start > 0).then_some(start);
    // Data-parallel ranks other than 0 keep their log in memory and write nothing.
    let root = trainer.is_root();
    let mut csv = if root {
        CsvLog::open(&opts.out_dir.join("loss.csv"), resumed)?
    } else {
        CsvLog::memory()
    };
    let end = opts.stop_after.map_or(opts.steps, |s| s.min(opts.steps));
    let bar = progress_bar(opts.steps, start, opts.progress && root);
    let mut wait = 0f64;
    let mut last_ck = None;
    let t_session = Instant::now();
    let mut smooth: Option<f32> = None;
    let mut comm = 0f64;
    while trainer.step_count() < end {
        let stats = trainer.step(&mut |_, rng| {
            let t = Instant::now();
            let batch = loader.next_batch()?;
            wait += t.elapsed().as_secs_f64();
            let (x0, cond) = prepare.prepare(&batch, rng)?;
            let net = model.get()?;
            Ok(loss.compute_shard(net, &x0, &cond, rng, batch.shard)?.loss)
        })?;
        model.after_update();
        comm += stats.comm_seconds;
        csv.push((&stats).into())?;
        let s = smooth.map_or(stats.loss, |p| 0.9 * p + 0.1 * stats.loss);
        smooth = Some(s);
        bar.set_message(format!("loss {s:.4}  lr {:.2e}", stats.lr));
        bar.set_position(stats.step as u64);
        let due = opts
            .checkpoint_every
            .is_some_and(|k| k > 0 && stats.step % k == 0);
        if due || stats.step == end {
            let dir = checkpoint_dir(&opts.out_dir, stats.step);
            if root {
                trainer.checkpoint(loader.position())?.save(&dir)?;
            }
            last_ck = Some(dir);
        }
    }
    bar.finish_and_clear();
    let session_seconds = t_session.elapsed().as_secs_f64();
    if root && opts.plot && !csv.rows().is_empty() {
        plot_loss(
            csv.rows(),
            &opts.out_dir.join("loss.png"),
            &opts.title,
            800,
            480,
        )?;
    }
    Ok(RunSummary {
        rows: csv.rows().to_vec(),
        steps_done: trainer.step_count(),
        session_steps: trainer.step_count() - start,
        session_seconds,
        data_wait_seconds: wait,
        comm_seconds: comm,
        checkpoint: last_ck,
        report: trainer.store().report(),
    })
}
