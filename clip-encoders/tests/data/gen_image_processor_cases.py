"""CLIPImageProcessor cases for clip-encoders' tests (transformers 5.23, torchvision 0.29.2,
Pillow 13.0; CPU with AVX2, where torchvision resizes uint8 images with its native uint8 kernel).

    PY=$(bash ../shared/peers/setup.sh)
    $PY clip-encoders/tests/data/gen_image_processor_cases.py   # from the workspace root

Writes image_processor_cases.safetensors + image_processor_cases.json beside this script. Each
case is a seeded random uint8 HWC image (`<case>.image`) and a processor config; for both
backends (`tv`: transformers 5's default `CLIPImageProcessor`, the torchvision backend; `pil`:
`CLIPImageProcessorPil`, the PIL backend that transformers 4's CLIPImageProcessor was) it stores
`<case>.<backend>.u8`: the image after resize + center crop only (do_rescale=False,
do_normalize=False; uint8 CHW) and, for the small configs, `<case>.<backend>.pixel_values`:
the full output (float32 CHW). Images are given as numpy arrays (RGBA composited onto white by
each backend's own convert_to_rgb).
"""
import json, os
import numpy as np
import torch
from safetensors.numpy import save_file
from transformers import CLIPImageProcessor, CLIPImageProcessorPil

HERE = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(0)

small = dict(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
cases = [
    ("down_37x53", (37, 53, 3), small),
    ("down_64x48", (64, 48, 3), small),
    ("down_300x200", (300, 200, 3), small),
    ("up_20x30", (20, 30, 3), small),
    ("gray_40x40", (40, 40, 1), small),
    ("rgba_33x47", (33, 47, 4), small),
    ("bilinear_45x61", (45, 61, 3), dict(small, resample=2)),
    ("crop_pad_30x50", (30, 50, 3), dict(size={"shortest_edge": 24}, crop_size={"height": 28, "width": 40})),
    ("exact_size_50x40", (50, 40, 3), dict(size={"height": 36, "width": 20}, do_center_crop=False)),
    ("default_260x300", (260, 300, 3), {}),
]
tensors, meta = {}, []
for name, shape, cfg in cases:
    img = rng.integers(0, 256, size=shape, dtype=np.uint8)
    if shape[2] == 4:
        img[..., 3] = rng.integers(0, 256, size=shape[:2], dtype=np.uint8)
    tensors[f"{name}.image"] = img
    inp = img if shape[2] != 1 else img  # numpy HWC, 1/3/4 channels
    entry = {"name": name, "config": cfg, "backends": []}
    for tag, cls in [("tv", CLIPImageProcessor), ("pil", CLIPImageProcessorPil)]:
        p = cls(**cfg)
        u8 = p(images=inp, do_rescale=False, do_normalize=False, return_tensors="np").pixel_values[0]
        assert u8.dtype == np.uint8 or np.all(u8 == np.round(u8)), (name, tag, u8.dtype)
        tensors[f"{name}.{tag}.u8"] = np.ascontiguousarray(u8.astype(np.uint8))
        if name != "default_260x300":
            pv = p(images=inp, return_tensors="np").pixel_values[0].astype(np.float32)
            tensors[f"{name}.{tag}.pixel_values"] = np.ascontiguousarray(pv)
        entry["backends"].append(tag)
    diff = np.abs(tensors[f"{name}.tv.u8"].astype(int) - tensors[f"{name}.pil.u8"].astype(int))
    entry["tv_vs_pil_u8_max_diff"] = int(diff.max()) if diff.size else 0
    entry["tv_vs_pil_u8_diff_count"] = int((diff > 0).sum())
    meta.append(entry)
    print(name, tensors[f"{name}.tv.u8"].shape, "tv vs pil: max", entry["tv_vs_pil_u8_max_diff"], "count", entry["tv_vs_pil_u8_diff_count"])

save_file(tensors, os.path.join(HERE, "image_processor_cases.safetensors"))
json.dump({"versions": {"torch": torch.__version__, "transformers": __import__("transformers").__version__,
                        "torchvision": __import__("torchvision").__version__, "pillow": __import__("PIL").__version__},
           "cases": meta}, open(os.path.join(HERE, "image_processor_cases.json"), "w"), indent=1)
