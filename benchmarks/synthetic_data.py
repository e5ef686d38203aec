"""Synthetic training data throughput: clips per second for 24x256x256 clips.

Usage::

    python benchmarks/synthetic_data.py [--clips 30] [--frames 24] [--size 256] [--workers 2] [--points 256]

Rows: the default training config and its held-out ``wider()`` preset, each measured

* in one process (``generate_clip`` in a loop, ``torch.set_num_threads(1)``): clips/s per core;
* through ``torch.utils.data.DataLoader(SyntheticPointDataset, num_workers=W)`` (one thread per worker, as the
  DataLoader sets): steady-state clips/s after the first ``W`` items (worker start-up excluded), which includes
  converting the video to a float tensor and passing it between processes.

Besides wall-clock clips/s the table gives CPU seconds per clip (``time.process_time``, and ``RUSAGE_CHILDREN``
for the workers): on a machine shared with other jobs the wall clock mostly measures the other jobs, CPU time
much less so; ``clips/CPU-s`` is the rate one free core would give.

Timings on a shared machine are noisy: the load average before and after is printed with the table.
"""
from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path
from typing import Tuple

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def single_process(config, clips: int) -> Tuple[float, float]:
    """(clips per wall second, CPU seconds per clip)."""
    from trackers.train.data import generate_clip

    generate_clip(10_000, config)  # warm-up (imports, allocator)
    wall, cpu = time.perf_counter(), time.process_time()
    for seed in range(clips):
        generate_clip(seed, config)
    return clips / (time.perf_counter() - wall), (time.process_time() - cpu) / clips


def data_loader(config, clips: int, workers: int) -> Tuple[float, float]:
    """(steady-state clips per wall second, CPU seconds per clip of workers and main process together)."""
    import torch

    from trackers.train.data import SyntheticPointDataset

    ds = SyntheticPointDataset(clips + workers, config, seed=0)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = time.process_time()
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    it = iter(loader)
    for _ in range(workers):  # the first item of each worker also pays for its start-up
        next(it)
    start = time.perf_counter()
    n = sum(1 for _ in it)
    rate = n / (time.perf_counter() - start)
    del it  # joins the workers, so their CPU time shows up in RUSAGE_CHILDREN
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    used = (after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime) + time.process_time() - cpu
    return rate, used / (clips + workers)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clips", type=int, default=30)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--points", type=int, default=256)
    args = ap.parse_args()

    import torch

    from trackers.train.data import SyntheticConfig

    torch.set_num_threads(1)
    base = SyntheticConfig(num_frames=args.frames, height=args.size, width=args.size, num_points=args.points)
    load_before = os.getloadavg()
    rows = []
    for name, cfg in (("train (default)", base), ("wider() held-out", base.wider())):
        rows.append((name, "1 process, 1 thread", single_process(cfg, args.clips)))
        rows.append((name, f"DataLoader, {args.workers} workers", data_loader(cfg, args.clips, args.workers)))
    load_after = os.getloadavg()

    print(f"\nSynthetic clips of {args.frames}x{args.size}x{args.size}, {args.points} points, {args.clips} clips per row")
    print(f"{'config':<18} {'mode':<24} {'clips/s':>8} {'ms/clip':>8} {'CPU s/clip':>10} {'clips/CPU-s':>11}")
    for name, mode, (rate, cpu) in rows:
        print(f"{name:<18} {mode:<24} {rate:8.2f} {1000.0 / rate:8.1f} {cpu:10.3f} {1.0 / cpu:11.2f}")
    print("clips/s: wall clock (DataLoader: steady state, worker start-up excluded); CPU s/clip: process CPU time "
          "(DataLoader: workers including start-up, plus the main process), which a loaded machine inflates less.")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
