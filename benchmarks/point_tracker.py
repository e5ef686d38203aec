"""Speed and memory of PointTracker (CoTracker3) on the CPU; prints a markdown table.

Every configuration runs in a fresh subprocess (so peak RSS = ``ru_maxrss`` of that run) with
``torch.set_num_threads(threads)``: 1 warm-up + ``--repeats`` timed runs, median reported. Weights are the tests'
deterministic synthetic ones (``tests/golden_weights.py`` over
``tests/data/cotracker3/state_dict_{offline,online}.tsv``, seed 0 -- the weights the official timings below were
also taken with); speed does not depend on them. Video: the
24-frame 240x320 golden clip of ``tests/data/cotracker3/golden_offline_predictor_queries.npz``, resized (bilinear) to
384x512 and, for longer runs, played forwards and backwards in a loop.

    python benchmarks/point_tracker.py                 # everything (long: ~tens of minutes on 2 cores)
    python benchmarks/point_tracker.py --only speed    # 24-frame rows only
    python benchmarks/point_tracker.py --only stream --stream-frames 200 2000
    python benchmarks/point_tracker.py --only long     # offline, 300 frames x 1000 points
    python benchmarks/point_tracker.py --only roofline # FLOPs of each run vs the best GEMM rate of this CPU
    python benchmarks/point_tracker.py --only linear --threads 1   # plain vs oneDNN linears, interleaved

``--only linear`` compares the two linear backends of ``trackers.ops`` (``F.linear`` vs oneDNN with packed weights
and fused bias + GELU) side by side: one process per (model, points, dtype) holds the tracker and alternates the
backends run by run (the order flips every round), so both see the same load; medians of wall and process CPU time
(CPU time is less disturbed by other jobs on the cores). Each row ends with the roofline: the run's FLOPs (torch's
counter: matrix products, convolutions, attention) over the best GEMM rate per CPU second this CPU reached at that
dtype and thread count (either backend), and the fraction of that bound each backend reaches (bound / CPU time per
thread).

Official reference (same machine type, 2 threads, fp32, 24 frames 384x512): offline 15.5 s / 61.1 s
(100 / 1000 points) at 2.9 / 3.2 GiB peak; online 17.6 s / 82.6 s at 2.3 / 2.5 GiB.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "cotracker3"
GOLDEN_CLIP = DATA / "golden_offline_predictor_queries.npz"
OFFICIAL = {("offline", 100): (15.5, 2.86), ("offline", 1000): (61.1, 3.20),
            ("online", 100): (17.6, 2.25), ("online", 1000): (82.6, 2.51)}


def _cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _gib(kib: float) -> float:
    return kib / 1024 ** 2


def _rss_now_kib() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024


def _tracker(kind: str, dtype: str):
    import torch

    import trackers

    sys.path.insert(0, str(ROOT / "tests"))
    from golden_weights import synth_state_dict

    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_cotracker3_{kind}_synth.pth"
    if not path.exists():
        tmp = path.with_suffix(f".{os.getpid()}.tmp")  # written whole, then renamed: concurrent runs never see half
        torch.save(synth_state_dict(DATA / f"state_dict_{kind}.tsv", 0), tmp)
        os.replace(tmp, path)
    tracker = trackers.PointTracker.from_pretrained(f"cotracker3-{kind}", checkpoint=path)
    return tracker.to(dtype=getattr(torch, dtype))


def _video(T: int, H: int = 384, W: int = 512):
    """``T`` frames ``(T, H, W, 3)`` uint8: the golden clip resized to ``H x W``, looped forwards and backwards."""
    import numpy as np
    import torch
    import torch.nn.functional as F

    clip = torch.from_numpy(np.load(GOLDEN_CLIP)["video"][0]).float()  # (24, 3, 240, 320)
    clip = F.interpolate(clip, size=(H, W), mode="bilinear", align_corners=False)
    clip = clip.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    n = len(clip)
    cycle = list(range(n)) + list(range(n - 2, 0, -1))  # 0 1 .. n-1 n-2 .. 1, then again: no jump at the turn
    return np.stack([clip[cycle[i % len(cycle)]] for i in range(T)])


def _queries(n: int, T: int = 24):
    import torch

    g = torch.Generator().manual_seed(0)
    xy = torch.rand(n, 2, generator=g) * torch.tensor([511.0, 383.0])
    return torch.cat([torch.zeros(n, 1), xy], 1)


def run_one(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    if args.task == "speed":
        tracker = _tracker(args.kind, args.dtype)
        video = _video(24)
        q = _queries(args.points)
        times, cpu = [], []
        for i in range(args.repeats + 1):
            t0, c0 = time.perf_counter(), _cpu_s()
            tracker.track(video, q)
            if i:
                times.append(time.perf_counter() - t0)
                cpu.append(_cpu_s() - c0)
        return {"seconds": statistics.median(times), "runs": times, "cpu": statistics.median(cpu),
                "peak_gib": _gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}
    if args.task == "flops":
        from _roofline import count_flops

        tracker = _tracker(args.kind, args.dtype)
        video, q = _video(24), _queries(args.points)
        total, by_op = count_flops(lambda: tracker.track(video, q))
        return {"gflop": total / 1e9, "by_op": {k: v / 1e9 for k, v in by_op.items()}}
    if args.task == "linear":
        return _interleaved_linear(args)
    if args.task == "gemm":
        from _roofline import best_gemm_gflops

        return best_gemm_gflops(args.dtype)
    if args.task == "gemmprobe":
        from _roofline import gemm_probe

        return gemm_probe(("float32", "bfloat16"))
    if args.task == "long":
        tracker = _tracker("offline", args.dtype)
        video = _video(args.frames)
        t0 = time.perf_counter()
        tracker.track(video, _queries(args.points))
        return {"seconds": time.perf_counter() - t0,
                "peak_gib": _gib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)}
    if args.task == "stream":
        tracker = _tracker("online", args.dtype)
        session = tracker.stream(grid_size=int(round(args.points ** 0.5)))
        H, W = 384, 512
        import numpy as np

        g = np.random.default_rng(0)
        base = g.integers(0, 255, size=(H + 64, W + 64, 3), dtype=np.uint8)
        marks, window = {}, {}
        t0 = time.perf_counter()
        for t in range(max(args.stream_frames)):
            o = t % 64
            session.step(base[o:o + H, o:o + W])  # returns only the frames this call produced: cheap
            # RSS moves by a few % from step to step (temporaries the allocator keeps or returns), so each mark is
            # the highest reading over the 40 frames before it: a steady-state high-water mark, not one sample
            for mark in args.stream_frames:
                if mark - 40 < t + 1 <= mark:
                    window[mark] = max(window.get(mark, 0.0), _gib(_rss_now_kib()))
            if t + 1 in args.stream_frames:
                marks[t + 1] = window[t + 1]
        session.close()
        return {"rss_gib": marks, "seconds": time.perf_counter() - t0}
    if args.task == "bf16err":
        import numpy as np

        d = np.load(GOLDEN_CLIP)
        out = {}
        for kind in ("offline", "online"):
            res = {dt: _tracker(kind, dt).track(d["video"][0], d["queries"][0]) for dt in ("float32", "bfloat16")}
            out[kind] = float((res["float32"].tracks - res["bfloat16"].tracks).abs().max())
        return out
    raise ValueError(args.task)


LINEAR_BACKENDS = ("plain", "onednn")


def _interleaved_linear(args) -> dict:
    """Time ``track`` with each linear backend in turn (same process, same inputs); optionally count its FLOPs."""
    import torch

    from trackers import ops

    tracker = _tracker(args.kind, args.dtype)
    video, q = _video(args.frames), _queries(args.points)
    warm = _video(4)
    for b in LINEAR_BACKENDS:  # packs the weights and warms the allocator, outside the timed runs
        with ops.use_linear_backend(b):
            tracker.track(warm, q[:16])
    wall = {b: [] for b in LINEAR_BACKENDS}
    cpu = {b: [] for b in LINEAR_BACKENDS}
    tracks = {}
    for r in range(args.repeats):
        for b in (LINEAR_BACKENDS if r % 2 == 0 else LINEAR_BACKENDS[::-1]):
            with ops.use_linear_backend(b):
                t0, c0 = time.perf_counter(), _cpu_s()
                res = tracker.track(video, q)
                wall[b].append(time.perf_counter() - t0)
                cpu[b].append(_cpu_s() - c0)
            tracks[b] = res.tracks
    out = {"wall": wall, "cpu": cpu, "threads": torch.get_num_threads(),
           "max_track_diff": float((tracks["plain"] - tracks["onednn"]).abs().max()),
           "route": ops.linear_info()[f"linear_route_cpu_{args.dtype}"]}
    if args.count_flops:
        from _roofline import count_flops

        out["gflop"] = count_flops(lambda: tracker.track(video, q))[0] / 1e9
    return out


def linear_rows(args) -> list:
    """plain vs oneDNN linears, interleaved in one process per row, with the roofline of each row."""
    from _roofline import bound, cpu_flags, cpu_model

    probe = _spawn("--task", "gemmprobe", threads=args.threads)
    load = os.getloadavg()
    out = ["", f"CPU: {cpu_model()} ({os.cpu_count()} cores; {cpu_flags('avx512f', 'avx512_bf16', 'amx_bf16')}); "
               f"{args.threads} thread(s); load average {load[0]:.1f} when starting (other jobs share the cores)",
           "best GEMM GFLOP/s per CPU second, the roofline rate (max over both backends; plain / oneDNN): "
           + "; ".join(f"{d} {probe[d]['best_cpu']:.0f} ({probe[d]['plain_cpu']:.0f} / {probe[d]['onednn_cpu']:.0f}"
                       f"; wall-clock {probe[d]['best']:.0f})" for d in ("float32", "bfloat16")),
           "",
           "| run | points | dtype | plain wall s (runs) | oneDNN wall s (runs) | oneDNN / plain wall | plain CPU s | "
           "oneDNN CPU s | oneDNN / plain CPU | max track diff px | GFLOP | bound s | fraction of bound plain / "
           "oneDNN |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    gflop = {}
    for kind in args.kinds:
        for n in args.sizes:
            for dtype in args.dtypes:
                count = (kind, n) not in gflop
                r = _spawn("--task", "linear", "--kind", kind, "--points", str(n), "--dtype", dtype,
                           "--repeats", str(args.repeats), "--frames", str(args.linear_frames),
                           *(["--count-flops"] if count else []), threads=args.threads)
                if count:
                    gflop[(kind, n)] = r["gflop"]
                g = gflop[(kind, n)]
                med = {k: {b: statistics.median(r[k][b]) for b in LINEAR_BACKENDS} for k in ("wall", "cpu")}
                # rates and times both per CPU second of each thread: what the run would take on otherwise idle
                # cores (wall-clock rates of a probe on loaded cores vary by 1.5x from run to run, these by ~5%)
                b_s, _ = bound(g, probe[dtype]["best_cpu"], 1.0)
                frac = {b: b_s / (med["cpu"][b] / r["threads"]) for b in LINEAR_BACKENDS}
                runs = {b: ", ".join(f"{t:.1f}" for t in r["wall"][b]) for b in LINEAR_BACKENDS}
                out.append(
                    f"| {kind}, {args.linear_frames} frames 384x512 | {n} | {dtype} | {med['wall']['plain']:.1f} "
                    f"({runs['plain']}) | {med['wall']['onednn']:.1f} ({runs['onednn']}) | "
                    f"{med['wall']['onednn'] / med['wall']['plain']:.2f} | {med['cpu']['plain']:.1f} | "
                    f"{med['cpu']['onednn']:.1f} | {med['cpu']['onednn'] / med['cpu']['plain']:.2f} | "
                    f"{r['max_track_diff']:.2g} | {g:.0f} | {b_s:.1f} | {frac['plain']:.2f} / {frac['onednn']:.2f} |")
                print(out[-1], file=sys.stderr, flush=True)
    return out


def _spawn(*extra: str, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--one", "--threads", str(threads), *extra]
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def roofline_rows(args) -> list:
    """Lower bounds: counted FLOPs / the best measured GEMM rate, next to the targets (half / quarter of official)."""
    out = ["", "| run | points | GFLOP (matmul+conv+attention) | best GEMM GFLOP/s fp32 / bf16 | "
               "bound fp32 s | target fp32 s | bound bf16 s | target bf16 s |", "|---|---|---|---|---|---|---|---|"]
    peak = {dt: _spawn("--task", "gemm", "--dtype", dt, threads=args.threads)["best"]
            for dt in ("float32", "bfloat16")}
    for kind in args.kinds:
        for n in args.sizes:
            r = _spawn("--task", "flops", "--kind", kind, "--points", str(n), threads=args.threads)
            ref = OFFICIAL[(kind, n)][0]
            out.append(f"| {kind}, 24 frames 384x512 | {n} | {r['gflop']:.0f} | {peak['float32']:.0f} / "
                       f"{peak['bfloat16']:.0f} | {r['gflop'] / peak['float32']:.1f} | {ref / 2:.1f} | "
                       f"{r['gflop'] / peak['bfloat16']:.1f} | {ref / 4:.1f} |")
            print(out[-1], file=sys.stderr, flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--task", default="speed")
    p.add_argument("--kind", default="offline")
    p.add_argument("--points", type=int, default=100)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--frames", type=int, default=300)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--stream-frames", type=int, nargs="+", default=[200, 2000])
    p.add_argument("--only", choices=["speed", "bf16", "stream", "long", "roofline", "linear", "all"],
                   default="all")
    p.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], help="dtypes of --only linear")
    p.add_argument("--linear-frames", type=int, default=24, help="clip length of --only linear")
    p.add_argument("--count-flops", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--kinds", nargs="+", default=["offline", "online"])
    p.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    args = p.parse_args()
    if args.one:
        print(json.dumps(run_one(args)))
        return

    rows = []
    if args.only in ("speed", "bf16", "all"):
        rows += ["| run | points | dtype | median wall s (runs) | CPU s | peak RSS GiB | official fp32 s / GiB |",
                 "|---|---|---|---|---|---|---|"]
        dtypes = {"speed": ["float32"], "bf16": ["bfloat16"], "all": ["float32", "bfloat16"]}[args.only]
        for dtype in dtypes:
            for kind in args.kinds:
                for n in args.sizes:
                    r = _spawn("--task", "speed", "--kind", kind, "--points", str(n), "--dtype", dtype,
                               "--repeats", str(args.repeats), threads=args.threads)
                    ref = OFFICIAL[(kind, n)]
                    runs = ", ".join(f"{t:.1f}" for t in r["runs"])
                    rows.append(f"| {kind}, 24 frames 384x512 | {n} | {dtype} | {r['seconds']:.1f} ({runs}) | "
                                f"{r['cpu']:.0f} | {r['peak_gib']:.2f} | {ref[0]} / {ref[1]} |")
                    print(rows[-1], file=sys.stderr, flush=True)
        if "bfloat16" in dtypes:
            r = _spawn("--task", "bf16err", threads=args.threads)
            rows.append(f"| bf16 vs fp32 max track difference on the golden 240x320 video | 12 | bfloat16 | "
                        f"offline {r['offline']:.3f} px, online {r['online']:.3f} px | | | |")
    if args.only in ("stream", "all"):
        r = _spawn("--task", "stream", "--points", "100", "--dtype", args.dtype, "--stream-frames",
                   *map(str, args.stream_frames), threads=args.threads)
        marks = ", ".join(f"{k} frames: {v:.3f}" for k, v in r["rss_gib"].items())
        rows.append(f"| online stream, frame by frame, RSS (max over the 40 frames before) after | 100 | {args.dtype} "
                    f"| {r['seconds']:.0f} total | | {marks} | |")
    if args.only in ("long", "all"):
        r = _spawn("--task", "long", "--frames", str(args.frames), "--points", "1000", "--dtype", args.dtype,
                   threads=args.threads)
        rows.append(f"| offline, {args.frames} frames 384x512 | 1000 | {args.dtype} | {r['seconds']:.0f} | "
                    f" | {r['peak_gib']:.2f} | (target < 6 GiB) |")
    if args.only in ("roofline", "all"):
        rows += roofline_rows(args)
    if args.only in ("linear", "all"):
        rows += linear_rows(args)
    print(f"threads={args.threads}; the machine may be shared with other jobs: timings are noisy.\n")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
