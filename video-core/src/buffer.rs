//! Output buffers written once, in parallel, without a zero fill first.
//!
//! `vec![0f32; n]` is a `calloc`: on memory the allocator reuses, that is a `memset` of the whole
//! buffer that the kernel then overwrites. In the SVD UNet's forward those fills were 6% of the
//! time (`perf`), all on one thread at each op's start.

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// `n` f32 values produced by `write(offset, chunk)` over consecutive chunks of `chunk`
/// elements (`offset` is the chunk's first index), in parallel on rayon's threads.
///
/// # Safety
/// `write` must assign every element of its chunk and must not read an element before it
/// assigned it: the chunk starts uninitialised.
pub unsafe fn par_write(
    n: usize,
    chunk: usize,
    write: impl Fn(usize, &mut [f32]) + Sync + Send,
) -> Vec<f32> {
    let chunk = chunk.max(1);
    let mut out: Vec<f32> = Vec::with_capacity(n);
    out.spare_capacity_mut()[..n]
        .par_chunks_mut(chunk)
        .enumerate()
        .for_each(|(i, c)| {
            // SAFETY: `MaybeUninit<f32>` has the layout of `f32`; the caller's `write` only
            // assigns before it reads, so no uninitialised value is ever read.
            let c = unsafe { &mut *(c as *mut [MaybeUninit<f32>] as *mut [f32]) };
            write(i * chunk, c)
        });
    // SAFETY: the chunks cover `0..n` and the caller's `write` assigned each of their elements.
    unsafe { out.set_len(n) };
    out
}
