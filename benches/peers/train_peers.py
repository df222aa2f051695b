"""PyTorch peers of one training step (forward + backward + AdamW), CPU float32, batch 1:

    python train_peers.py train_step_unet_svd_small_aid --json --threads N
    python train_peers.py train_step_unet3d_small --json --threads N

* `train_step_unet_svd_small_aid`: diffusers' UNetSpatioTemporalConditionModel with the peers'
  `unet_svd_small` config (23.3 M parameters, frozen: requires_grad False) and AID's adapters at
  all 9 transformers, as vidgen-adapters builds them (bottleneck r = C/4; spatial: x + up(GELU(
  down(x))) after each spatial transformer block; short-term: x + up(dwconv3d 3x3x3(down(x)));
  long-term: x + up(MHA over frames(down(x) + sinusoidal frame positions)), one head of r, both
  after `time_mixer`), hooked with forward hooks; only the adapters train.
* `train_step_unet3d_small`: diffusers' UNet3DConditionModel with the peers' `unet3d_small`
  config (5.40 M parameters), everything trains.

Inputs as the peers' forward cases (`sample [1,8,8,32,32]` / `[1,4,16,32,32]` randn seed 10,
context randn seed 11, timestep 0.25·ln 5 / 500, added_time_ids [6, 127, 0.02]); target randn
seed 12; loss = F.mse_loss(output, target). Timed call: `opt.zero_grad(set_to_none=True)`,
forward, loss, `loss.backward()`, `opt.step()` with `torch.optim.AdamW(trainable, lr=1e-4,
weight_decay=0.01)` (CPU: the single-tensor implementation). Prints one JSON line
{case, median_s, runs, threads, variant, params, trainable}.
"""
import argparse, json, math, os, time
import torch
import torch.nn as nn
import torch.nn.functional as F

SVD_SMALL_CONFIG = dict(
    sample_size=32, in_channels=8, out_channels=4,
    down_block_types=("CrossAttnDownBlockSpatioTemporal",) * 3 + ("DownBlockSpatioTemporal",),
    up_block_types=("UpBlockSpatioTemporal",) + ("CrossAttnUpBlockSpatioTemporal",) * 3,
    block_out_channels=(64, 128, 128, 128), addition_time_embed_dim=32,
    projection_class_embeddings_input_dim=96, layers_per_block=2, cross_attention_dim=64,
    transformer_layers_per_block=1, num_attention_heads=(1, 2, 2, 2), num_frames=8,
)
UNET3D_SMALL_CONFIG = dict(
    sample_size=32, in_channels=4, out_channels=4,
    down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
    up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
    block_out_channels=(32, 64, 64, 64), layers_per_block=2, norm_num_groups=32,
    cross_attention_dim=64, attention_head_dim=8,
)


def randn(shape, seed):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def zero_linear(i, o):
    l = nn.Linear(i, o)
    nn.init.zeros_(l.weight)
    nn.init.zeros_(l.bias)
    return l


class Spatial(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.down, self.up = nn.Linear(c, r), zero_linear(r, c)

    def forward(self, x):  # [B·F, HW, C]
        return x + self.up(F.gelu(self.down(x)))


class ShortTerm(nn.Module):
    def __init__(self, c, r):
        super().__init__()
        self.down, self.up = nn.Linear(c, r), zero_linear(r, c)
        self.conv = nn.Conv3d(r, r, 3, padding=1, groups=r)

    def forward(self, x, b, f, h, w):
        z = self.down(x)  # [B·F, HW, r]
        r = z.shape[-1]
        z = z.reshape(b, f, h, w, r).permute(0, 4, 1, 2, 3)  # [B, r, F, H, W]
        z = self.conv(z).permute(0, 2, 3, 4, 1).reshape(b * f, h * w, r)
        return x + self.up(z)


def positions(t, d):
    half = d // 2
    p = torch.arange(t, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    a = p * freq[None, :]
    return torch.cat([a.sin(), a.cos()], 1).float()


class LongTerm(nn.Module):
    def __init__(self, c, r, head_dim=64):
        super().__init__()
        self.down, self.up = nn.Linear(c, r), zero_linear(r, c)
        self.to_q, self.to_k, self.to_v, self.to_out = (nn.Linear(r, r) for _ in range(4))
        self.heads = r // head_dim if r % head_dim == 0 else 1

    def forward(self, x, b, f, h, w):
        z = self.down(x)  # [B·F, HW, r]
        r = z.shape[-1]
        z = z.reshape(b, f, h * w, r).permute(0, 2, 1, 3).reshape(b * h * w, f, r)
        z = z + positions(f, r)
        n, hd = z.shape[0], r // self.heads
        q, k, v = (t(z).reshape(n, f, self.heads, hd).transpose(1, 2) for t in (self.to_q, self.to_k, self.to_v))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(n, f, r)
        a = self.up(self.to_out(a))  # [B·HW, F, C]
        c = a.shape[-1]
        a = a.reshape(b, h * w, f, c).permute(0, 2, 1, 3).reshape(b * f, h * w, c)
        return x + a


def add_aid_adapters(unet, frames, ratio=0.25):
    from diffusers.models.transformers.transformer_temporal import TransformerSpatioTemporalModel
    mods = nn.ModuleList()
    for name, m in unet.named_modules():
        if not isinstance(m, TransformerSpatioTemporalModel):
            continue
        c = m.in_channels
        r = max(1, round(c * ratio))
        sp, st, lt = Spatial(c, r), ShortTerm(c, r), LongTerm(c, r)
        mods.extend([sp, st, lt])

        def geom(out):
            bf, hw, _ = out.shape
            s = int(round(math.sqrt(hw)))
            return bf // frames, frames, s, s

        for blk in m.transformer_blocks:
            blk.register_forward_hook(lambda mod, inp, out, sp=sp: sp(out))

        def after_mix(mod, inp, out, st=st, lt=lt):
            b, f, h, w = geom(out)
            return lt(st(out, b, f, h, w), b, f, h, w)

        m.time_mixer.register_forward_hook(after_mix)
    return mods


def setup(case):
    torch.manual_seed(0)
    if case == "train_step_unet_svd_small_aid":
        from diffusers import UNetSpatioTemporalConditionModel
        model = UNetSpatioTemporalConditionModel(**SVD_SMALL_CONFIG)
        model.requires_grad_(False)
        adapters = add_aid_adapters(model, SVD_SMALL_CONFIG["num_frames"])
        trainable = list(adapters.parameters())
        inp = (randn((1, 8, 8, 32, 32), 10), torch.tensor([0.25 * math.log(5.0)]),
               randn((1, 1, 64), 11), torch.tensor([[6.0, 127.0, 0.02]]))
        target = randn((1, 8, 4, 32, 32), 12)
        variant = "diffusers UNetSpatioTemporalConditionModel (frozen) + AID adapters via forward hooks"
    else:
        from diffusers import UNet3DConditionModel
        model = UNet3DConditionModel(**UNET3D_SMALL_CONFIG)
        trainable = list(model.parameters())
        inp = (randn((1, 4, 16, 32, 32), 10), torch.tensor([500], dtype=torch.int64), randn((1, 77, 64), 11))
        target = randn((1, 4, 16, 32, 32), 12)
        variant = "diffusers UNet3DConditionModel, all parameters trainable"
    model.train()
    opt = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)

    def step():
        opt.zero_grad(set_to_none=True)
        out = model(*inp, return_dict=False)[0]
        loss = F.mse_loss(out, target)
        loss.backward()
        opt.step()
        return loss

    params = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in trainable if p not in set(model.parameters()))
    return step, variant, params, sum(p.numel() for p in trainable)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["train_step_unet_svd_small_aid", "train_step_unet3d_small"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", "--repeat", dest="runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    step, variant, params, trainable = setup(a.case)
    for _ in range(a.warmup):
        step()
    ts = []
    for _ in range(a.runs):
        s = time.perf_counter()
        step()
        ts.append(time.perf_counter() - s)
    ts.sort()
    out = {"case": a.case, "median_s": ts[len(ts) // 2], "min_s": ts[0], "max_s": ts[-1], "runs": a.runs,
           "threads": a.threads, "variant": variant, "params": params, "trainable": trainable}
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
