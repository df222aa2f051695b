"""PyTorch peers of clip-encoders' bench cases (transformers 5.23, CPU, float32), timed like
../../../shared/peers/torch_peers.py times its cases.

    python clip_peers.py clip_text_b8_vitb32 --json --threads N
    python clip_peers.py clip_vision_b8_vitb32 --json --threads N

Models: `CLIPTextModel(CLIPTextConfig())` and `CLIPVisionModelWithProjection(CLIPVisionConfig())`,
transformers' defaults = openai/clip-vit-base-patch32's towers (text: d 512, 12 layers, 8 heads,
ffn 2048, 77 positions, vocab 49408; vision: d 768, 12 layers, 12 heads, ffn 3072, 224 px, patch
32, projection 512), random init after torch.manual_seed(0), eval(), attn_implementation as
transformers picks it (sdpa). Inputs: input_ids [8, 77] (BOS, 5..40 tokens, EOS, EOS padding,
as benches/src/cases_clip.rs builds them); pixel_values [8, 3, 224, 224] randn seed 1. Timed
call: `model(input_ids)` -> last_hidden_state + pooler_output, `model(pixel_values)` ->
image_embeds, inside torch.inference_mode(), W warm-up calls then R timed ones with GC off.
Prints one JSON line {case, median_s, min_s, max_s, times_s, repeat, warmup, threads, info, env}.
"""
import argparse, gc, json, os, platform, statistics, sys, time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["clip_text_b8_vitb32", "clip_vision_b8_vitb32"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()
    for v in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[v] = str(a.threads)
    import torch
    import transformers
    from transformers import (CLIPTextConfig, CLIPTextModel, CLIPVisionConfig,
                              CLIPVisionModelWithProjection)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    if a.case == "clip_text_b8_vitb32":
        model = CLIPTextModel(CLIPTextConfig()).eval()
        ids = torch.full((8, 77), 49407, dtype=torch.long)
        for b in range(8):
            n = 5 + 5 * b
            ids[b, 0] = 49406
            for t in range(1, n):
                ids[b, t] = (b * 7919 + t * 104729) % 49000 + 256
        f = lambda: model(input_ids=ids)
        info = {"input_ids": [8, 77], "outputs": "last_hidden_state [8,77,512], pooler_output [8,512]"}
    else:
        model = CLIPVisionModelWithProjection(CLIPVisionConfig()).eval()
        px = torch.randn(8, 3, 224, 224, generator=torch.Generator().manual_seed(1))
        f = lambda: model(pixel_values=px).image_embeds
        info = {"pixel_values": [8, 3, 224, 224], "outputs": "image_embeds [8,512]"}
    info["attn_implementation"] = model.config._attn_implementation
    info["params"] = sum(p.numel() for p in model.parameters())
    with torch.inference_mode():
        for _ in range(a.warmup):
            f()
        gc.disable()
        ts = []
        for _ in range(max(a.repeat, 1)):
            s = time.perf_counter()
            f()
            ts.append(time.perf_counter() - s)
        gc.enable()
    out = {"case": a.case, "median_s": statistics.median(ts), "min_s": min(ts), "max_s": max(ts),
           "times_s": ts, "repeat": a.repeat, "warmup": a.warmup, "threads": a.threads, "info": info,
           "env": {"python": platform.python_version(), "torch": torch.__version__,
                   "transformers": transformers.__version__, "cpu": platform.processor(),
                   "torch_threads": torch.get_num_threads()}}
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
