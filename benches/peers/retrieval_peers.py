"""PyTorch / numpy peer of adapters' retrieval bench case, timed like
../../../shared/peers/torch_peers.py times its cases.

    python retrieval_peers.py retrieval_topk_n100k_d512_q1000_k10 --json --threads N

The same work as `ExampleBank::top_k` in benches/src/cases_retrieval.rs: a bank of 100 000
random rows of width 512, L2-normalised once outside the clock; per timed call, 1 000 random
queries are normalised, scored against the whole bank (`q @ bank.T`, a [1000, 100000] float32
matrix) and the 10 best of each row taken with `torch.topk` (sorted). The numpy variant
(`q @ bank.T` then `argpartition` + a sort of the 10) is timed too and reported in `info`; the
peer figure is torch's. Inputs are seeded normal values (their values do not change the work).
Prints one JSON line {case, median_s, min_s, max_s, times_s, repeat, warmup, threads, info, env}.
"""
import argparse, gc, json, os, platform, statistics, time

N, D, Q, K = 100_000, 512, 1_000, 10


def timed(f, warmup, repeat):
    for _ in range(warmup):
        f()
    gc.disable()
    ts = []
    for _ in range(max(repeat, 1)):
        s = time.perf_counter()
        f()
        ts.append(time.perf_counter() - s)
    gc.enable()
    return ts


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["retrieval_topk_n100k_d512_q1000_k10"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[v] = str(a.threads)
    import numpy as np
    import torch
    import torch.nn.functional as F
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    bank = F.normalize(torch.randn(N, D, generator=g), dim=1).contiguous()
    q = torch.randn(Q, D, generator=g)

    def torch_call():
        s = F.normalize(q, dim=1) @ bank.T
        return torch.topk(s, K, dim=1)

    bank_np, q_np = bank.numpy(), q.numpy()

    def numpy_call():
        qn = q_np / np.maximum(np.linalg.norm(q_np, axis=1, keepdims=True), 1e-12)
        s = qn @ bank_np.T
        part = np.argpartition(-s, K, axis=1)[:, :K]
        vals = np.take_along_axis(s, part, axis=1)
        order = np.argsort(-vals, axis=1)
        return np.take_along_axis(part, order, axis=1)

    with torch.inference_mode():
        ts = timed(torch_call, a.warmup, a.repeat)
    ts_np = timed(numpy_call, a.warmup, max(2, a.repeat // 2))
    info = {"bank": [N, D], "queries": [Q, D], "k": K,
            "numpy_median_s": statistics.median(ts_np), "numpy_times_s": ts_np,
            "numpy": np.__version__}
    out = {"case": a.case, "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
           "times_s": ts, "repeat": a.repeat, "warmup": a.warmup, "threads": a.threads, "info": info,
           "env": {"python": platform.python_version(), "torch": torch.__version__,
                   "cpu": platform.processor(), "torch_threads": torch.get_num_threads()}}
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
