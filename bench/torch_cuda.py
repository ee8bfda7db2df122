"""PyTorch's side of bench/cuda_bench: the same measurements, in eager PyTorch on the same GPU, same line format.

- a training step (forward, F.cross_entropy, backward, torch.optim.AdamW over timm's weight-decay groups) and an
  inference forward, each in fp32 (TF32 off for matmul and cuDNN) and with TF32 on;
- the AdamW step alone on the model's parameters with fixed gradients, both of PyTorch's GPU implementations:
  foreach (the default) and fused.

The model is timm's vit_base_patch16_224 when timm is importable (--impl auto), which is what a user runs: its
attention goes through F.scaled_dot_product_attention (fused kernels). --impl plain uses bench/torch_vit_model.py
(explicit softmax attention), the model of bench/torch_vit.py. The line records which (impl=).

Run: python3 bench/torch_cuda.py [--config vit-base16|vit-micro] [--device cuda|cpu] [--iters N] [--warmup W]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from torch_vit_model import VisionTransformer, timm_groups

CONFIGS = {
    "vit-base16": (dict(img_size=224, in_chans=3, patch_size=16, embed_dim=768, depth=12, num_heads=12, mlp_ratio=4,
                        num_classes=1000), 64, "vit_base_patch16_224"),
    "vit-micro": (dict(img_size=32, in_chans=3, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=4,
                       num_classes=10), 4, None),
}


def make_model(config, impl):
    cfg, _, timm_name = CONFIGS[config]
    if impl in ("auto", "timm") and timm_name is not None:
        try:
            import timm
            return timm.create_model(timm_name, pretrained=False), "timm-" + timm.__version__
        except ImportError:
            if impl == "timm":
                raise
    return VisionTransformer(**cfg), "plain"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_it(device, warmup, iters, body):
    times = []
    for i in range(warmup + iters):
        sync(device)
        t0 = time.perf_counter()
        body()
        sync(device)
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median_high(times), min(times)  # median_high: the element cuda_bench picks, sorted[n // 2]


def set_tf32(on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def peak_mb(device):
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else 0.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", choices=tuple(CONFIGS), default="vit-base16")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--impl", choices=("auto", "timm", "plain"), default="auto")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--only", default="train,infer,optim")
    args = ap.parse_args()
    only = set(args.only.split(","))
    device = torch.device(args.device)
    cfg, batch, _ = CONFIGS[args.config]
    iters, warmup = max(1, args.iters), max(0, args.warmup)
    torch.manual_seed(0)
    model, impl = make_model(args.config, args.impl)
    model.to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"]), generator=gen).to(device)
    y = torch.randint(0, cfg["num_classes"], (batch,), generator=gen).to(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    tail = f'impl={impl} version={torch.__version__} device="{name}"'

    def report(what, precision, t):
        print(f"torch {args.config} {what} {precision} batch={batch} median_ms={t[0]:.3f} min_ms={t[1]:.3f} "
              f"img_per_s={batch * 1e3 / t[0]:.1f} peak_mb={peak_mb(device):.0f} {tail}", flush=True)

    for tf32 in (False, True):
        set_tf32(tf32)
        precision = "tf32" if tf32 else "fp32"
        if "train" in only:
            model.train()
            opt = torch.optim.AdamW(timm_groups(model, 0.05), lr=1e-3)

            def step():
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            report("train", precision, time_it(device, warmup, iters, step))
            del opt
        if "infer" in only:
            model.eval()
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            with torch.no_grad():
                report("infer", precision, time_it(device, warmup, iters, lambda: model(x)))
    set_tf32(False)

    if "optim" in only:
        params = list(model.parameters())
        numel = sum(p.numel() for p in params)
        for p in params:
            p.grad = (torch.randn(p.shape, generator=gen) * 1e-2).to(device)
        variants = [("adamw-foreach", dict(foreach=True))]
        if device.type == "cuda":
            variants.append(("adamw-fused", dict(fused=True)))
        for label, kw in variants:
            opt = torch.optim.AdamW(timm_groups(model, 0.05), lr=1e-5, **kw)
            t = time_it(device, warmup, iters, opt.step)
            print(f"torch {args.config} step {label} fp32 params={numel} median_ms={t[0]:.3f} min_ms={t[1]:.3f} {tail}",
                  flush=True)


if __name__ == "__main__":
    main()
