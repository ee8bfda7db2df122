#!/usr/bin/env python3
"""The scaling model of data parallel in bench/README.md, from numbers measured by bench/dist_bench.sh.

A step on N ranks takes T_compute(per-rank batch) + T_comm(N), with
    T_comm(N) = T_pack + 2 (N - 1) / N * S / beta + 2 (N - 1) * k * alpha
S the gradient bytes, k the 4 MB buckets (each an all-to-all and an all-gather of N - 1 messages per rank),
beta a rank's link bandwidth and alpha the latency of one message. T_pack (packing, the rank-order sums,
unpacking) is taken as spdlab's all-reduce time minus MPI_Allreduce's on the same bytes, both measured on 2
ranks of one machine. The network figures are assumptions (typical values), not measurements.
Usage: python3 bench/dist_model.py
"""

# Measured (bench/dist_bench.sh, 2026-12-04, this 2-core machine; medians).
MEASURED = {
    # name: (gradient MB, buckets, spdlab all-reduce ms, MPI_Allreduce ms, compute ms per image on one core)
    "vit_tiny_patch16_224": (22.87, 6, 8.846, 4.708, 1390.77 / 16),
    "vit_fmnist_tiny": (1.82, 1, 0.784, 0.281, 1000.0 / (1110 / 2)),
}
NETWORKS = {  # assumed: (beta GB/s per rank, alpha microseconds per message)
    "10 GbE (TCP)": (1.1, 30.0),
    "100 Gb/s InfiniBand": (11.0, 3.0),
}


def comm_ms(name, n, beta, alpha_us):
    mb, k, ours, mpi, _ = MEASURED[name]
    pack = max(0.0, ours - mpi)
    return pack + 2 * (n - 1) / n * mb / 1e3 / beta * 1e3 + 2 * (n - 1) * k * alpha_us / 1e3


def table(name, batch, weak):
    per_img = MEASURED[name][4]
    kind = f"per-rank batch {batch} (weak scaling)" if weak else f"global batch {batch} (strong scaling)"
    print(f"\n{name}, one core per rank, {kind}:\n")
    print("| N | " + " | ".join(f"{net}: comm ms, efficiency, speedup" for net in NETWORKS) + " |")
    print("|---:|" + "---|" * len(NETWORKS))
    for n in (2, 4, 8, 16, 64):
        cells = []
        for net, (beta, alpha) in NETWORKS.items():
            c = comm_ms(name, n, beta, alpha)
            compute = per_img * (batch if weak else batch / n)
            eff = compute / (compute + c)
            cells.append(f"{c:.1f}, {100 * eff:.0f}%, {n * eff:.1f}x")
        print(f"| {n} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    table("vit_tiny_patch16_224", 16, weak=True)
    table("vit_fmnist_tiny", 64, weak=False)
