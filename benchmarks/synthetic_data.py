"""Synthetic training data throughput: clips per second for 24x256x256 clips.

Usage::

    python benchmarks/synthetic_data.py [--clips 30] [--frames 24] [--size 256] [--workers 2] [--points 256]

Rows: the default training config and its held-out ``wider()`` preset, each measured

* in one process (``generate_clip`` in a loop, ``torch.set_num_threads(1)``): clips/s per core;
* through ``torch.utils.data.DataLoader(SyntheticPointDataset, num_workers=W)`` (one thread per worker, as the
  DataLoader sets): steady-state clips/s after the first ``W`` items (worker start-up excluded), which includes
  converting the video to a float tensor and passing it between processes.

Timings on a shared machine are noisy: the load average before and after is printed with the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def single_process(config, clips: int) -> float:
    from trackers.train.data import generate_clip

    generate_clip(10_000, config)  # warm-up (imports, allocator)
    start = time.perf_counter()
    for seed in range(clips):
        generate_clip(seed, config)
    return clips / (time.perf_counter() - start)


def data_loader(config, clips: int, workers: int) -> float:
    import torch

    from trackers.train.data import SyntheticPointDataset

    ds = SyntheticPointDataset(clips + workers, config, seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
    it = iter(loader)
    for _ in range(workers):  # the first item of each worker also pays for its start-up
        next(it)
    start = time.perf_counter()
    n = sum(1 for _ in it)
    return n / (time.perf_counter() - start)


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
    print(f"{'config':<18} {'mode':<24} {'clips/s':>8} {'ms/clip':>8}")
    for name, mode, rate in rows:
        print(f"{name:<18} {mode:<24} {rate:8.2f} {1000.0 / rate:8.1f}")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}; "
          f"{os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
