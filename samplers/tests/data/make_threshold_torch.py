"""Writes threshold_torch.json: diffusers' DDIMScheduler._threshold_sample (torch.quantile +
torch.clamp) on one [2, 3, 7] float32 sample for several (dynamic_thresholding_ratio,
sample_max_value), as float32 bit patterns, for samplers/tests/config_validation.rs.

    PY=$(bash ../shared/peers/setup.sh); $PY samplers/tests/data/make_threshold_torch.py
"""

import json
import struct
from pathlib import Path

import torch
from diffusers import DDIMScheduler


def bits(t: torch.Tensor) -> list:
    return [struct.unpack("<I", struct.pack("<f", v))[0] for v in t.flatten().tolist()]


x = (torch.arange(2 * 3 * 7, dtype=torch.float32) * 0.731).sin().reshape(2, 3, 7)
x = x * torch.tensor([2.6, 1.3]).view(2, 1, 1)
cases = []
for ratio, max_value in [(0.83, 2.2), (0.995, 1.0), (0.5, 0.5), (0.37, 3.0), (1.0, 5.0), (0.0, 2.0)]:
    s = DDIMScheduler(thresholding=True, dynamic_thresholding_ratio=ratio, sample_max_value=max_value)
    cases.append({"ratio": ratio, "sample_max_value": max_value, "out_bits": bits(s._threshold_sample(x.clone()))})
out = {"shape": list(x.shape), "x_bits": bits(x), "cases": cases}
Path(__file__).with_name("threshold_torch.json").write_text(json.dumps(out) + "\n")
