//! The NCCL backend: reductions and broadcasts on a GPU of this rank through cudarc's NCCL
//! bindings (loaded at run time), bootstrapped over a host collective (MPI).

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream};
use cudarc::nccl::safe::{Comm, Id, ReduceOp};
use vidgen_video_core::{Error, Result};

use crate::{check_root, Collective};

fn nccl_err(e: impl std::fmt::Debug) -> Error {
    Error::backend("nccl", format!("{e:?}"))
}

/// NCCL over one GPU per rank. Sums and broadcasts of `f32` / `f64` run on the GPU (host
/// buffers are copied in and out; [`Nccl::all_reduce_sum_device`] works on device buffers in
/// place); barriers, gathers, byte broadcasts and aborts go through the bootstrap collective.
pub struct Nccl {
    comm: Comm,
    stream: Arc<CudaStream>,
    host: Box<dyn Collective>,
}

impl std::fmt::Debug for Nccl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Nccl(rank {} of {}, GPU {})",
            self.comm.rank(),
            self.comm.world_size(),
            self.comm.ordinal()
        )
    }
}

impl Nccl {
    /// Joins the NCCL group of every rank of `host` on GPU `ordinal`: rank 0 makes NCCL's
    /// unique id and `host` broadcasts it.
    ///
    /// # Errors
    /// No CUDA driver or NCCL library, no such GPU, NCCL failures.
    pub fn new(host: Box<dyn Collective>, ordinal: usize) -> Result<Self> {
        let mut id_bytes = if host.rank() == 0 {
            let id = Id::new().map_err(nccl_err)?;
            id.internal().iter().map(|c| *c as u8).collect()
        } else {
            Vec::new()
        };
        host.broadcast_bytes(&mut id_bytes, 0)?;
        let mut internal = [0 as std::ffi::c_char; 128];
        if id_bytes.len() != internal.len() {
            return Err(Error::backend(
                "nccl",
                format!("unique id of {} bytes, expected 128", id_bytes.len()),
            ));
        }
        for (d, s) in internal.iter_mut().zip(&id_bytes) {
            *d = *s as std::ffi::c_char;
        }
        let ctx = CudaContext::new(ordinal).map_err(nccl_err)?;
        let stream = ctx.default_stream();
        let comm = Comm::from_rank(
            stream.clone(),
            host.rank(),
            host.world_size(),
            Id::uninit(internal),
        )
        .map_err(nccl_err)?;
        Ok(Self { comm, stream, host })
    }

    /// Sums `buf` over ranks in place on the GPU.
    ///
    /// # Errors
    /// NCCL failures.
    pub fn all_reduce_sum_device(&self, buf: &mut CudaSlice<f32>) -> Result<()> {
        self.comm
            .all_reduce_in_place(buf, &ReduceOp::Sum)
            .map_err(nccl_err)?;
        Ok(())
    }

    /// The stream NCCL runs on.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    fn through_device<T>(
        &self,
        buf: &mut [T],
        op: impl FnOnce(&mut CudaSlice<T>) -> Result<()>,
    ) -> Result<()>
    where
        T: cudarc::driver::DeviceRepr + cudarc::nccl::NcclType,
    {
        if buf.is_empty() {
            return Ok(());
        }
        let mut d = self.stream.clone_htod(&*buf).map_err(nccl_err)?;
        op(&mut d)?;
        self.stream.memcpy_dtoh(&d, buf).map_err(nccl_err)?;
        self.stream.synchronize().map_err(nccl_err)?;
        Ok(())
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.comm.rank()
    }

    fn world_size(&self) -> usize {
        self.comm.world_size()
    }

    fn backend(&self) -> &'static str {
        "nccl"
    }

    fn barrier(&self) -> Result<()> {
        self.stream.synchronize().map_err(nccl_err)?;
        self.host.barrier()
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.through_device(buf, |d| {
            self.comm
                .all_reduce_in_place(d, &ReduceOp::Sum)
                .map_err(nccl_err)?;
            Ok(())
        })
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.through_device(buf, |d| {
            self.comm
                .all_reduce_in_place(d, &ReduceOp::Sum)
                .map_err(nccl_err)?;
            Ok(())
        })
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.world_size())?;
        self.through_device(buf, |d| {
            self.comm
                .broadcast_in_place(d, root as i32)
                .map_err(nccl_err)?;
            Ok(())
        })
    }

    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        self.host.broadcast_bytes(buf, root)
    }

    fn all_gather_f64(&self, local: &[f64]) -> Result<Vec<Vec<f64>>> {
        self.host.all_gather_f64(local)
    }

    fn abort(&self, code: i32) -> ! {
        self.host.abort(code)
    }
}
