//! Registry case of `adapters`' retrieval: exact top-k cosine search of 1 000 queries over
//! 100 000 embeddings of width 512 (`ExampleBank::top_k`, k = 10), against PyTorch doing the
//! same in the same run (`benches/peers/retrieval_peers.py`: `normalize(q) @ bankᵀ` then
//! `topk`), and candle's whole-bank matmul + per-row selection as an in-process twin.

use candle_core::{Device, Tensor};
use vidgen_adapters::ExampleBank;
use vidgen_video_core::Result;

use crate::{randn, Amount, Case, Work};

const N: usize = 100_000;
const D: usize = 512;
const Q: usize = 1_000;
const K: usize = 10;

/// The retrieval search case.
pub fn retrieval() -> Vec<Case> {
    vec![Case {
        krate: "adapters",
        name: "retrieval_topk_n100k_d512_q1000_k10",
        shape: "ExampleBank::top_k: 1000 queries [1000, 512] (normalised inside the call) over a bank of 100000 unit rows [100000, 512], k = 10, exact cosine; peer: torch normalize + matmul + topk; twin: candle matmul of the whole bank + select_nth per row",
        amount: Some(Amount::Flops(2.0 * (Q * N * D) as f64)),
        ours,
        twins: vec![("candle_matmul_select", candle_twin)],
        torch: Some("retrieval_topk_n100k_d512_q1000_k10"),
    }]
}

fn inputs(d: &Device) -> Result<(Tensor, Tensor)> {
    Ok((randn(&[N, D], 41, 1.0, d)?, randn(&[Q, D], 42, 1.0, d)?))
}

fn ours(d: &Device) -> Result<Work> {
    let (bank, q) = inputs(d)?;
    let bank = ExampleBank::new(&bank)?;
    Ok(Box::new(move || {
        let hits = bank.top_k(&q, K)?;
        std::hint::black_box(hits);
        Ok(())
    }))
}

fn candle_twin(d: &Device) -> Result<Work> {
    let (bank, q) = inputs(d)?;
    let bank = ExampleBank::new(&bank)?.embeddings()?;
    let bt = bank.t()?.contiguous()?;
    Ok(Box::new(move || {
        let n = q.sqr()?.sum_keepdim(1)?.sqrt()?;
        let qn = q.broadcast_div(&n)?;
        let s = qn.matmul(&bt)?.to_vec2::<f32>()?;
        let mut out = Vec::with_capacity(Q);
        for row in s {
            let mut idx: Vec<usize> = (0..row.len()).collect();
            idx.select_nth_unstable_by(K, |&a, &b| row[b].total_cmp(&row[a]));
            idx.truncate(K);
            idx.sort_by(|&a, &b| row[b].total_cmp(&row[a]));
            out.push(idx);
        }
        std::hint::black_box(out);
        Ok(())
    }))
}
