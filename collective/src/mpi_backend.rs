//! The MPI backend: the world communicator of the `mpi` crate (rsmpi).

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;
use vidgen_video_core::{Error, Result};

use crate::{check_root, Collective};

/// Values per MPI call: MPI counts are C `int`s, so longer buffers go in pieces.
const PIECE: usize = 1 << 28;

/// MPI's world communicator. MPI is initialised (threads funnelled: only the thread that
/// created it calls MPI; rayon's workers never do) when it is created and finalised when it
/// is dropped, so keep one for the life of the program.
pub struct Mpi {
    world: SimpleCommunicator,
    // Declared last, so dropped last: finalises MPI after the communicator is gone.
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mpi(rank {} of {})", self.rank(), self.world_size())
    }
}

impl Mpi {
    /// Initialises MPI and takes its world communicator.
    ///
    /// # Errors
    /// MPI was already initialised in this process, or gave less than funnelled threading.
    pub fn init() -> Result<Self> {
        let (universe, level) = mpi::initialize_with_threading(Threading::Funneled)
            .ok_or_else(|| Error::backend("mpi", "MPI is already initialised in this process"))?;
        if level < Threading::Funneled {
            return Err(Error::backend(
                "mpi",
                format!("the MPI library gives only {level:?} threading; funnelled is needed"),
            ));
        }
        let world = universe.world();
        Ok(Self {
            world,
            _universe: universe,
        })
    }
}

impl Mpi {
    /// MPI_Allreduce (sum) of `buf` in place, at most [`PIECE`] values per call.
    fn sum_in_pieces<T: Equivalence + Copy + Default>(&self, buf: &mut [T]) {
        let mut out = vec![T::default(); buf.len().min(PIECE)];
        for piece in buf.chunks_mut(PIECE) {
            let o = &mut out[..piece.len()];
            self.world
                .all_reduce_into(&*piece, o, SystemOperation::sum());
            piece.copy_from_slice(o);
        }
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn world_size(&self) -> usize {
        self.world.size() as usize
    }

    fn backend(&self) -> &'static str {
        "mpi"
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.sum_in_pieces(buf);
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum_in_pieces(buf);
        Ok(())
    }

    fn broadcast_f32(&self, buf: &mut [f32], root: usize) -> Result<()> {
        check_root(root, self.world_size())?;
        let p = self.world.process_at_rank(root as i32);
        for piece in buf.chunks_mut(PIECE) {
            p.broadcast_into(piece);
        }
        Ok(())
    }

    fn broadcast_bytes(&self, buf: &mut Vec<u8>, root: usize) -> Result<()> {
        check_root(root, self.world_size())?;
        let p = self.world.process_at_rank(root as i32);
        let mut len = buf.len() as u64;
        p.broadcast_into(&mut len);
        buf.resize(len as usize, 0);
        for piece in buf.chunks_mut(PIECE) {
            p.broadcast_into(piece);
        }
        Ok(())
    }

    fn all_gather_f64(&self, local: &[f64]) -> Result<Vec<Vec<f64>>> {
        let n = self.world_size();
        let mine = local.len() as u64;
        let mut lens = vec![0u64; n];
        self.world.all_gather_into(&mine, &mut lens[..]);
        let total: u64 = lens.iter().sum();
        if total > i32::MAX as u64 {
            return Err(Error::invalid(
                "all_gather",
                format!("{total} values in all: more than one MPI call carries (2^31 - 1)"),
            ));
        }
        let counts: Vec<i32> = lens.iter().map(|&l| l as i32).collect();
        let displs: Vec<i32> = counts
            .iter()
            .scan(0i32, |acc, &c| {
                let d = *acc;
                *acc += c;
                Some(d)
            })
            .collect();
        let mut all = vec![0f64; total as usize];
        {
            let mut part = PartitionMut::new(&mut all[..], &counts[..], &displs[..]);
            self.world.all_gather_varcount_into(local, &mut part);
        }
        Ok(counts
            .iter()
            .zip(&displs)
            .map(|(&c, &d)| all[d as usize..(d + c) as usize].to_vec())
            .collect())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
