//! Collective communication for vidgen: what data-parallel training (`vidgen-trainer`) and
//! sharded evaluation (`vidgen-eval-metrics`) need from a group of processes, behind one small
//! trait, [`Collective`]: rank and world size, all-reduce (sum) of `f32` / `f64` buffers,
//! broadcast from a root, all-gather of variable-length `f64` buffers, a barrier, and an abort
//! that takes every process of the group down.
//!
//! Backends:
//! - [`Local`]: one process (rank 0 of 1); every operation is the identity. Needs nothing.
//! - `Mpi` (feature `mpi`): MPI's world communicator through the `mpi` crate (rsmpi), e.g.
//!   Debian's OpenMPI. Launch with `mpirun -np N program …`; [`init`] finds out from the
//!   launcher's environment whether it runs under MPI.
//! - `Nccl` (feature `nccl`): NCCL's all-reduce / broadcast on GPU buffers through cudarc
//!   (loaded at run time), one GPU per rank, bootstrapped over another collective (MPI) that
//!   hands NCCL's unique id to every rank. Compiled and type-checked without a GPU; not yet run
//!   on one.
//!
//! Results are identical on every rank (each backend's reductions give every rank the same
//! bits), which is what keeps data-parallel replicas in step without re-broadcasting weights.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use vidgen_collective::{all_reduce_mean, init, shard_range, Collective};
//! # fn main() -> vidgen_video_core::Result<()> {
//! let group = init()?; // Local here; MPI's world under `mpirun` with the `mpi` feature
//! assert_eq!((group.rank(), group.world_size()), (0, 1));
//! let g = Tensor::new(&[1f32, 2., 3.], &Device::Cpu)?;
//! let mean = all_reduce_mean(group.as_ref(), &g)?; // the mean over ranks
//! assert_eq!(mean.to_vec1::<f32>()?, vec![1., 2., 3.]);
//! assert_eq!(shard_range(10, 1, 3), 4..7); // rank 1 of 3 reads items 4, 5, 6
//! # Ok(()) }
//! ```
//!
//! # Features
//! - `mpi` (off by default): the MPI backend; needs MPI's development files and compiler
//!   wrapper at build time (Debian: `libopenmpi-dev openmpi-bin`) and libclang for bindgen.
//! - `nccl` (off by default): the NCCL backend over cudarc (no CUDA needed to build).

#![deny(missing_docs)]

use std::ops::Range;

use candle_core::{DType, Tensor};
use vidgen_video_core::{Error, Result};

#[cfg(feature = "mpi")]
mod mpi_backend;
#[cfg(feature = "mpi")]
pub use mpi_backend::Mpi;

#[cfg(feature = "nccl")]
mod nccl_backend;
#[cfg(feature = "nccl")]
pub use nccl_backend::Nccl;

/// A group of processes that compute together. Every method is collective: every rank of the
/// group must call it, in the same order, with buffers of the same length (except
/// [`Collective::all_gather_f64`], whose lengths may differ), or the group deadlocks, as with
/// MPI itself.
pub trait Collective {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;

    /// The number of processes.
    fn world_size(&self) -> usize;

    /// The backend's name (`local`, `mpi`, `nccl`), for logs.
    fn backend(&self) -> &'static str;

    /// Waits until every rank has called it.
    ///
    /// # Errors
    /// Backend failures.
    fn barrier(&self) -> Result<()>;

    /// Replaces `buf` by the element-wise sum of every rank's `buf` (same result on every
    /// rank).
    ///
    /// # Errors
    /// Backend failures.
    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()>;

    /// [`Collective::all_reduce_sum_f32`] for `f64`.
    ///
    /// # Errors
    /// Backend failures.
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;

    /// Overwrites `buf` on every rank with `root`'s `buf` (same length everywhere).
    ///
    /// # Errors
    /// A root outside the group; backend failures.
    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()>;

    /// Replaces `buf` on every rank with `root`'s bytes; the length travels too, so the other
    /// ranks may pass any (e.g. empty) vector.
    ///
    /// # Errors
    /// A root outside the group; backend failures.
    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<()>;

    /// Every rank's `local` buffer, in rank order, on every rank (lengths may differ).
    ///
    /// # Errors
    /// Backend failures; more than `i32::MAX` values in all.
    fn all_gather_f64(&self, local: &[f64]) -> Result<Vec<Vec<f64>>>;

    /// Ends every process of the group with exit status `code` (MPI_Abort): what a rank that
    /// hit an error calls, so that the others do not wait for it forever.
    fn abort(&self, code: i32) -> !;
}

/// One process: rank 0 of a world of 1, where every collective is the identity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Local;

impl Collective for Local {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn backend(&self) -> &'static str {
        "local"
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f32(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast_f32(&self, _buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn broadcast_bytes(&self, _buf: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root(root, 1)
    }
    fn all_gather_f64(&self, local: &[f64]) -> Result<Vec<Vec<f64>>> {
        Ok(vec![local.to_vec()])
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

pub(crate) fn check_root(root: usize, world: usize) -> Result<()> {
    if root >= world {
        return Err(Error::invalid(
            "root",
            format!("rank {root} is outside a group of {world}"),
        ));
    }
    Ok(())
}

/// Environment variables through which MPI launchers tell each process they start the size of
/// its job: OpenMPI's `mpirun`, and PMI (MPICH / Intel MPI's `mpiexec`, Slurm's `srun
/// --mpi=pmi2`). Not Slurm's allocation variables: a batch script in a many-task allocation is
/// still one process.
const WORLD_SIZE_VARS: &[&str] = &["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"];

/// The world size an MPI launcher announced in this process's environment, if any.
pub fn launcher_world_size() -> Option<usize> {
    WORLD_SIZE_VARS
        .iter()
        .find_map(|v| std::env::var(v).ok()?.trim().parse::<usize>().ok())
}

/// The group this process belongs to: MPI's world when the program runs under an MPI launcher
/// (`mpirun`, `srun`: see [`launcher_world_size`]) and was built with the `mpi` feature;
/// [`Local`] otherwise.
///
/// # Errors
/// The launcher started several processes but this build has no `mpi` feature (each would
/// otherwise train alone as rank 0 and overwrite the others' outputs); MPI failed to start.
pub fn init() -> Result<Box<dyn Collective>> {
    let launched = launcher_world_size();
    #[cfg(feature = "mpi")]
    {
        if launched.is_some() {
            return Ok(Box::new(Mpi::init()?));
        }
    }
    match launched {
        Some(n) if n > 1 => Err(Error::FeatureDisabled {
            feature: "mpi".into(),
            krate: "vidgen-collective".into(),
            what: format!(
                "this process was launched as one of {n} MPI ranks, but was built without MPI support (rebuild with the `mpi` feature)"
            ),
        }),
        _ => Ok(Box::new(Local)),
    }
}

/// The contiguous, balanced share of `n` items that `rank` of `world` takes: the first
/// `n % world` ranks take one more. The shares of all ranks, in rank order, are `0..n`.
pub fn shard_range(n: usize, rank: usize, world: usize) -> Range<usize> {
    let world = world.max(1);
    let (q, r) = (n / world, n % world);
    let start = rank * q + rank.min(r);
    let len = q + usize::from(rank < r);
    start.min(n)..(start + len).min(n)
}

/// Parses a shard given as `i/n` (0-based `i < n`), as the command lines take it.
///
/// # Errors
/// Not of that form, `n == 0` or `i >= n`.
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || {
        Error::invalid(
            "shard",
            format!("`{s}` is not i/n with 0 <= i < n (e.g. 0/3)"),
        )
    };
    let (i, n) = s.split_once('/').ok_or_else(bad)?;
    let i: usize = i.trim().parse().map_err(|_| bad())?;
    let n: usize = n.trim().parse().map_err(|_| bad())?;
    if n == 0 || i >= n {
        return Err(bad());
    }
    Ok((i, n))
}

/// The element-wise mean over ranks of `t` (any shape; computed in f32 on the host, returned
/// in `t`'s dtype and device).
///
/// # Errors
/// Tensor copies; backend failures.
pub fn all_reduce_mean(c: &dyn Collective, t: &Tensor) -> Result<Tensor> {
    let mut v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    c.all_reduce_sum_f32(&mut v)?;
    let inv = 1.0 / c.world_size() as f32;
    v.iter_mut().for_each(|x| *x *= inv);
    Ok(Tensor::from_vec(v, t.dims(), &candle_core::Device::Cpu)?
        .to_dtype(t.dtype())?
        .to_device(t.device())?)
}

/// `root`'s `t` on every rank (same shape everywhere; f32 on the wire, so an f32 / f16 / bf16
/// tensor arrives bit for bit).
///
/// # Errors
/// Tensor copies; a dtype wider than f32; backend failures.
pub fn broadcast_tensor(c: &dyn Collective, t: &Tensor, root: usize) -> Result<Tensor> {
    if c.world_size() == 1 {
        check_root(root, 1)?;
        return Ok(t.clone());
    }
    if !matches!(t.dtype(), DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::DType {
            key: "broadcast tensor".into(),
            expected: "f32, f16 or bf16".into(),
            found: format!("{:?}", t.dtype()),
        });
    }
    let mut v = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
    c.broadcast_f32(&mut v, root)?;
    Ok(Tensor::from_vec(v, t.dims(), &candle_core::Device::Cpu)?
        .to_dtype(t.dtype())?
        .to_device(t.device())?)
}

/// The sum over ranks of one `f64` (a loss, a count), the same on every rank.
///
/// # Errors
/// Backend failures.
pub fn all_reduce_scalar(c: &dyn Collective, x: f64) -> Result<f64> {
    let mut v = [x];
    c.all_reduce_sum_f64(&mut v)?;
    Ok(v[0])
}

/// Runs `f` and, when it fails on a rank of a group of several, prints the error and aborts the
/// whole group (exit status 1), so that no rank waits forever for one that gave up. On one
/// process the error is returned as usual.
pub fn or_abort<T>(c: &dyn Collective, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match f() {
        Ok(v) => Ok(v),
        Err(e) if c.world_size() > 1 => {
            eprintln!(
                "error on rank {} of {}: {e}; aborting every rank",
                c.rank(),
                c.world_size()
            );
            c.abort(1)
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn shards_cover_every_item_once() {
        for n in 0..40 {
            for world in 1..7 {
                let mut next = 0;
                for r in 0..world {
                    let s = shard_range(n, r, world);
                    assert_eq!(s.start, next, "n {n} world {world} rank {r}");
                    assert!(s.len() == n / world || s.len() == n / world + 1);
                    next = s.end;
                }
                assert_eq!(next, n);
            }
        }
    }

    #[test]
    fn shard_strings() {
        assert_eq!(parse_shard("0/3").ok(), Some((0, 3)));
        assert_eq!(parse_shard(" 2 / 3 ").ok(), Some((2, 3)));
        for bad in ["3/3", "1/0", "a/2", "1", "", "-1/2", "1/2/3"] {
            let e = parse_shard(bad)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(e.contains("i/n"), "{bad}: {e}");
        }
    }

    #[test]
    fn local_is_the_identity() -> Result<()> {
        let c = Local;
        let t = Tensor::new(&[[1f32, -2.], [3., 4.5]], &Device::Cpu)?;
        let m = all_reduce_mean(&c, &t)?;
        assert_eq!(m.to_vec2::<f32>()?, t.to_vec2::<f32>()?);
        let b = broadcast_tensor(&c, &t.to_dtype(DType::BF16)?, 0)?;
        assert_eq!(b.dtype(), DType::BF16);
        assert!(broadcast_tensor(&c, &t, 1).is_err());
        assert_eq!(c.all_gather_f64(&[1.0, 2.0])?, vec![vec![1.0, 2.0]]);
        let mut bytes = vec![1u8, 2];
        c.broadcast_bytes(&mut bytes, 0)?;
        assert_eq!(bytes, vec![1, 2]);
        assert_eq!(all_reduce_scalar(&c, 2.5)?, 2.5);
        assert_eq!(or_abort(&c, || Ok::<_, Error>(3))?, 3);
        assert!(or_abort(&c, || Err::<(), _>(Error::invalid("x", "y"))).is_err());
        c.barrier()
    }
}
