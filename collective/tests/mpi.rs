//! The MPI backend across real processes: each test re-runs this test binary under
//! `mpirun -np N`, where the `*_rank` test (ignored in a plain run) does the collective work.
#![cfg(feature = "mpi")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use vidgen_collective::{all_reduce_mean, broadcast_tensor, init, or_abort};
use vidgen_video_core::Result;

/// Runs test `name` on `np` ranks (video-testkit's `mpirun`).
fn mpirun(np: usize, name: &str, limit: Duration) -> (bool, String) {
    video_testkit::mpirun(np, name, &[], limit, || {})
}

fn is_child() -> bool {
    video_testkit::is_mpi_child()
}

#[test]
fn every_operation_on_three_ranks() {
    let (ok, out) = mpirun(3, "ops_rank", Duration::from_secs(120));
    assert!(ok, "{out}");
    for r in 0..3 {
        assert!(out.contains(&format!("rank {r} of 3 ok")), "{out}");
    }
}

#[test]
#[ignore = "run by every_operation_on_three_ranks under mpirun"]
fn ops_rank() -> Result<()> {
    if !is_child() {
        return Ok(());
    }
    let c = init()?;
    let (r, n) = (c.rank(), c.world_size());
    assert_eq!(c.backend(), "mpi");
    // sums: same bits on every rank
    let mut v: Vec<f32> = (0..1000)
        .map(|i| (i as f32 + 0.1) * (r as f32 + 1.0))
        .collect();
    c.all_reduce_sum_f32(&mut v)?;
    let want: Vec<f32> = (0..1000).map(|i| (i as f32 + 0.1) * 6.0).collect();
    for (a, b) in v.iter().zip(&want) {
        assert!((a - b).abs() <= 1e-3 * b.abs().max(1.0));
    }
    let bits: Vec<f64> = v.iter().map(|x| f64::from(x.to_bits())).collect();
    let all = c.all_gather_f64(&bits)?;
    assert!(all.iter().all(|b| *b == all[0]), "ranks disagree on a sum");
    let mut d = vec![r as f64 + 0.5; 7];
    c.all_reduce_sum_f64(&mut d)?;
    assert_eq!(d, vec![4.5; 7]);
    // broadcasts
    let mut b: Vec<f32> = (0..5).map(|i| (i + 10 * r) as f32).collect();
    c.broadcast_f32(&mut b, 2)?;
    assert_eq!(b, vec![20., 21., 22., 23., 24.]);
    let mut bytes = if r == 1 {
        b"checkpoint".to_vec()
    } else {
        vec![]
    };
    c.broadcast_bytes(&mut bytes, 1)?;
    assert_eq!(bytes, b"checkpoint");
    assert!(c.broadcast_f32(&mut b, 3).is_err());
    // gathers of different lengths
    let mine: Vec<f64> = (0..r + 1).map(|i| (10 * r + i) as f64).collect();
    let all = c.all_gather_f64(&mine)?;
    assert_eq!(
        all,
        vec![vec![0.0], vec![10.0, 11.0], vec![20.0, 21.0, 22.0]]
    );
    // tensors
    let dev = candle_core::Device::Cpu;
    let t = candle_core::Tensor::new(&[r as f32, 2.0 * r as f32], &dev)?;
    assert_eq!(
        all_reduce_mean(c.as_ref(), &t)?.to_vec1::<f32>()?,
        vec![1.0, 2.0]
    );
    let t = broadcast_tensor(c.as_ref(), &t.to_dtype(candle_core::DType::BF16)?, 1)?;
    assert_eq!(
        t.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?,
        vec![1.0, 2.0]
    );
    c.barrier()?;
    println!("rank {r} of {n} ok");
    Ok(())
}

#[test]
fn a_failing_rank_ends_the_job_instead_of_hanging() {
    let (ok, out) = mpirun(2, "failing_rank", Duration::from_secs(60));
    assert!(!ok, "{out}");
    assert!(out.contains("error on rank 1 of 2"), "{out}");
}

#[test]
#[ignore = "run by a_failing_rank_ends_the_job_instead_of_hanging under mpirun"]
fn failing_rank() -> Result<()> {
    if !is_child() {
        return Ok(());
    }
    let c = init()?;
    or_abort(c.as_ref(), || {
        if c.rank() == 1 {
            return Err(vidgen_video_core::Error::invalid("data", "unreadable clip"));
        }
        Ok(())
    })?;
    // Rank 0 waits in a collective that rank 1 never joins: only the abort ends it.
    let mut v = vec![1f32; 4];
    c.all_reduce_sum_f32(&mut v)?;
    Ok(())
}
