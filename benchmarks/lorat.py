"""LoRAT-B-224 CPU speed and memory: per-frame time, peak RSS, bf16 vs fp32 boxes, merged-LoRA vs plain ViT.

Usage::

    python benchmarks/lorat.py [--threads 2] [--frames 24]

Prints a markdown table. Each configuration runs in its own process so that peak RSS is per configuration
(it includes imports, the checkpoint file being read and the model, like the official measurement).
Weights: the synthetic golden weights of the tests (``tests/golden_weights.py`` over the layout in
``tests/data/lorat/state_dict_B224.tsv``, seed 0, head box bias set to -2.0 -- golden "variant A", boxes of a
sensible size); speed does not depend on the values, the box comparisons do. Video: the 12 frames (240x320) of
``tests/data/lorat/golden_track_B224.npz``, played forwards and backwards in a loop to the needed length (no jump
at the turn, so the target keeps moving smoothly). The fp32 row also tracks the golden clip itself and compares its
boxes to the official pipeline's (``boxes_xyxy_A``). The reference is the official pipeline on the same kind of
machine: 0.219 s/frame (fp32, 2 threads, 240x320 frames), 1.47 GiB peak.

Timings on a shared machine are noisy: the load average before and after is printed with the table.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

OFFICIAL_S_PER_FRAME = 0.219
OFFICIAL_PEAK_GIB = 1.47
REPO = Path(__file__).resolve().parents[1]


DATA = REPO / "tests" / "data" / "lorat"
GOLDEN_TRACK = DATA / "golden_track_B224.npz"
VARIANT_A_HEAD_BIAS = -2.0  # golden "variant A": boxes stay 60-90 px on the golden clip


def _synth_state_dict(tsv: Path, seed: int = 0):
    """The tests' deterministic synthetic weights (``tests/golden_weights.py``)."""
    sys.path.insert(0, str(REPO / "tests"))
    from golden_weights import synth_state_dict

    return synth_state_dict(tsv, seed)


def _peak_rss_gib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # ru_maxrss is KiB on Linux


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def looped(video, frames: int):
    """``frames`` frames of ``video`` played forwards, backwards, forwards... (0 1 .. T-1 T-2 .. 1 0 1 ..)."""
    import numpy as np

    T = len(video)
    cycle = list(range(T)) + list(range(T - 2, 0, -1)) if T > 1 else [0]
    return np.stack([video[cycle[i % len(cycle)]] for i in range(frames)])


def _video_and_box(frames: int):
    """``frames + 1`` frames of the looped golden clip, its initial box and the golden file."""
    import numpy as np

    ref = np.load(GOLDEN_TRACK)
    return looped(ref["video"], frames + 1), ref["init_box_xyxy"], ref


def _weights_file(tmp: Path) -> Path:
    """A merged official-layout state dict (what checkpoint= accepts) written to disk."""
    import torch

    path = tmp / "lorat_b224_merged.pth"
    sd = _synth_state_dict(DATA / "state_dict_B224.tsv", 0)
    sd["head.reg_mlp.layers.2.bias"][:] = VARIANT_A_HEAD_BIAS
    torch.save(sd, path)
    del sd
    return path


# ---------------------------------------------------------------------------------------------- child runs

def child_track(dtype_name: str, threads: int, frames: int, weights: str) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    import trackers

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    tracker = trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint=weights, dtype=dtype)
    video, init_box, ref = _video_and_box(frames)
    session = tracker.stream(video[0], init_box)
    walls, cpus, boxes = [], [], [session.boxes.numpy()]
    for t in range(1, frames + 1):
        w0, c0 = time.perf_counter(), time.process_time()
        step = session.step(video[t])  # BoxTracks of this one frame
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
        boxes.append(step.boxes[0].numpy())
    last = slice(max(0, frames - 10), frames)
    # Network forward alone (same inputs as a tracking step).
    st = session.targets[0]
    from trackers.box.pipeline import search_crop

    x, _ = search_crop(torch.from_numpy(video[-1]).permute(2, 0, 1).float(), st, tracker.settings,
                       tracker.crop_sizes)
    fwd = []
    with torch.inference_mode():
        for _ in range(6):
            w0 = time.perf_counter()
            tracker.model.forward_tokens(st.template, x[None].to(tracker.model.input_dtype))
            fwd.append(time.perf_counter() - w0)
    out = {
        "dtype": dtype_name,
        "s_per_frame": _median(walls[last]),
        "s_per_frame_min": min(walls[last]),
        "cpu_s_per_frame": _median(cpus[last]),
        "forward_s": _median(fwd[2:]),
        "peak_rss_gib": _peak_rss_gib(),
        "boxes": np.stack(boxes).tolist(),
    }
    res = tracker.track(ref["video"], ref["init_box_xyxy"])
    out["golden_boxes"] = res.boxes.numpy().tolist()
    out["golden_box_err_px"] = float(np.abs(res.boxes.numpy()[1:] - ref["boxes_xyxy_A"]).max())
    return out


def child_ratio(threads: int, reps: int) -> dict:
    """Merged LoRAT backbone vs a plain ViT-B/14 of the same size on the same 320 tokens (interleaved runs)."""
    import torch

    torch.set_num_threads(threads)
    import trackers
    from trackers.models.lorat import LoRAT, LoRATConfig
    from trackers.nn.vit import VisionTransformer

    torch.manual_seed(0)
    cfg = LoRATConfig(**{**trackers.get_entry("lorat-b-224").config, "lora_rank": 64})
    unmerged_model = LoRAT(cfg).eval()
    merged_copy = LoRAT(cfg).eval()
    merged_copy.load_state_dict(unmerged_model.state_dict())
    merged_copy.merge_lora()
    # The same ViT-B/14 size (width, depth, heads, FFN) as a plain encoder.
    plain = VisionTransformer(cfg.vit_spec(), patch_size=14, img_size=518, cls_token=False, pos_embed=False).eval()
    z = torch.randn(1, 3, 112, 112)
    x = torch.randn(1, 3, 224, 224)
    tokens = torch.randn(1, 320, 768)
    mask = torch.zeros(1, 8, 8, dtype=torch.long)

    def plain_fwd():
        h = tokens
        for blk in plain.blocks:
            h = blk(h)
        return plain.norm(h)

    with torch.inference_mode():
        zt_m = merged_copy.embed_template(z, mask)
        zt_u = unmerged_model.embed_template(z, mask)
        runs = {
            "merged LoRAT (blocks + norm)": lambda: merged_copy.fuse(zt_m, merged_copy.embed_search(x)),
            "merged LoRAT (full forward incl. head)": lambda: merged_copy.forward_tokens(zt_m, x),
            "plain ViT-B/14 (blocks + norm, 320 tokens)": plain_fwd,
            "un-merged LoRA (full forward)": lambda: unmerged_model.forward_tokens(zt_u, x),
        }
        times = {k: [] for k in runs}
        for f in runs.values():
            f()
        for _ in range(reps):
            for k, f in runs.items():
                w0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - w0)
    return {k: {"median": _median(v), "min": min(v)} for k, v in times.items()}


def child_roofline(threads: int, weights: str) -> dict:
    """FLOPs of one tracking step and the best GEMM rates of this CPU (see ``_roofline.py``)."""
    import torch

    torch.set_num_threads(threads)
    import trackers
    from _roofline import best_gemm_gflops, count_flops

    tracker = trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint=weights)
    video, init_box, _ = _video_and_box(2)
    session = tracker.stream(video[0], init_box)
    total, by_op = count_flops(lambda: session.step(video[1]))
    return {"gflop": total / 1e9, "by_op": {k: v / 1e9 for k, v in by_op.items()},
            "fp32": best_gemm_gflops("float32")["best"], "bf16": best_gemm_gflops("bfloat16")["best"]}


# ---------------------------------------------------------------------------------------------- driver

def _run_child(args: list) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=24, help="tracked frames; the median of the last 10 is reported")
    ap.add_argument("--reps", type=int, default=12, help="repetitions for the merged-vs-plain ratio")
    ap.add_argument("--child", choices=["track", "ratio", "roofline"], help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child == "track":
        print(json.dumps(child_track(a.dtype, a.threads, a.frames, a.weights)))
        return
    if a.child == "ratio":
        print(json.dumps(child_ratio(a.threads, a.reps)))
        return
    if a.child == "roofline":
        print(json.dumps(child_roofline(a.threads, a.weights)))
        return

    import numpy as np

    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        weights = _weights_file(Path(tmp))
        res = {
            d: _run_child(["--child", "track", "--dtype", d, "--threads", str(a.threads), "--frames", str(a.frames),
                           "--weights", str(weights)])
            for d in ("fp32", "bf16")
        }
        roof = _run_child(["--child", "roofline", "--threads", str(a.threads), "--weights", str(weights)])
    ratio = _run_child(["--child", "ratio", "--threads", str(a.threads), "--reps", str(a.reps)])
    load1 = os.getloadavg()

    fp32_boxes = np.array(res["fp32"]["boxes"])
    print(f"### LoRAT-B-224 on CPU ({a.threads} threads, 240x320 frames, {a.frames} tracked frames, "
          "median of last 10)\n")
    print("| config | s/frame (median) | s/frame (min) | CPU s/frame | x official 0.219 s | forward s | peak RSS GiB "
          "| max box diff px |")
    print("|---|---|---|---|---|---|---|---|")
    for d in ("fp32", "bf16"):
        r = res[d]
        if d == "fp32":
            diff = (f"{r['golden_box_err_px']:.2e} vs official golden" if "golden_box_err_px" in r else "n/a")
        else:
            diff = f"{np.abs(np.array(r['boxes']) - fp32_boxes).max():.3f} vs fp32"
            if "golden_boxes" in r and "golden_boxes" in res["fp32"]:
                g = np.abs(np.array(r["golden_boxes"]) - np.array(res["fp32"]["golden_boxes"])).max()
                diff += f" ({g:.3f} on the golden video)"
        print(f"| {d} | {r['s_per_frame']:.3f} | {r['s_per_frame_min']:.3f} | {r['cpu_s_per_frame']:.3f} "
              f"| {r['s_per_frame'] / OFFICIAL_S_PER_FRAME:.2f}x | {r['forward_s']:.3f} | {r['peak_rss_gib']:.2f} "
              f"| {diff} |")
    print(f"\nOfficial reference: {OFFICIAL_S_PER_FRAME} s/frame, {OFFICIAL_PEAK_GIB} GiB peak (fp32).\n")
    print("| compute bound (one tracking step) | GFLOP | best GEMM GFLOP/s | bound s/frame | target s/frame |")
    print("|---|---|---|---|---|")
    for d, factor in (("fp32", 0.8), ("bf16", 0.4)):
        print(f"| {d} | {roof['gflop']:.1f} | {roof[d]:.0f} | {roof['gflop'] / roof[d]:.3f} "
              f"| {factor * OFFICIAL_S_PER_FRAME:.3f} |")
    print()
    print("| network (fp32, batch 1, interleaved runs) | s/forward (median) | s/forward (min) "
          "| ratio to plain ViT (median) | ratio (min) |")
    print("|---|---|---|---|---|")
    base = ratio["plain ViT-B/14 (blocks + norm, 320 tokens)"]
    for k, v in ratio.items():
        print(f"| {k} | {v['median']:.3f} | {v['min']:.3f} | {v['median'] / base['median']:.3f} "
              f"| {v['min'] / base['min']:.3f} |")
    print(f"\nLoad average (1/5/15 min) before: {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
          f"after: {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} on {os.cpu_count()} CPUs "
          "(a shared machine: timings are noisy).")


if __name__ == "__main__":
    main()
