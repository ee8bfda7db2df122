"""Writes a timm-layout Vision Transformer reference (plain PyTorch, no timm) and halfprec.safetensors.

  gen_vit.py                  -> vit_small.safetensors and halfprec.safetensors next to this script
  gen_vit.py --tiny224 OUTDIR -> OUTDIR/vit_tiny_patch16_224.safetensors (23 MB; made at test time)
  gen_vit.py --timm-file OUT  -> OUT: only the weights, as timm saves a vit_tiny_patch16_224 (its names and shapes,
                                 metadata {"format": "pt"}), random values: a stand-in for trying the README's
                                 "your own checkpoint" commands without a download

Weights are float32 under timm's key names; logits, loss and input_grad are computed in float64
from those float32 values, then stored as float32.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402

SMALL = dict(img_size=28, in_chans=1, patch_size=4, embed_dim=96, depth=2, num_heads=4, mlp_ratio=4,
             num_classes=10)
TINY224 = dict(img_size=224, in_chans=3, patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4,
               num_classes=1000)


def init_weights(cfg, gen):
    """Random weights under timm's names. Weights ~ N(0, 1/fan_in) rather than timm's N(0, 0.02^2) so
    attention is far from uniform and GELU far from linear; LayerNorm affine and biases are random too."""
    C, P, D, L = cfg["in_chans"], cfg["patch_size"], cfg["embed_dim"], cfg["depth"]
    N = (cfg["img_size"] // P) ** 2
    Hm = int(D * cfg["mlp_ratio"])
    w = {}

    def normal(shape, std):
        return torch.randn(shape, generator=gen, dtype=torch.float64).mul(std).float()

    def linear(name, n_out, n_in):
        w[f"{name}.weight"] = normal((n_out, n_in), 1 / math.sqrt(n_in))
        w[f"{name}.bias"] = normal((n_out,), 0.1)

    def norm(name):
        w[f"{name}.weight"] = 1 + normal((D,), 0.2)
        w[f"{name}.bias"] = normal((D,), 0.2)

    w["patch_embed.proj.weight"] = normal((D, C, P, P), 1 / math.sqrt(C * P * P))
    w["patch_embed.proj.bias"] = normal((D,), 0.1)
    w["cls_token"] = normal((1, 1, D), 0.5)
    w["pos_embed"] = normal((1, 1 + N, D), 0.5)
    for i in range(L):
        b = f"blocks.{i}"
        norm(f"{b}.norm1")
        linear(f"{b}.attn.qkv", 3 * D, D)
        linear(f"{b}.attn.proj", D, D)
        norm(f"{b}.norm2")
        linear(f"{b}.mlp.fc1", Hm, D)
        linear(f"{b}.mlp.fc2", D, Hm)
    norm("norm")
    linear("head", cfg["num_classes"], D)
    return w


def vit_forward(w, x, cfg):
    """timm VisionTransformer.forward: pre-norm blocks, LayerNorm eps 1e-6, exact GELU, token pooling.
    x [B, C, H, W] -> logits [B, num_classes]."""
    D, Hh, eps = cfg["embed_dim"], cfg["num_heads"], 1e-6
    x = F.conv2d(x, w["patch_embed.proj.weight"], w["patch_embed.proj.bias"], stride=cfg["patch_size"])
    x = x.flatten(2).transpose(1, 2)  # [B, N, D]
    B, N, _ = x.shape
    x = torch.cat([w["cls_token"].expand(B, -1, -1), x], dim=1) + w["pos_embed"]
    for i in range(cfg["depth"]):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (D,), w[p + "norm1.weight"], w[p + "norm1.bias"], eps)
        qkv = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"])
        qkv = qkv.reshape(B, N + 1, 3, Hh, D // Hh).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax(q @ k.transpose(-2, -1) * (D // Hh) ** -0.5, dim=-1)
        h = (attn @ v).transpose(1, 2).reshape(B, N + 1, D)
        x = x + F.linear(h, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        h = F.layer_norm(x, (D,), w[p + "norm2.weight"], w[p + "norm2.bias"], eps)
        h = F.gelu(F.linear(h, w[p + "mlp.fc1.weight"], w[p + "mlp.fc1.bias"]))
        x = x + F.linear(h, w[p + "mlp.fc2.weight"], w[p + "mlp.fc2.bias"])
    x = F.layer_norm(x, (D,), w["norm.weight"], w["norm.bias"], eps)
    return F.linear(x[:, 0], w["head.weight"], w["head.bias"])


def make(cfg, batch, seed, path):
    gen = torch.Generator().manual_seed(seed)
    w = init_weights(cfg, gen)
    x = torch.randn((batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"]), generator=gen).float()
    labels = torch.randint(0, cfg["num_classes"], (batch,), generator=gen)
    w64 = {k: v.double() for k, v in w.items()}
    x64 = x.double().requires_grad_()
    logits = vit_forward(w64, x64, cfg)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    out = dict(w)
    out.update(input=x, logits=logits.detach().float(), labels=labels, loss=loss.detach().float().reshape(1),
               input_grad=x64.grad.float())
    meta = {k: str(v) for k, v in cfg.items()}
    meta.update(layer_norm_eps="1e-6", qkv_bias="true", global_pool="token", act="gelu_exact",
                reference="logits/loss/input_grad computed in float64 from the stored float32 values")
    st.save(path, out, meta)
    n_params = sum(v.numel() for v in w.values())
    print(f"wrote {path}: {n_params} params, {os.path.getsize(path)} bytes, loss {loss.item():.6f}")


def halfprec(path):
    """F16 and BF16 tensors of known values with their exact float32 values (and raw bits as I64)."""
    f16_vals = [0.0, -0.0, 1.0, -2.5, 0.1, 1 / 3, 65504.0, -65504.0, 2.0 ** -14, 2.0 ** -24, 3 * 2.0 ** -24,
                -(2.0 ** -20), 1023 * 2.0 ** -24, float("inf"), float("-inf"), 1e5, 2049.0]
    bf16_vals = [0.0, -0.0, 1.0, -2.5, 0.1, 1 / 3, 3.3895313892515355e38, -3.3895313892515355e38,
                 2.0 ** -126, 2.0 ** -133, 5 * 2.0 ** -133, -(2.0 ** -130), float("inf"), float("-inf"),
                 257.0, 1e-3]
    t = {}
    for name, vals, dt in [("f16", f16_vals, torch.float16), ("bf16", bf16_vals, torch.bfloat16)]:
        h = torch.tensor(vals, dtype=torch.float64).to(dt)  # round to nearest even (1e5 -> inf in f16)
        t[name] = h
        t[f"{name}_as_f32"] = h.float()
        t[f"{name}_bits"] = h.view(torch.int16).to(torch.int64) & 0xFFFF
        m = torch.tensor([[1.5, -0.25, 3.0], [2.0 ** -10, -7.0, 0.5]], dtype=dt)
        t[f"{name}_matrix"] = m
        t[f"{name}_matrix_as_f32"] = m.float()
        nan = torch.tensor([float("nan")], dtype=dt)
        t[f"{name}_nan"] = nan
        t[f"{name}_nan_bits"] = nan.view(torch.int16).to(torch.int64) & 0xFFFF
    meta = {"f16_values": ",".join(map(repr, f16_vals)), "bf16_values": ",".join(map(repr, bf16_vals))}
    st.save(path, t, meta)
    print(f"wrote {path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--timm-file":
        w = init_weights(TINY224, torch.Generator().manual_seed(224))
        st.save(sys.argv[2], w, {"format": "pt"})
        print(f"wrote {sys.argv[2]}: {sum(v.numel() for v in w.values())} params (random; timm's names and shapes)")
    elif len(sys.argv) >= 2 and sys.argv[1] == "--tiny224":
        if len(sys.argv) != 3:
            sys.exit("usage: gen_vit.py --tiny224 OUT_DIR")
        os.makedirs(sys.argv[2], exist_ok=True)
        make(TINY224, 1, 224, os.path.join(sys.argv[2], "vit_tiny_patch16_224.safetensors"))
    else:
        make(SMALL, 4, 28, os.path.join(HERE, "vit_small.safetensors"))
        halfprec(os.path.join(HERE, "halfprec.safetensors"))
