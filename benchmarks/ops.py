"""Fused-operator benchmark: the corr4d CPU reference vs the unfused grid_sample-then-einsum path, plus GPU traffic.

Usage::

    python benchmarks/ops.py [--threads 2 1] [--reps 2] [--rounds 2] [--points 1000] [--frames 24] [--backward]

Table 1 (CPU, measured): a CoTracker3-sized correlation -- 24 frames, 1000 tracks, 4 pyramid levels (level 0 is
96x128, as for a 384x512 input at stride 4), radius 3, 128 channels, fp32 -- computed level by level, each level's
output dropped before the next (as the model does, feeding it straight into ``corr_mlp``). Each implementation
runs in its own subprocesses (``--rounds`` of them, alternating with the other implementation, each doing one
untimed and ``--reps`` timed runs); time is the best run (wall and process-CPU seconds), peak memory is the
growth of the peak RSS over the RSS with the inputs already allocated. ``--backward`` adds a forward+backward row
(gradients w.r.t. the feature maps and the support features).

Table 2 (GPU, computed from shapes): global-memory bytes moved by the fused Triton kernels vs the unfused path for
the same calls (see ``trackers.ops.corr4d_bytes_moved`` / ``msda_bytes_moved`` for what is counted). The kernels
cannot be timed on this machine.

Timings on a shared machine are noisy: the load average before and after is printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LEVEL0 = (96, 128)
RADIUS, LEVELS, CHANNELS = 3, 4, 128


def _rss_mib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worker(impl: str, threads: int, reps: int, points: int, frames: int, backward: bool) -> dict:
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO))
    from trackers.ops import corr4d_grid_sample, corr4d_reference

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    B, T, N, C = 1, frames, points, CHANNELS
    K = (2 * RADIUS + 1) ** 2
    H, W = LEVEL0
    fmap = torch.randn(B, T, C, H, W, generator=g)
    fmap = fmap / fmap.norm(dim=2, keepdim=True)
    pyramid = [fmap]
    for _ in range(LEVELS - 1):
        pyramid.append(F.avg_pool2d(pyramid[-1].flatten(0, 1), 2).unflatten(0, (B, T)))
    coords0 = torch.rand(B, 1, N, 2, generator=g) * torch.tensor([W - 1.0, H - 1.0])
    coords0 = coords0 + torch.cumsum(torch.randn(B, T, N, 2, generator=g), dim=1)  # tracks wander, some leave
    support = [torch.randn(B, N, K, C, generator=g) / C ** 0.5 for _ in range(LEVELS)]
    fn = corr4d_reference if impl == "reference" else corr4d_grid_sample
    if backward:
        for t in pyramid + support:
            t.requires_grad_(True)

    def run():
        for lvl in range(LEVELS):
            out = fn(pyramid[lvl], coords0 / 2 ** lvl, support[lvl], RADIUS)
            if backward:
                torch.autograd.grad(out, (pyramid[lvl], support[lvl]), torch.ones_like(out))
            del out

    rss0, max0 = _rss_mib(), _maxrss_mib()
    run()  # untimed: first-touch effects (allocator, lazy init) land here
    walls, cpus = [], []
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        run()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    peak = _maxrss_mib()
    return {"impl": impl, "wall": min(walls), "cpu": min(cpus), "walls": walls,
            "peak_extra_mib": peak - rss0, "input_rss_mib": rss0, "maxrss_before_mib": max0}


def _run_child(impl: str, args, threads: int, backward: bool) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", impl, "--threads", str(threads),
           "--reps", str(args.reps), "--points", str(args.points), "--frames", str(args.frames)]
    if backward:
        cmd.append("--backward")
    env = dict(os.environ)
    env.pop("TRITON_INTERPRET", None)
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise RuntimeError(f"benchmark child {impl} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _gib(nbytes: float) -> str:
    return f"{nbytes / 2**30:.2f} GiB"


def gpu_table(points: int, frames: int) -> list[str]:
    sys.path.insert(0, str(REPO))
    from trackers.ops import corr4d_bytes_moved, msda_bytes_moved

    rows = ["| GPU call (forward) | dtype | fused kernel | unfused path | ratio | of which sampled intermediate |",
            "|---|---|---|---|---|---|"]
    for dtype, eb in (("fp32", 4), ("bf16", 2)):
        tot_f = tot_u = tot_s = 0
        H, W = LEVEL0
        for lvl in range(LEVELS):
            b = corr4d_bytes_moved(1, frames, points, CHANNELS, H >> lvl, W >> lvl, RADIUS, elem_bytes=eb,
                                   out_bytes=eb)
            tot_f, tot_u, tot_s = tot_f + b["fused"], tot_u + b["unfused"], tot_s + b["sampled_intermediate"]
        rows.append(f"| corr4d, {frames} frames x {points} tracks x {LEVELS} levels, r={RADIUS}, C={CHANNELS} "
                    f"| {dtype} | {_gib(tot_f)} | {_gib(tot_u)} | {tot_u / tot_f:.2f}x | 2 x {_gib(tot_s)} |")
    calls = [
        ("ms_deform_attn, DETRack: N=1, Lq=68, 8 heads x 32, one 16x16 level, P=4", 1, 68, 8, 32, [(16, 16)], 4),
        ("ms_deform_attn, Deformable-DETR: N=8, Lq=900, 8 heads x 32, 4 levels (100x167 ... 13x21), P=4",
         8, 900, 8, 32, [(100, 167), (50, 84), (25, 42), (13, 21)], 4),
    ]
    for name, N, Lq, M, C, shapes, P in calls:
        b = msda_bytes_moved(N, Lq, M, C, shapes, P)
        rows.append(f"| {name} | fp32 | {b['fused'] / 2**20:.2f} MiB | {b['unfused'] / 2**20:.2f} MiB "
                    f"| {b['unfused'] / b['fused']:.2f}x | 2 x {b['sampled_intermediate'] / 2**20:.2f} MiB |")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, nargs="+", default=[2, 1], help="torch threads; one table row pair each")
    ap.add_argument("--reps", type=int, default=2, help="timed runs per child process (after one untimed run)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating child processes per implementation")
    ap.add_argument("--points", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--backward", action="store_true", help="also time forward+backward")
    ap.add_argument("--child", choices=("reference", "grid_sample"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(worker(args.child, args.threads[0], args.reps, args.points, args.frames, args.backward)))
        return 0

    load_before = os.getloadavg()
    results = []
    for threads in args.threads:
        for backward in ([False, True] if args.backward else [False]):
            res: dict[str, dict] = {}
            for _ in range(args.rounds):  # alternate the two so that load changes hit both alike
                for impl in ("grid_sample", "reference"):
                    r = _run_child(impl, args, threads, backward)
                    best = res.get(impl)
                    if best is None:
                        res[impl] = r
                    else:
                        best["walls"] += r["walls"]
                        best["wall"] = min(best["wall"], r["wall"])
                        best["cpu"] = min(best["cpu"], r["cpu"])
                        best["peak_extra_mib"] = max(best["peak_extra_mib"], r["peak_extra_mib"])
            results.append((threads, backward, res))
    load_after = os.getloadavg()

    print(f"### corr4d on the CPU: {args.frames} frames x {args.points} tracks x {LEVELS} levels "
          f"(level 0 {LEVEL0[0]}x{LEVEL0[1]}), r={RADIUS}, C={CHANNELS}, fp32; best of {args.rounds} processes x "
          f"{args.reps} runs\n")
    print("| threads | pass | implementation | wall s | CPU s | peak extra memory | speed-up (wall / CPU) "
          "| memory ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for threads, backward, res in results:
        base = res["grid_sample"]
        for impl, label in (("grid_sample", "unfused grid_sample + einsum"),
                            ("reference", "trackers.ops corr4d reference (torch)")):
            r = res[impl]
            if impl == "reference":
                speed = f"{base['wall'] / r['wall']:.2f}x / {base['cpu'] / r['cpu']:.2f}x"
                mem = f"{base['peak_extra_mib'] / max(r['peak_extra_mib'], 1e-9):.2f}x lower"
            else:
                speed = mem = "1.00x"
            print(f"| {threads} | {'fwd+bwd' if backward else 'forward'} | {label} | {r['wall']:.2f} | {r['cpu']:.2f} "
                  f"| {r['peak_extra_mib']:.0f} MiB | {speed} | {mem} |")
    print(f"\nLoad average (1/5/15 min) before: {load_before[0]:.2f}/{load_before[1]:.2f}/{load_before[2]:.2f}, "
          f"after: {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f} on {os.cpu_count()} cores "
          "(a shared machine: wall times are noisy, CPU seconds less so; with 2 threads on a loaded machine OpenMP "
          "barriers cost milliseconds each, which penalises the chunked reference's more numerous, smaller ops).")
    for threads, backward, res in results:
        for impl, r in res.items():
            print(f"<!-- {threads} threads {'fwd+bwd' if backward else 'fwd'} {impl}: wall times "
                  f"{[round(w, 3) for w in r['walls']]}, input RSS {r['input_rss_mib']:.0f} MiB -->")
    print("\n### GPU kernels: global-memory traffic from shapes (not timed: no GPU here)\n")
    print("\n".join(gpu_table(args.points, args.frames)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
