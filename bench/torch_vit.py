"""PyTorch's side of bench/vit_bench: images per second of a ViT forward pass or training step, in one line.

eval is inference at the study's batch size (500 unless --batch) as an evaluation loop would run it: 2 batches
of images already in memory, forward and argmax under no_grad, the time per batch. spdlab's eval also runs its
loader and preprocessing in that time; PyTorch gets its inputs ready-made.

The same two models as vit_bench (vit-fmnist: 28x28x1, patch 4, dim 192, depth 6, heads 3, batch 128;
vit-tiny16: timm's vit_tiny_patch16_224, batch 16) in plain PyTorch (bench/torch_vit_model.py). Training is
forward, F.cross_entropy, backward and torch.optim.AdamW (timm's weight-decay groups). A benchmark, not a test.

Threading setups (--threads-setup):
  default     whatever torch picks (its intra-op thread count is printed as threads=)
  one-thread  torch.set_num_threads(1); OpenBLAS keeps its own threads
  all-threads torch.set_num_threads(os.cpu_count())
  passive     all-threads with OMP_WAIT_POLICY=PASSIVE (set here before torch loads its OpenMP runtime)
  chunks      inference (infer, eval) side by side, as spdlab's models::logits runs it: the batch cut into one
              chunk per core, each chunk's forward on a thread of its own (PyTorch's ops release the GIL) with
              torch.set_num_threads(1) and OpenBLAS on one thread (OPENBLAS_NUM_THREADS=1, set before torch loads),
              the logits concatenated. Training runs as one-thread with OpenBLAS on one thread (bench/run.sh skips it)
  ddp         training as data parallel on this machine: one process per core, each with one intra-op thread and
              OpenBLAS on one thread, each stepping its share of the batch under DistributedDataParallel (gloo);
              images/s of the whole batch, peak RSS the ranks' summed (the idle launcher's left out). For
              --mode train only (bench/run.sh runs it there alone)
  one-thread-avx512, passive-avx512, chunks-avx512, ddp-avx512
              the same with PyTorch on AVX-512 wherever it offers it: OPENBLAS_CORETYPE=SkylakeX (OpenBLAS's AVX-512
              kernels, which Debian's OpenBLAS 0.3.21 does not pick by itself on CPUs newer than it, Zen 4 and 5:
              it falls back to its AVX2 Haswell kernels) and ATEN_CPU_CAPABILITY=avx512 (PyTorch's own kernels;
              1.13 picks AVX2 by default). Both set here before torch loads. For CPUs with AVX-512 (bench/run.sh
              adds them there).

Run: /usr/bin/python3 bench/torch_vit.py --mode train --config vit-fmnist --iters 10 --warmup 2
Prints: torch <config> <mode> batch=B median_ms=.. img_per_s=.. gflops=.. peak_rss_mb=.. ... setup=<setup>
"""
import argparse
import os
import resource
import statistics
import time
from concurrent.futures import ThreadPoolExecutor

SETUPS = ("default", "one-thread", "all-threads", "passive", "chunks", "ddp", "one-thread-avx512", "passive-avx512",
          "chunks-avx512", "ddp-avx512")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("train", "infer", "eval"), default="train")
    ap.add_argument("--config", choices=("vit-fmnist", "vit-tiny16"), default="vit-fmnist")
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch", type=int, default=0, help="images per batch (default: the config's; eval: 500)")
    ap.add_argument("--threads-setup", choices=SETUPS, default="default")
    return ap.parse_args()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux reports kilobytes


ARGS = parse_args()
THREADS = ARGS.threads_setup.removesuffix("-avx512")  # the threading half of the setup
if ARGS.threads_setup.endswith("-avx512"):
    os.environ["OPENBLAS_CORETYPE"] = "SkylakeX"
    os.environ["ATEN_CPU_CAPABILITY"] = "avx512"
if THREADS == "passive":
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
if THREADS in ("chunks", "ddp"):
    os.environ["OPENBLAS_NUM_THREADS"] = "1"

import torch  # noqa: E402  (after OMP_WAIT_POLICY)
import torch.nn.functional as F  # noqa: E402
from torch_vit_model import VisionTransformer, timm_groups  # noqa: E402

BASE_RSS = peak_rss_mb()  # the libraries alone, before any model or data

CONFIGS = {
    "vit-fmnist": (dict(img_size=28, in_chans=1, patch_size=4, embed_dim=192, depth=6, num_heads=3, mlp_ratio=4,
                        num_classes=10), 128),
    "vit-tiny16": (dict(img_size=224, in_chans=3, patch_size=16, embed_dim=192, depth=12, num_heads=3, mlp_ratio=4,
                        num_classes=1000), 16),
}


def forward_macs_per_image(c):
    """Products only, as vit_bench counts them (see its comment): patch embedding, qkv, q k^T, attn v, proj,
    fc1, fc2, head. FLOP = 2 * MACs; training counts 3x the forward."""
    P, D, C, K = c["patch_size"], c["embed_dim"], c["in_chans"], c["num_classes"]
    N = (c["img_size"] // P) ** 2
    T, M = N + 1, int(D * c["mlp_ratio"])
    block = T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * M
    return N * C * P * P * D + c["depth"] * block + D * K


def forward_fn(model):
    """model(x), or under the chunks setup the batch's chunks side by side, one per core, each on its own thread
    (grad mode is per thread in PyTorch, so each turns it off)."""
    if THREADS != "chunks":
        return model
    cores = os.cpu_count()
    pool = ThreadPoolExecutor(cores)

    def one(part):
        with torch.no_grad():
            return model(part)

    return lambda x: torch.cat(list(pool.map(one, torch.chunk(x, cores))))


def fixed_batch(cfg, batch):
    """The generator (seed 1) and the one batch every setup times: images x, labels y."""
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"]), generator=gen)
    y = torch.randint(0, cfg["num_classes"], (batch,), generator=gen)
    return gen, x, y


def report(cfg, batch, times, rss, threads, warmup, extra=""):
    """The result line bench/run.sh reads: medians and minima of `times` (ms), GFLOP/s, peak RSS."""
    med = statistics.median_high(times)  # the same element vit_bench picks: sorted[n // 2]
    flop = 2.0 * forward_macs_per_image(cfg) * batch * (3 if ARGS.mode == "train" else 1)
    print(f"torch {ARGS.config} {ARGS.mode} batch={batch} median_ms={med:.2f} img_per_s={batch * 1e3 / med:.1f} "
          f"gflops={flop / (med * 1e6):.1f} peak_rss_mb={rss:.1f} min_ms={min(times):.2f} "
          f"base_rss_mb={BASE_RSS:.1f} threads={threads} {extra}iters={len(times)} warmup={warmup} "
          f"setup={ARGS.threads_setup} version={torch.__version__}")


def train_step(model, opt, x, y):
    """One training step: forward, F.cross_entropy, backward, the optimizer; loss.item() waits for it all."""
    loss = F.cross_entropy(model(x), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    loss.item()


def ddp_rank(rank, world, port, cfg, batch, iters, warmup, out):
    """One process of the ddp setup: its share of the batch, the step under DistributedDataParallel; rank 0 puts
    the step times on `out`, every rank its peak RSS."""
    import torch.distributed as dist

    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(VisionTransformer(**cfg))
    _, x, y = fixed_batch(cfg, batch)  # the same batch as the other setups, then this rank's rows
    lo, hi = batch * rank // world, batch * (rank + 1) // world
    x, y = x[lo:hi], y[lo:hi]
    model.train()
    opt = torch.optim.AdamW(timm_groups(model.module, 0.05), lr=1e-3)
    times = []
    for i in range(warmup + iters):
        dist.barrier()
        t0 = time.perf_counter()
        train_step(model, opt, x, y)
        dist.barrier()
        if i >= warmup:
            times.append((time.perf_counter() - t0) * 1e3)
    if rank == 0:
        out.put(("times", times))
    out.put(("rss", peak_rss_mb()))
    dist.destroy_process_group()


def main_ddp(cfg, batch, iters, warmup):
    import socket

    import torch.multiprocessing as mp

    if ARGS.mode != "train":
        raise SystemExit("torch_vit.py: the ddp setup is for --mode train")
    world = os.cpu_count()
    with socket.socket() as sock:  # a free port for the ranks to meet on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    out = mp.get_context("spawn").SimpleQueue()
    mp.start_processes(ddp_rank, args=(world, port, cfg, batch, iters, warmup, out), nprocs=world,
                       start_method="spawn")
    times, rss = None, 0.0  # the ranks' peak RSS summed; the launcher, idle, is left out
    for _ in range(world + 1):
        kind, value = out.get()
        if kind == "times":
            times = value
        else:
            rss += value
    report(cfg, batch, times, rss, 1, warmup, f"ranks={world} ")


def main():
    args = ARGS
    cfg, batch = CONFIGS[args.config]
    if args.batch < 0:
        raise SystemExit("torch_vit.py: --batch must be positive")
    batch = args.batch or (500 if args.mode == "eval" else batch)
    iters, warmup = max(1, args.iters), max(0, args.warmup)
    if THREADS == "ddp":
        return main_ddp(cfg, batch, iters, warmup)
    if THREADS in ("one-thread", "chunks"):
        torch.set_num_threads(1)
    elif THREADS in ("all-threads", "passive"):
        torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    model = VisionTransformer(**cfg)
    gen, x, y = fixed_batch(cfg, batch)
    times = []
    if args.mode == "eval":
        model.eval()
        xs = [torch.rand((batch, cfg["in_chans"], cfg["img_size"], cfg["img_size"]), generator=gen) for _ in range(2)]
        run = forward_fn(model)
        with torch.no_grad():
            for i in range(warmup + iters):
                t0 = time.perf_counter()
                for xb in xs:
                    run(xb).argmax(1)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3 / len(xs))
    elif args.mode == "infer":
        model.eval()
        run = forward_fn(model)
        with torch.no_grad():
            for i in range(warmup + iters):
                t0 = time.perf_counter()
                run(x)
                if i >= warmup:
                    times.append((time.perf_counter() - t0) * 1e3)
    else:
        model.train()
        opt = torch.optim.AdamW(timm_groups(model, 0.05), lr=1e-3)
        for i in range(warmup + iters):
            t0 = time.perf_counter()
            train_step(model, opt, x, y)
            if i >= warmup:
                times.append((time.perf_counter() - t0) * 1e3)
    report(cfg, batch, times, peak_rss_mb(), torch.get_num_threads(), warmup)


if __name__ == "__main__":
    main()
