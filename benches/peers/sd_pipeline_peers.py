"""PyTorch peers of the Stable Diffusion family pipeline bench cases (diffusers 0.42.1, CPU,
float32), timed like ../../../shared/peers/torch_peers.py times its cases.

    python sd_pipeline_peers.py ip2p_pipeline_small --json --threads N   # timing (one JSON line)
    python sd_pipeline_peers.py animatediff_pipeline_small --run-once     # one call (peak RSS)

Both cases load the folder benches/src/cases_sd_pipelines.rs writes under target/bench-assets/
(run the Rust case first: `bench-report --filter sd_pipeline` ... or any run of the case does),
so both sides run the same weights:

ip2p_pipeline_small: `StableDiffusionInstructPix2PixPipeline.from_pretrained(folder)`; a 256x256
RGB picture (PIL), prompt "make it a watercolor painting", 10 steps, guidance 7.5, image guidance
1.5, given latents [1, 4, 32, 32], output_type "pt".

animatediff_pipeline_small: `AnimateDiffPipeline` from the folder's components (its unet/ is a
UNetMotionModel, no motion adapter folder); prompt "a red square moving left", negative
"blurry", 16 frames, 256x256, 10 steps, guidance 7.5, decode_chunk_size 16, given latents
[1, 4, 16, 32, 32], output_type "pt".

W warm-up calls then R timed ones, GC off, inside torch.inference_mode().
Prints {case, median_s, min_s, max_s, times_s, repeat, warmup, threads, info, env}.
"""
import argparse, gc, json, os, platform, statistics, sys, time

HERE = os.path.dirname(os.path.abspath(__file__))
ASSETS = os.path.join(HERE, "..", "..", "target", "bench-assets")
CASES = ["ip2p_pipeline_small", "animatediff_pipeline_small"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=CASES)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--run-once", action="store_true", help="one call, then exit (peak RSS)")
    a = ap.parse_args()
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[v] = str(a.threads)
    folder = os.path.join(ASSETS, a.case)
    if not os.path.exists(os.path.join(folder, "model_index.json")):
        sys.exit(f"{folder} is missing: run the Rust case {a.case} first")
    import numpy as np
    import torch
    import diffusers
    import logging
    from PIL import Image

    logging.getLogger("diffusers").setLevel(logging.ERROR)
    diffusers.utils.logging.set_verbosity_error()
    import transformers

    transformers.utils.logging.set_verbosity_error()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)

    if a.case == "ip2p_pipeline_small":
        from diffusers import StableDiffusionInstructPix2PixPipeline

        pipe = StableDiffusionInstructPix2PixPipeline.from_pretrained(
            folder, torch_dtype=torch.float32, safety_checker=None, requires_safety_checker=False
        )
        rgb = (np.random.default_rng(0).random((256, 256, 3)) * 255).astype(np.uint8)
        image = Image.fromarray(rgb)
        latents = torch.randn(1, 4, 32, 32, generator=g)

        def f():
            return pipe("make it a watercolor painting", image=image, num_inference_steps=10,
                        guidance_scale=7.5, image_guidance_scale=1.5, latents=latents.clone(),
                        output_type="pt").images

        parts = ("unet", "vae", "text_encoder")
        shape = [1, 3, 256, 256]
    else:
        from diffusers import AnimateDiffPipeline, AutoencoderKL, DDIMScheduler, UNetMotionModel
        from transformers import CLIPTextModel, CLIPTokenizer

        pipe = AnimateDiffPipeline(
            vae=AutoencoderKL.from_pretrained(os.path.join(folder, "vae")),
            text_encoder=CLIPTextModel.from_pretrained(os.path.join(folder, "text_encoder")),
            tokenizer=CLIPTokenizer.from_pretrained(os.path.join(folder, "tokenizer")),
            unet=UNetMotionModel.from_pretrained(os.path.join(folder, "unet")),
            motion_adapter=None,
            scheduler=DDIMScheduler.from_pretrained(os.path.join(folder, "scheduler")),
        )
        latents = torch.randn(1, 4, 16, 32, 32, generator=g)

        def f():
            return pipe("a red square moving left", negative_prompt="blurry", num_frames=16,
                        height=256, width=256, num_inference_steps=10, guidance_scale=7.5,
                        decode_chunk_size=16, latents=latents.clone(), output_type="pt").frames

        parts = ("unet", "vae", "text_encoder")
        shape = [1, 16, 3, 256, 256]
    pipe.set_progress_bar_config(disable=True)

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
    info = {"folder": os.path.abspath(folder), "output": shape,
            "params": {k: sum(p.numel() for p in getattr(pipe, k).parameters()) for k in parts}}
    out = {"case": a.case, "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
           "times_s": ts, "repeat": a.repeat, "warmup": a.warmup, "threads": a.threads, "info": info,
           "env": {"python": platform.python_version(), "torch": torch.__version__,
                   "diffusers": diffusers.__version__, "cpu": platform.processor(),
                   "torch_threads": torch.get_num_threads()}}
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
