"""Writes ops.safetensors: PyTorch reference values for every op in core/ops.h.

Each case stores fixed float64 inputs, the forward output, a fixed random R of the output's shape,
and the gradient of sum(out * R) with respect to each differentiable input. `f32_*` cases repeat a
subset in float32 (forward only). Run: /usr/bin/python3 tests/reference/gen_ops.py [OUT]
"""
import json
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402

gen = torch.Generator().manual_seed(20240611)
tensors, meta = {}, {}


def randn(*shape, dtype=torch.float64):
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64).to(dtype)


def pos(*shape, lo=0.5, hi=2.0):  # strictly positive inputs (log, sqrt, pow, div)
    return lo + (hi - lo) * torch.rand(tuple(shape), generator=gen, dtype=torch.float64)


def away0(*shape):  # magnitudes in [0.2, 1.5], random signs: no kinks at 0 for abs/relu/div
    s = torch.randint(0, 2, tuple(shape), generator=gen).to(torch.float64) * 2 - 1
    return s * pos(*shape, lo=0.2, hi=1.5)


def mask(*shape):
    return torch.randint(0, 2, tuple(shape), generator=gen).to(torch.float64)


def index(n, hi):
    return torch.randint(0, hi, (n,), generator=gen)


def case(name, op, fn, inputs, diff=None, grad=True, **params):
    """fn(*inputs) -> output. diff: indices of differentiable inputs (default: all floating ones)."""
    assert name not in meta and "." not in name, name
    dtype = "f32" if any(t.dtype == torch.float32 for t in inputs) else "f64"
    if diff is None:
        diff = [i for i, t in enumerate(inputs) if t.is_floating_point()]
    if not grad:
        diff = []
    leaves = [t.clone().requires_grad_(i in diff) for i, t in enumerate(inputs)]
    out = fn(*leaves)
    for i, t in enumerate(inputs):
        tensors[f"{name}.in{i}"] = t
    tensors[f"{name}.out"] = out.detach()
    if diff:
        r = randn(*out.shape, dtype=out.dtype)
        (out * r).sum().backward()
        tensors[f"{name}.r"] = r
        for i in diff:
            tensors[f"{name}.grad{i}"] = leaves[i].grad
    meta[name] = json.dumps(dict(op=op, dtype=dtype, n_inputs=len(inputs), diff=diff, **params),
                            separators=(",", ":"))


def all_axes(x, axes):
    return tuple(axes) if axes else tuple(range(x.dim()))


def sdpa(q, k, v, scale=None):
    s = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    return torch.softmax(q @ k.transpose(-2, -1) * s, dim=-1) @ v


def unfold_patches(x, p):
    B, C, H, W = x.shape
    x = x.reshape(B, C, H // p, p, W // p, p).permute(0, 2, 4, 1, 3, 5)  # B, gh, gw, C, p, p
    return x.reshape(B, (H // p) * (W // p), C * p * p)


def build():
    # Binary elementwise with broadcasting.
    bshapes = {"same": ([3, 4], [3, 4]), "row": ([2, 3, 4], [4]), "outer": ([3, 1], [1, 4]),
               "mixed": ([2, 1, 4], [3, 1]), "zerodim": ([2, 3], [])}
    binops = {"add": torch.add, "sub": torch.sub, "mul": torch.mul, "div": torch.div,
              "maximum": torch.maximum}
    for op, fn in binops.items():
        for tag, (sa, sb) in bshapes.items():
            a = randn(*sa)
            b = away0(*sb) if op == "div" else randn(*sb)
            case(f"{op}_{tag}", op, fn, [a, b])

    case("add_scalar", "add_scalar", lambda a: a + 2.5, [randn(3, 4)], scalar=2.5)
    case("mul_scalar", "mul_scalar", lambda a: a * -1.5, [randn(3, 4)], scalar=-1.5)
    case("rsub_scalar", "rsub", lambda a: 3.0 - a, [randn(3, 4)], scalar=3.0)
    for tag, e, x in [("sq", 2.0, randn(3, 4)), ("cube", 3.0, randn(3, 4)), ("half", 0.5, pos(3, 4)),
                      ("neg1_5", -1.5, pos(3, 4)), ("1_7", 1.7, pos(3, 4)), ("zero", 0.0, randn(2, 3))]:
        case(f"pow_{tag}", "pow", lambda a, e=e: torch.pow(a, e), [x], exponent=e)

    unary = {"neg": (torch.neg, randn), "exp": (torch.exp, randn), "log": (torch.log, pos),
             "sqrt": (torch.sqrt, pos), "rsqrt": (torch.rsqrt, pos), "tanh": (torch.tanh, randn),
             "abs": (torch.abs, away0), "relu": (torch.relu, away0)}
    for op, (fn, init) in unary.items():
        case(op, op, fn, [init(2, 3, 4)])
    x = 3 * randn(2, 3, 5)
    case("gelu_none", "gelu", lambda a: F.gelu(a), [x], approximate="none")
    case("gelu_tanh", "gelu", lambda a: F.gelu(a, approximate="tanh"), [x.clone()], approximate="tanh")

    # Reductions over axis sets, with and without keepdim. Random data: no ties for max.
    rcases = [("all", [], False), ("ax0", [0], False), ("ax12", [1, 2], False), ("last_keep", [-1], True),
              ("ax02_keep", [0, 2], True), ("all_keep", [], True)]
    for op in ["sum", "mean", "max"]:
        for tag, axes, keep in rcases:
            def fn(a, axes=axes, keep=keep, op=op):
                ax = all_axes(a, axes)
                if op == "max":
                    return torch.amax(a, dim=ax, keepdim=keep)
                return getattr(torch, op)(a, dim=ax, keepdim=keep)
            case(f"{op}_{tag}", op, fn, [randn(2, 3, 4)], axes=axes, keepdim=keep)
    for tag, axes, unb, keep in [("last", [-1], True, False), ("ax02_keep", [0, 2], True, True),
                                 ("ax1_biased", [1], False, False), ("all", [], True, False),
                                 ("all_biased_keep", [], False, True)]:
        case(f"var_{tag}", "var",
             lambda a, axes=axes, unb=unb, keep=keep: torch.var(a, dim=all_axes(a, axes), unbiased=unb,
                                                                keepdim=keep),
             [randn(2, 3, 4)], axes=axes, unbiased=unb, keepdim=keep)
    case("argmax_ax1", "argmax", lambda a: torch.argmax(a, dim=1), [randn(3, 5, 2)], grad=False, axis=1)
    case("argmax_last", "argmax", lambda a: torch.argmax(a, dim=-1), [randn(4, 6)], grad=False, axis=-1)

    # matmul: 2-D, batched, broadcast batch dims, 1-D operands.
    for tag, sa, sb in [("2d", [3, 4], [4, 5]), ("batched", [2, 3, 4], [2, 4, 5]),
                        ("bcast_batch", [2, 1, 3, 4], [3, 4, 5]), ("bcast_2d_rhs", [2, 3, 4], [4, 5]),
                        ("bcast_2d_lhs", [3, 4], [2, 4, 5]), ("vec_mat", [4], [4, 5]),
                        ("mat_vec", [3, 4], [4]), ("vec_vec", [4], [4]), ("batched_vec", [2, 3, 4], [4]),
                        ("vec_batched", [4], [2, 4, 5])]:
        case(f"matmul_{tag}", "matmul", torch.matmul, [randn(*sa), randn(*sb)])

    case("linear_bias", "linear", F.linear, [randn(2, 3, 4), randn(5, 4), randn(5)], bias=True)
    case("linear_nobias", "linear", F.linear, [randn(3, 4), randn(5, 4)], bias=False)
    case("linear_vec", "linear", F.linear, [randn(4), randn(5, 4), randn(5)], bias=True)
    gl = lambda h, w, b=None: F.linear(F.gelu(h), w, b)  # noqa: E731
    case("gelu_linear_bias", "gelu_linear", gl, [3 * randn(2, 3, 4), randn(5, 4), randn(5)], bias=True)
    case("gelu_linear_nobias", "gelu_linear", gl, [3 * randn(3, 4), randn(5, 4)], bias=False)

    for op, fn in [("softmax", torch.softmax), ("log_softmax", torch.log_softmax)]:
        case(f"{op}_last", op, lambda a, fn=fn: fn(a, dim=-1), [2 * randn(2, 3, 5)], axis=-1)
        case(f"{op}_ax1", op, lambda a, fn=fn: fn(a, dim=1), [2 * randn(2, 3, 5)], axis=1)
        case(f"{op}_ax0", op, lambda a, fn=fn: fn(a, dim=0), [randn(4, 3)], axis=0)

    case("layer_norm_affine", "layer_norm", lambda a, w, b: F.layer_norm(a, (6,), w, b, 1e-5),
         [randn(2, 3, 6), 1 + 0.5 * randn(6), 0.5 * randn(6)], eps=1e-5, affine=True)
    case("layer_norm_affine_eps6", "layer_norm", lambda a, w, b: F.layer_norm(a, (8,), w, b, 1e-6),
         [5 + 3 * randn(4, 8), 1 + 0.5 * randn(8), 0.5 * randn(8)], eps=1e-6, affine=True)
    case("layer_norm_plain", "layer_norm", lambda a: F.layer_norm(a, (5,), None, None, 1e-5),
         [randn(3, 5)], eps=1e-5, affine=False)
    lnl = lambda a, g, b, w, c=None: F.linear(F.layer_norm(a, (6,), g, b, 1e-6), w, c)  # noqa: E731
    case("layer_norm_linear_bias", "layer_norm_linear", lnl, [randn(2, 3, 6), 1 + randn(6), randn(6), randn(4, 6),
                                                              randn(4)], eps=1e-6, bias=True)
    case("layer_norm_linear_nobias", "layer_norm_linear", lnl, [randn(5, 6), 1 + randn(6), randn(6), randn(3, 6)],
         eps=1e-6, bias=False)

    for tag, ls in [("plain", 0.0), ("smooth", 0.1)]:
        case(f"cross_entropy_{tag}", "cross_entropy",
             lambda z, y, ls=ls: F.cross_entropy(z, y, label_smoothing=ls),
             [2 * randn(5, 7), index(5, 7)], label_smoothing=ls)

    case("sdpa_default", "sdpa", sdpa, [randn(2, 2, 5, 4), randn(2, 2, 5, 4), randn(2, 2, 5, 4)], scale=None)
    case("sdpa_scale", "sdpa", lambda q, k, v: sdpa(q, k, v, 0.3),
         [randn(1, 3, 4, 8), randn(1, 3, 4, 8), randn(1, 3, 4, 8)], scale=0.3)
    case("sdpa_cross", "sdpa", sdpa, [randn(1, 2, 3, 4), randn(1, 2, 6, 4), randn(1, 2, 6, 4)], scale=None)

    case("concat_ax1", "concat", lambda *xs: torch.cat(xs, dim=1),
         [randn(2, 1, 3), randn(2, 4, 3), randn(2, 2, 3)], axis=1)
    case("concat_ax0", "concat", lambda *xs: torch.cat(xs, dim=0), [randn(2, 3), randn(1, 3)], axis=0)
    case("concat_last", "concat", lambda *xs: torch.cat(xs, dim=-1), [randn(2, 2), randn(2, 3)], axis=-1)

    # Repeated indices check that gradients accumulate.
    case("index_select_ax0", "index_select", lambda a, i: torch.index_select(a, 0, i),
         [randn(4, 3), torch.tensor([2, 0, 2, 3])], axis=0)
    case("index_select_ax1", "index_select", lambda a, i: torch.index_select(a, 1, i),
         [randn(2, 5, 2), torch.tensor([4, 1, 1])], axis=1)
    case("gather_ax1", "gather", lambda a, i: torch.gather(a, 1, i),
         [randn(3, 4), torch.tensor([[3, 3], [0, 1], [2, 0]])], axis=1)
    case("gather_ax0", "gather", lambda a, i: torch.gather(a, 0, i),
         [randn(3, 4), torch.tensor([[2, 0, 1, 1], [2, 2, 0, 1]])], axis=0)

    where = lambda c, a, b: torch.where(c != 0, a, b)  # noqa: E731
    case("where_same", "where", where, [mask(3, 4), randn(3, 4), randn(3, 4)], diff=[1, 2])
    case("where_bcast", "where", where, [mask(3, 1), randn(3, 4), randn(4)], diff=[1, 2])
    case("masked_fill_same", "masked_fill", lambda a, m: a.masked_fill(m != 0, -5.0),
         [randn(3, 4), mask(3, 4)], diff=[0], value=-5.0)
    case("masked_fill_bcast", "masked_fill", lambda a, m: a.masked_fill(m != 0, 2.5),
         [randn(2, 3, 4), mask(1, 4)], diff=[0], value=2.5)

    case("unfold_patches_p4", "unfold_patches", lambda a: unfold_patches(a, 4), [randn(2, 3, 8, 8)], patch=4)
    case("unfold_patches_p3", "unfold_patches", lambda a: unfold_patches(a, 3), [randn(1, 1, 6, 9)], patch=3)

    # float32 forward values for the ops a ViT spends its time in.
    f = lambda *s: randn(*s, dtype=torch.float32)  # noqa: E731
    case("f32_matmul_2d", "matmul", torch.matmul, [f(7, 9), f(9, 5)], grad=False)
    case("f32_matmul_batched", "matmul", torch.matmul, [f(2, 3, 6, 8), f(8, 4)], grad=False)
    case("f32_linear", "linear", F.linear, [f(3, 5, 16), f(12, 16), f(12)], grad=False, bias=True)
    case("f32_layer_norm_linear", "layer_norm_linear",
         lambda a, g, b, w, c: F.linear(F.layer_norm(a, (16,), g, b, 1e-6), w, c),
         [f(3, 5, 16), 1 + f(16), f(16), f(12, 16), f(12)], grad=False, eps=1e-6, bias=True)
    case("f32_gelu_linear", "gelu_linear", gl, [3 * f(3, 5, 16), f(12, 16), f(12)], grad=False, bias=True)
    case("f32_softmax", "softmax", lambda a: torch.softmax(a, -1), [3 * f(4, 10)], grad=False, axis=-1)
    case("f32_log_softmax", "log_softmax", lambda a: torch.log_softmax(a, -1), [3 * f(4, 10)], grad=False,
         axis=-1)
    case("f32_layer_norm", "layer_norm", lambda a, w, b: F.layer_norm(a, (16,), w, b, 1e-6),
         [f(3, 5, 16), 1 + f(16), f(16)], grad=False, eps=1e-6, affine=True)
    case("f32_gelu_none", "gelu", F.gelu, [3 * f(4, 10)], grad=False, approximate="none")
    case("f32_gelu_tanh", "gelu", lambda a: F.gelu(a, approximate="tanh"), [3 * f(4, 10)], grad=False,
         approximate="tanh")
    case("f32_cross_entropy", "cross_entropy", lambda z, y: F.cross_entropy(z, y, label_smoothing=0.1),
         [3 * f(6, 10), index(6, 10)], grad=False, label_smoothing=0.1)
    case("f32_sdpa", "sdpa", sdpa, [f(2, 3, 7, 8), f(2, 3, 7, 8), f(2, 3, 7, 8)], grad=False, scale=None)
    case("f32_unfold_patches", "unfold_patches", lambda a: unfold_patches(a, 4), [f(1, 2, 8, 12)],
         grad=False, patch=4)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                             "ops.safetensors")
    build()
    meta["__format__"] = "spdlab-ops-v1"
    st.save(out, tensors, meta)
    print(f"wrote {out}: {len(meta) - 1} cases, {len(tensors)} tensors, {os.path.getsize(out)} bytes")
