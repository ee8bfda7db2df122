"""PyTorch's side of bench/optim_bench: ms per optimizer step (median) on vit_tiny_patch16_224's parameter set.

torch.optim.SGD (momentum), Adam, AdamW (single-tensor and foreach loops), and a reference AdamSPD written
from the definition in the style of the paper's PyTorch code (Adam step, then per-tensor norms and a
projection with tensor ops). Each runs at 1 and 2 intra-op threads; the table keeps every row, so the fastest
setup can be read off. A benchmark, not a test.
Run: /usr/bin/python3 bench/torch_optim.py [--steps 30] [--threads 1,2]
"""
import argparse
import statistics
import time

import torch


def vit_tiny_shapes():
    """timm's vit_tiny_patch16_224 in named_parameters() order."""
    D, H, N = 192, 768, 197
    shapes = [("cls_token", (1, 1, D)), ("pos_embed", (1, N, D)),
              ("patch_embed.proj.weight", (D, 3, 16, 16)), ("patch_embed.proj.bias", (D,))]
    for b in range(12):
        for name, shape in [("norm1.weight", (D,)), ("norm1.bias", (D,)), ("attn.qkv.weight", (3 * D, D)),
                            ("attn.qkv.bias", (3 * D,)), ("attn.proj.weight", (D, D)), ("attn.proj.bias", (D,)),
                            ("norm2.weight", (D,)), ("norm2.bias", (D,)), ("mlp.fc1.weight", (H, D)),
                            ("mlp.fc1.bias", (H,)), ("mlp.fc2.weight", (D, H)), ("mlp.fc2.bias", (D,))]:
            shapes.append((f"blocks.{b}.{name}", shape))
    shapes += [("norm.weight", (D,)), ("norm.bias", (D,)), ("head.weight", (1000, D)), ("head.bias", (1000,))]
    return shapes


def timm_groups(named, weight_decay):
    """timm's param_groups_weight_decay: no decay for 1-D tensors, biases, cls_token and pos_embed."""
    decay, no_decay = [], []
    for name, p in named:
        skip = p.ndim <= 1 or name.endswith(".bias") or name in ("cls_token", "pos_embed")
        (no_decay if skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


class AdamSPD(torch.optim.Optimizer):
    """Reference SPD on Adam, per tensor, as the paper's PyTorch code does it: a plain Adam step with tensor
    ops, then c = -<g, w - w0>; if c < 0, r = clamp((|w~ - w0| - |w - w0|) / |w~ - w0|, 0, 1) and
    w = w~ - lambda r (w~ - w0). lambda is the group's weight_decay; group["pre"] holds the anchors."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, pre=None))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                m, v, t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                denom = (v.sqrt() / (1 - b2 ** t) ** 0.5).add_(group["eps"])
                new_p = p - group["lr"] / (1 - b1 ** t) * m / denom
                pre = group["pre"][i] if group["pre"] is not None else torch.zeros_like(p)
                if group["weight_decay"] > 0 and -torch.sum(g * (p - pre)) < 0:
                    new_norm, old_norm = torch.norm(new_p - pre), torch.norm(p - pre)
                    if new_norm > 0:
                        r = ((new_norm - old_norm) / new_norm).clamp(0.0, 1.0)
                        new_p = new_p - group["weight_decay"] * r * (new_p - pre)
                p.copy_(new_p)


def make(kind, named):
    groups = timm_groups(named, 0.05)
    if kind == "sgd (momentum 0.9)":
        return torch.optim.SGD(groups, lr=0.01, momentum=0.9)
    if kind == "adam":
        return torch.optim.Adam(groups, lr=1e-3, foreach=False)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=1e-3, foreach=False)
    if kind == "adamw foreach":
        return torch.optim.AdamW(groups, lr=1e-3, foreach=True)
    if kind == "adamspd (reference)":
        for grp in groups:
            grp["weight_decay"] = 1.0 if grp["weight_decay"] > 0 else 0.0
            grp["pre"] = [p.detach().clone() for p in grp["params"]]
        return AdamSPD(groups, lr=1e-3)
    raise ValueError(kind)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", default="1,2", help="comma-separated intra-op thread counts to try")
    args = ap.parse_args()
    shapes = vit_tiny_shapes()
    total = sum(torch.Size(s).numel() for _, s in shapes)
    print(f"torch_optim: torch {torch.__version__}, vit_tiny_patch16_224 parameter set, {len(shapes)} tensors, "
          f"{total} parameters, median of {args.steps} steps\n")
    print(f"{'':26s} {'threads':>7s} {'ms/step':>9s} {'min':>9s}")
    kinds = ["sgd (momentum 0.9)", "adam", "adamw", "adamw foreach", "adamspd (reference)"]
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for kind in kinds:
            gen = torch.Generator().manual_seed(1)
            named = [(n, torch.randn(s, generator=gen).requires_grad_()) for n, s in shapes]
            grads = [[torch.randn(s, generator=gen) * 1e-2 for _, s in shapes] for _ in range(4)]
            opt = make(kind, named)
            times = []
            for i in range(args.warmup + args.steps):
                for (_, p), g in zip(named, grads[i % 4]):
                    p.grad = g
                t0 = time.perf_counter()
                opt.step()
                if i >= args.warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
            print(f"{kind:26s} {threads:7d} {statistics.median(times):9.2f} {min(times):9.2f}")


if __name__ == "__main__":
    main()
