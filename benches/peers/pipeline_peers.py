"""PyTorch peers of the `pipelines` bench cases (diffusers 0.42.1, CPU, float32), timed like
../../../shared/peers/torch_peers.py times its cases.

    python pipeline_peers.py svd_pipeline_small --json --threads N   # timing (one JSON line)
    python pipeline_peers.py svd_pipeline_small --run-once            # one call (for peak RSS)

svd_pipeline_small: `StableVideoDiffusionPipeline.from_pretrained(target/bench-assets/
svd_pipeline_small)`, the folder benches/src/cases_pipelines.rs writes (run the Rust case
first: `bench-report --filter svd_pipeline_small` does), so both sides run the same weights.
Call: a 64x64 image in [0, 1] (a tensor), 8 frames, 10 steps, min/max guidance 1/3, fps 7,
motion bucket 127, noise_aug 0.02, decode_chunk_size 8, given latents [1, 8, 4, 16, 16],
output_type "pt". W warm-up calls then R timed ones, GC off, inside torch.inference_mode().
Prints {case, median_s, min_s, max_s, times_s, repeat, warmup, threads, info, env}.
"""
import argparse, gc, json, os, platform, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
FOLDER = os.path.join(HERE, "..", "..", "target", "bench-assets", "svd_pipeline_small")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["svd_pipeline_small"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--run-once", action="store_true", help="one call, then exit (peak RSS)")
    a = ap.parse_args()
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[v] = str(a.threads)
    if not os.path.exists(os.path.join(FOLDER, "model_index.json")):
        sys.exit(f"{FOLDER} is missing: run the Rust case svd_pipeline_small first")
    import torch
    import diffusers
    from diffusers import StableVideoDiffusionPipeline
    import logging
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    diffusers.utils.logging.set_verbosity_error()
    torch.set_num_threads(a.threads)
    pipe = StableVideoDiffusionPipeline.from_pretrained(FOLDER, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator().manual_seed(0)
    image = (torch.randn(1, 3, 64, 64, generator=g) * 0.25 + 0.5).clamp(0, 1)
    latents = torch.randn(1, 8, 4, 16, 16, generator=g)
    # A PIL image, as users pass one: diffusers resizes PIL / numpy input to CLIP's 224 px but
    # hands a tensor to the CLIP encoder unresized (and the 224 px vision tower refuses 64 px).
    from PIL import Image
    image = Image.fromarray((image[0].permute(1, 2, 0) * 255).round().byte().numpy())

    def f():
        return pipe(image, height=64, width=64, num_frames=8, num_inference_steps=10,
                    min_guidance_scale=1.0, max_guidance_scale=3.0, fps=7, motion_bucket_id=127,
                    noise_aug_strength=0.02, decode_chunk_size=8, latents=latents.clone(),
                    generator=torch.Generator().manual_seed(1), output_type="pt").frames

    with torch.inference_mode():
        if a.run_once:
            f()
            return
        for _ in range(a.warmup):
            f()
        gc.disable()
        ts = []
        for _ in range(max(a.repeat, 1)):
            s = time.perf_counter()
            f()
            ts.append(time.perf_counter() - s)
        gc.enable()
    info = {"folder": os.path.abspath(FOLDER), "frames": [1, 8, 3, 64, 64],
            "params": {k: sum(p.numel() for p in getattr(pipe, k).parameters())
                       for k in ("unet", "vae", "image_encoder")}}
    out = {"case": a.case, "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
           "times_s": ts, "repeat": a.repeat, "warmup": a.warmup, "threads": a.threads, "info": info,
           "env": {"python": platform.python_version(), "torch": torch.__version__,
                   "diffusers": diffusers.__version__, "cpu": platform.processor(),
                   "torch_threads": torch.get_num_threads()}}
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
