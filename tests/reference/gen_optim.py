"""Writes optimizer replay traces and their PyTorch results.

A small MLP is trained for 40 steps with torch.optim.Adam in float32 on random data; the gradient of
every step is recorded. Those fixed gradients are then replayed, in float64 starting from the float32
values, through SGD, Adam, AdamW, L2-SP, SPD, MARS-SP and FTP, and the final parameters are stored as float32.
MARS-SP and FTP have no torch.optim class: their rules are written out below in float64 (FTP's as the authors'
code computes it: MARS (L1 row) norms, a 1-D tensor as one row, a radius per tensor with its own Adam).

  optim_traces.safetensors         variant no_anchor: anchors are the starting values
  optim_traces_anchor.safetensors  variant with_anchor: explicit anchor.<name>, different from the start
In both, head.* has no anchor (the "new head" case): SPD uses w0 = 0 there, L2-SP uses beta * w.
Run: /usr/bin/python3 tests/reference/gen_optim.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import st  # noqa: E402

STEPS = 40
# name -> shape, in the order an optimizer sees them (named_parameters order).
SHAPES = {"fc1.weight": (16, 10), "fc1.bias": (16,), "fc2.weight": (8, 16), "fc2.bias": (8,),
          "head.weight": (3, 8), "head.bias": (3,)}
UNANCHORED = ["head.weight", "head.bias"]
ADAM = dict(betas=[0.9, 0.999], eps=1e-8)
CONFIGS = [
    dict(name="sgd", optimizer="sgd", lr=0.05, momentum=0.0, weight_decay=0.0, nesterov=False),
    dict(name="sgd_momentum", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=False),
    dict(name="sgd_nesterov", optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=1e-4, nesterov=True),
    dict(name="adam", optimizer="adam", lr=1e-2, weight_decay=0.0, amsgrad=False, **ADAM),
    dict(name="adam_wd", optimizer="adam", lr=1e-2, weight_decay=0.01, amsgrad=False, **ADAM),
    dict(name="adam_amsgrad", optimizer="adam", lr=1e-2, weight_decay=0.0, amsgrad=True, **ADAM),
    dict(name="adamw", optimizer="adamw", lr=1e-2, weight_decay=0.05, amsgrad=False, **ADAM),
    dict(name="l2sp", optimizer="l2sp", lr=1e-2, alpha=0.1, beta=0.01, **ADAM),
    dict(name="spd", optimizer="spd", lr=1e-2, lam=1.0, **ADAM),
    dict(name="spd_lam05", optimizer="spd", lr=1e-2, lam=0.5, **ADAM),
    dict(name="mars_sp", optimizer="mars_sp", lr=1e-2, gamma=0.5, **ADAM),
    dict(name="ftp", optimizer="ftp", lr=1e-2, k=1.0, weight_decay=0.0, **ADAM),
    dict(name="ftp_k05_wd", optimizer="ftp", lr=1e-2, k=0.5, weight_decay=0.05, **ADAM),
]


def record_trace(seed=7):
    """Start params (f32) and 40 steps of minibatch gradients along a torch Adam trajectory."""
    gen = torch.Generator().manual_seed(seed)
    p = {}
    for name, shape in SHAPES.items():
        fan_in = shape[1] if len(shape) == 2 else SHAPES[name.replace("bias", "weight")][1]
        p[name] = ((torch.rand(shape, generator=gen) * 2 - 1) / fan_in ** 0.5).requires_grad_()
    X = torch.randn((128, 10), generator=gen)
    y = (X[:, :3] @ torch.randn((3, 3), generator=gen)).argmax(1)  # learnable labels
    start = {k: v.detach().clone() for k, v in p.items()}
    opt = torch.optim.Adam(p.values(), lr=1e-2)
    grads = []
    for t in range(STEPS):
        idx = torch.randint(0, 128, (16,), generator=gen)
        h = torch.tanh(F.linear(X[idx], p["fc1.weight"], p["fc1.bias"]))
        h = F.gelu(F.linear(h, p["fc2.weight"], p["fc2.bias"]))
        loss = F.cross_entropy(F.linear(h, p["head.weight"], p["head.bias"]), y[idx])
        opt.zero_grad()
        loss.backward()
        grads.append({k: v.grad.detach().clone() for k, v in p.items()})
        opt.step()
    print(f"trace: final minibatch loss {loss.item():.4f}")
    return start, grads


def adam_step(w, g, state, cfg):
    """Plain Adam (no weight decay) on a float64 tensor, in place; matches torch.optim.Adam."""
    b1, b2 = cfg["betas"]
    state["t"] += 1
    state["m"].mul_(b1).add_(g, alpha=1 - b1)
    state["v"].mul_(b2).addcmul_(g, g, value=1 - b2)
    bc1, bc2 = 1 - b1 ** state["t"], 1 - b2 ** state["t"]
    denom = (state["v"].sqrt() / bc2 ** 0.5).add_(cfg["eps"])
    w.addcdiv_(state["m"], denom, value=-cfg["lr"] / bc1)


def ftp_step(w, w0, g, st, cfg):
    """FTP's radius update and projection of one anchored tensor, after its Adam step (w holds W~)."""
    rows = (1, w.numel()) if w.dim() <= 1 else (w.shape[0], -1)
    d = (w - w0).reshape(rows)
    n = d.abs().sum(1) + 1e-8
    if st["inv_norm"] is None:
        st["gamma"], st["gm"], st["gv"] = 1e-8, 0.0, 0.0
    else:
        grad = ((g.reshape(rows) * st["prev_d"]).sum(1) * st["inv_norm"]).sum().item()
        if grad > 0:
            grad *= cfg["k"]
        t = st["t"]
        st["gm"] = 0.9 * st["gm"] + 0.1 * grad
        st["gv"] = 0.999 * st["gv"] + 0.001 * grad * grad
        m_hat, v_hat = st["gm"] / (1 - 0.9 ** t), st["gv"] / (1 - 0.999 ** t)
        gamma = st["gamma"] - 1e-2 * m_hat / (v_hat ** 0.5 + 1e-8)
        st["gamma"] = min(max(gamma, 1e-8), n.max().item())
    ratio = (st["gamma"] / n).clamp(0, 1)
    w.copy_((w0.reshape(rows) + ratio[:, None] * d).reshape(w.shape))
    st["prev_d"], st["inv_norm"] = d.clone(), 1 / n


def replay(cfg, start, anchors, grads):
    """Returns final params (f64) and, for SPD, per-tensor 0/1 flags of the steps where c < 0."""
    w = {k: v.double().clone() for k, v in start.items()}
    w0 = {k: (anchors[k].double() if k in anchors else torch.zeros_like(w[k])) for k in w}
    fired = {k: torch.zeros(STEPS, dtype=torch.int64) for k in w}
    margin = float("inf")
    kind = cfg["optimizer"]
    if kind in ("sgd", "adam", "adamw"):
        params = [w[k].requires_grad_() for k in SHAPES]
        if kind == "sgd":
            opt = torch.optim.SGD(params, lr=cfg["lr"], momentum=cfg["momentum"],
                                  weight_decay=cfg["weight_decay"], nesterov=cfg["nesterov"])
        else:
            cls = torch.optim.Adam if kind == "adam" else torch.optim.AdamW
            opt = cls(params, lr=cfg["lr"], betas=tuple(cfg["betas"]), eps=cfg["eps"],
                      weight_decay=cfg["weight_decay"], amsgrad=cfg["amsgrad"])
        for t in range(STEPS):
            for k in SHAPES:
                w[k].grad = grads[t][k].double()
            opt.step()
        return {k: v.detach() for k, v in w.items()}, fired, margin
    state = {k: dict(t=0, m=torch.zeros_like(w[k]), v=torch.zeros_like(w[k])) for k in w}
    for t in range(STEPS):
        for k in SHAPES:
            g = grads[t][k].double()
            if kind == "l2sp":
                g = g + (cfg["alpha"] * (w[k] - w0[k]) if k in anchors else cfg["beta"] * w[k])
                adam_step(w[k], g, state[k], cfg)
                continue
            if kind == "mars_sp":  # Adam, then each anchored matrix's rows back within L1 distance gamma of w0
                adam_step(w[k], g, state[k], cfg)
                if k in anchors and w[k].dim() == 2:
                    d = w[k] - w0[k]
                    w[k].copy_(w0[k] + d / torch.clamp(d.abs().sum(1, keepdim=True) / cfg["gamma"], min=1.0))
                continue
            if kind == "ftp":  # Adam with decoupled decay, then the learned projection
                w[k].mul_(1 - cfg["lr"] * cfg["weight_decay"])
                adam_step(w[k], g, state[k], cfg)
                if k in anchors:
                    state[k].setdefault("inv_norm", None)
                    ftp_step(w[k], w0[k], g, state[k], cfg)
                continue
            before = w[k].clone()
            adam_step(w[k], g, state[k], cfg)
            d_old = before - w0[k]
            c = -torch.dot(g.flatten(), d_old.flatten()).item()
            if c != 0:
                margin = min(margin, abs(c) / (g.norm().item() * d_old.norm().item()))
            if c < 0:
                fired[k][t] = 1
                d_new = w[k] - w0[k]
                n_new = d_new.norm().item()
                if n_new > 0:
                    r = min(max((n_new - d_old.norm().item()) / n_new, 0.0), 1.0)
                    w[k] -= cfg["lam"] * r * d_new
    return w, fired, margin


def write(path, variant, start, grads, anchors, explicit):
    t = {f"param.{k}": v for k, v in start.items()}
    for step, g in enumerate(grads):
        t.update({f"grad.{step}.{k}": v for k, v in g.items()})
    if explicit:
        t.update({f"anchor.{k}": v for k, v in anchors.items()})
    margins = {}
    for cfg in CONFIGS:
        final, fired, margin = replay(cfg, start, anchors, grads)
        t.update({f"result.{cfg['name']}.{k}": v.float() for k, v in final.items()})
        if cfg["optimizer"] == "spd":
            margins[cfg["name"]] = margin
            for k in SHAPES:
                t[f"spd_fired.{cfg['name']}.{k}"] = fired[k].sum().reshape(1)
                t[f"spd_steps.{cfg['name']}.{k}"] = fired[k]
            print(f"{variant} {cfg['name']}: fired " + ", ".join(f"{k} {int(fired[k].sum())}" for k in SHAPES)
                  + f"; min |cos(g, w-w0)| {margin:.2e}")
    meta = dict(variant=variant, steps=str(STEPS), params=json.dumps(list(SHAPES)),
                unanchored=json.dumps(UNANCHORED), unanchored_pattern="head.*",
                anchors="explicit anchor.<name> tensors" if explicit else "starting values param.<name>",
                configs=json.dumps(CONFIGS), spd_min_margin=json.dumps(margins))
    st.save(path, t, meta)
    print(f"wrote {path}: {os.path.getsize(path)} bytes")


if __name__ == "__main__":
    start, grads = record_trace()
    anchored = [k for k in SHAPES if k not in UNANCHORED]
    write(os.path.join(HERE, "optim_traces.safetensors"), "no_anchor", start, grads,
          {k: start[k] for k in anchored}, explicit=False)
    gen = torch.Generator().manual_seed(11)
    anchors = {k: (start[k].double() + 0.05 * torch.randn(start[k].shape, generator=gen, dtype=torch.float64))
               .float() for k in anchored}
    write(os.path.join(HERE, "optim_traces_anchor.safetensors"), "with_anchor", start, grads, anchors,
          explicit=True)
