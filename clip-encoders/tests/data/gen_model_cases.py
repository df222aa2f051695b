"""Model cases for clip-encoders' tests beyond the fixtures (transformers 5.23, torch 2.15, CPU fp32).

    PY=$(bash ../shared/peers/setup.sh)
    $PY clip-encoders/tests/data/gen_model_cases.py   # from the workspace root

1. interpolate_pos.safetensors: fixtures/clip_vision/base's CLIPVisionModelWithProjection run with
   interpolate_pos_encoding=True on pixel_values of 48x40, 24x24 and 32x40 (seeded randn):
   `<hxw>.pixel_values`, `<hxw>.image_embeds`, `<hxw>.last_hidden_state`.
2. tiny_clip/: a CLIPModel (both towers, d 32, 2 layers; text vocab = the tiny500 CLIP
   tokenizer's 1014 tokens, eos 1013, 77 positions; vision 32 px, patch 8) saved with
   save_pretrained, the tiny500 tokenizer files, a preprocessor_config.json (CLIPImageProcessor,
   shortest edge 32, crop 32), and cases.safetensors: two prompts tokenized as SD pipelines do
   (`input_ids`, `attention_mask`), two seeded uint8 images 40x50 (`images` [2,40,50,3]),
   `pixel_values` (the processor's output), `text_embeds` / `image_embeds` (get_*_features,
   not normalised), `logits_per_image`, and `clip_score` = torchmetrics' formula
   100 * cos(image_i, text_i) per pair.
Weights are re-drawn as the fixtures do (>=2-D N(0, 1/fan_in), 1-D weight 1+0.1N, bias 0.1N, others 0.5N).
"""
import json, os, shutil
import numpy as np
import torch
from safetensors.torch import save_file
from transformers import (CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer,
                          CLIPVisionModelWithProjection)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
torch.manual_seed(0)


def redraw(model):
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))


# 1. position-embedding interpolation
vis = CLIPVisionModelWithProjection.from_pretrained(os.path.join(ROOT, "fixtures/clip_vision/base/model")).eval()
out = {}
g = torch.Generator().manual_seed(2)
for h, w, b in [(48, 40, 2), (24, 24, 1), (32, 40, 1)]:
    px = torch.randn(b, 3, h, w, generator=g)
    with torch.no_grad():
        o = vis(pixel_values=px, interpolate_pos_encoding=True)
    out[f"{h}x{w}.pixel_values"] = px
    out[f"{h}x{w}.image_embeds"] = o.image_embeds.contiguous()
    out[f"{h}x{w}.last_hidden_state"] = o.last_hidden_state.contiguous()
save_file(out, os.path.join(HERE, "interpolate_pos.safetensors"))

# 2. a tiny CLIPModel with the tiny500 tokenizer
tok_dir = os.path.join(ROOT, "fixtures/clip_tokenizer/tiny500/tokenizer")
d = os.path.join(HERE, "tiny_clip")
shutil.rmtree(d, ignore_errors=True)
cfg = CLIPConfig(
    text_config=dict(vocab_size=1014, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, max_position_embeddings=77, hidden_act="quick_gelu",
                     bos_token_id=1012, eos_token_id=1013, pad_token_id=1013),
    vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                       image_size=32, patch_size=8, hidden_act="quick_gelu"),
    projection_dim=16)
model = CLIPModel(cfg).eval()
redraw(model)
model.save_pretrained(d)
for f in os.listdir(tok_dir):
    shutil.copy(os.path.join(tok_dir, f), d)
proc = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
proc.save_pretrained(d)
tok = CLIPTokenizer.from_pretrained(d)
texts = ["a photo of a cat", "the red square moves to the left"]
t = tok(texts, padding="max_length", max_length=77, truncation=True, return_tensors="pt")
rng = np.random.default_rng(3)
images = rng.integers(0, 256, size=(2, 40, 50, 3), dtype=np.uint8)
px = proc(images=list(images), return_tensors="pt").pixel_values
with torch.no_grad():
    te = model.get_text_features(input_ids=t.input_ids, attention_mask=t.attention_mask).pooler_output
    ie = model.get_image_features(pixel_values=px).pooler_output
    o = model(input_ids=t.input_ids, attention_mask=t.attention_mask, pixel_values=px)
tn = te / te.norm(dim=-1, keepdim=True)
imn = ie / ie.norm(dim=-1, keepdim=True)
score = 100 * (tn * imn).sum(-1)
save_file({"input_ids": t.input_ids, "attention_mask": t.attention_mask,
           "images": torch.from_numpy(images), "pixel_values": px.contiguous(),
           "text_embeds": te.contiguous(), "image_embeds": ie.contiguous(),
           "logits_per_image": o.logits_per_image.contiguous(), "clip_score": score.contiguous()},
          os.path.join(d, "cases.safetensors"))
json.dump({"texts": texts, "clip_score": score.tolist()}, open(os.path.join(d, "cases.json"), "w"), indent=1)
print("clip_score", score.tolist())
print(sorted(os.listdir(d)))
