"""LoRAT-B-224 CPU speed and memory: per-frame time, peak RSS, compute bound, linear backends, bf16 vs fp32 boxes.

Usage::

    python benchmarks/lorat.py [--threads 2] [--frames 24] [--rounds 2]

Prints markdown tables. Configurations: fp32 and bf16 (mixed precision: block matrices in bf16), each with the
linears through ``F.linear`` (``TRACKERS_LINEAR_BACKEND=plain``) and with the default choice (``auto``: oneDNN
with pre-packed weights and fused bias + activation where it runs). Each configuration runs in its own process,
so that peak RSS is per configuration (it includes imports, the checkpoint file being read and the model, like the
official measurement) and the backend variable holds for the whole process. ``--rounds`` repeats every
configuration in a fresh process, rotating the order, and the median is taken over the frames of all rounds: the
machine is shared, and a load change then does not fall on one configuration only. One more process runs the
four configurations taking turns frame by frame (same frames, same load: the steadier comparison of their ratios).

Compute bound: FLOPs of one tracking step (torch's FLOP counter, linears counted on the plain path; matrix products,
convolutions and attention, not element-wise work) divided by the best GEMM rate this CPU reaches at the same
dtype and thread count (``_roofline.py``: best over large products and over both linear backends, best of several
timed batches). "of roofline" = bound / measured s/frame.

Weights: the synthetic golden weights of the tests (``tests/golden_weights.py`` over the layout in
``tests/data/lorat/state_dict_B224.tsv``, seed 0, head box bias set to -2.0 -- golden "variant A", boxes of a
sensible size); speed does not depend on the values, the box comparisons do. Video: the 12 frames (240x320) of
``tests/data/lorat/golden_track_B224.npz``, played forwards and backwards in a loop to the needed length (no jump
at the turn, so the target keeps moving smoothly). Every configuration also tracks the golden clip itself; the fp32
plain row compares its boxes to the official pipeline's (``boxes_xyxy_A``), the others to the fp32 plain row. The
reference is the official pipeline on the same kind of machine: 0.219 s/frame (fp32, 2 threads, 240x320 frames),
1.47 GiB peak.

Timings on a shared machine are noisy: the CPU model and the load average before and after are printed with the
tables.
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
from typing import Optional

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

CONFIGS = (("fp32", "plain"), ("fp32", "auto"), ("bf16", "plain"), ("bf16", "auto"))
BASE = ("fp32", "plain")


def _label(cfg) -> str:
    return f"{cfg[0]} {cfg[1]}"


def _linear_info() -> dict:
    """The linear backend this process runs (``trackers.ops.linear_info``), when this checkout has it."""
    from trackers import ops

    info = getattr(ops, "linear_info", None)
    return info() if info is not None else {"linear_default_backend": "n/a (no linear backends in this checkout)"}


def _load(dtype_name: str, weights: str):
    import torch

    import trackers

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    return trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint=weights, dtype=dtype)


def child_track(dtype_name: str, threads: int, frames: int, weights: str) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    tracker = _load(dtype_name, weights)
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
    # Network alone (the tracker's hook: forward with the box MLP on the chosen cell) on a tracking step's input.
    st = session.targets[0]
    from trackers.box.pipeline import search_crop

    x, _ = search_crop(torch.from_numpy(video[-1]).permute(2, 0, 1).float(), st, tracker.settings,
                       tracker.crop_sizes)
    fwd = []
    with torch.inference_mode():
        for _ in range(6):
            w0 = time.perf_counter()
            tracker._predict(st.template, x[None].to(tracker.input_dtype))
            fwd.append(time.perf_counter() - w0)
    out = {
        "dtype": dtype_name,
        "walls": walls[last],
        "cpus": cpus[last],
        "forward_s": fwd[2:],
        "peak_rss_gib": _peak_rss_gib(),
        "boxes": np.stack(boxes).tolist(),
        "linear": _linear_info(),
    }
    res = tracker.track(ref["video"], ref["init_box_xyxy"])
    out["golden_boxes"] = res.boxes.numpy().tolist()
    out["golden_box_err_px"] = float(np.abs(res.boxes.numpy()[1:] - ref["boxes_xyxy_A"]).max())
    from _roofline import one_step_boxes

    out["one_step_boxes"] = one_step_boxes(tracker, ref["video"], ref["init_box_xyxy"])
    return out


def child_interleaved(threads: int, frames: int, weights: str) -> dict:
    """The four configurations in one process, one frame each in turn (rotating who goes first).

    The linear backend is switched per step with ``trackers.ops.use_linear_backend`` (thread-local), so every
    configuration sees the same frames and the same mix of machine load: their ratios are steadier than between
    processes run minutes apart. Without a backend switch in this checkout only the dtype differs.
    """
    import contextlib

    import torch

    torch.set_num_threads(threads)
    from trackers import ops

    switch = getattr(ops, "use_linear_backend", None)
    video, init_box, _ = _video_and_box(frames)
    trackers_by_dtype = {d: _load(d, weights) for d in ("fp32", "bf16")}
    sessions = {cfg: trackers_by_dtype[cfg[0]].stream(video[0], init_box) for cfg in CONFIGS}
    walls = {_label(c): [] for c in CONFIGS}
    cpus = {_label(c): [] for c in CONFIGS}
    for t in range(1, frames + 1):
        k = t % len(CONFIGS)
        for cfg in CONFIGS[k:] + CONFIGS[:k]:
            ctx = switch(cfg[1]) if switch is not None else contextlib.nullcontext()
            with ctx:
                w0, c0 = time.perf_counter(), time.process_time()
                sessions[cfg].step(video[t])
                walls[_label(cfg)].append(time.perf_counter() - w0)
                cpus[_label(cfg)].append(time.process_time() - c0)
    warm = min(4, frames // 3)
    return {"walls": {k: v[warm:] for k, v in walls.items()}, "cpus": {k: v[warm:] for k, v in cpus.items()},
            "switch": switch is not None}


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


def child_flops(weights: str) -> dict:
    """FLOPs of one tracking step (fp32; bf16 runs the same arithmetic)."""
    import torch

    torch.set_num_threads(1)
    from _roofline import count_flops

    tracker = _load("fp32", weights)
    video, init_box, _ = _video_and_box(2)
    session = tracker.stream(video[0], init_box)
    session.step(video[1])
    total, by_op = count_flops(lambda: session.step(video[2]))
    return {"gflop": total / 1e9, "by_op": {k: v / 1e9 for k, v in by_op.items()}}


def child_gemm(threads: int) -> dict:
    """Best GEMM rates of this CPU per dtype and linear backend (``_roofline.gemm_probe``)."""
    import torch

    torch.set_num_threads(threads)
    from _roofline import gemm_probe

    return gemm_probe()


# ---------------------------------------------------------------------------------------------- driver

def _run_child(args: list, backend: Optional[str] = None) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if backend is not None:
        env["TRACKERS_LINEAR_BACKEND"] = backend
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"benchmark child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _route(info: dict, dtype: str) -> str:
    route = info.get("linear_route_cpu_" + {"fp32": "float32", "bf16": "bfloat16"}[dtype])
    if route is None:
        return info.get("linear_default_backend", "n/a")
    packed = info.get("linear_packed_weights")
    return route.split(" (")[0] + (f", {packed} packed" if packed else "")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frames", type=int, default=24, help="tracked frames; the last 10 of each run are timed")
    ap.add_argument("--rounds", type=int, default=2, help="fresh processes per configuration (order rotates)")
    ap.add_argument("--interleaved-frames", type=int, default=16,
                    help="frames per configuration of the one-process comparison (0 = skip it)")
    ap.add_argument("--reps", type=int, default=12, help="repetitions for the merged-vs-plain ratio (0 = skip)")
    ap.add_argument("--child", choices=["track", "ratio", "flops", "gemm", "interleaved"], help=argparse.SUPPRESS)
    ap.add_argument("--dtype", default="fp32", help=argparse.SUPPRESS)
    ap.add_argument("--weights", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child == "track":
        print(json.dumps(child_track(a.dtype, a.threads, a.frames, a.weights)))
        return
    if a.child == "ratio":
        print(json.dumps(child_ratio(a.threads, a.reps)))
        return
    if a.child == "flops":
        print(json.dumps(child_flops(a.weights)))
        return
    if a.child == "gemm":
        print(json.dumps(child_gemm(a.threads)))
        return
    if a.child == "interleaved":
        print(json.dumps(child_interleaved(a.threads, a.frames, a.weights)))
        return

    import numpy as np

    from _roofline import bound, cpu_flags, cpu_model

    load0 = os.getloadavg()
    runs = {c: [] for c in CONFIGS}
    gemms = []
    with tempfile.TemporaryDirectory() as tmp:
        weights = str(_weights_file(Path(tmp)))
        flops = _run_child(["--child", "flops", "--weights", weights], backend="plain")
        for r in range(a.rounds):
            k = r % len(CONFIGS)
            for cfg in CONFIGS[k:] + CONFIGS[:k]:
                runs[cfg].append(_run_child(["--child", "track", "--dtype", cfg[0], "--threads", str(a.threads),
                                             "--frames", str(a.frames), "--weights", weights], backend=cfg[1]))
                print(f"{_label(cfg)}: round {r + 1} median {_median(runs[cfg][-1]['walls']):.3f} s/frame",
                      file=sys.stderr, flush=True)
            gemms.append(_run_child(["--child", "gemm", "--threads", str(a.threads)]))
        inter = None
        if a.interleaved_frames > 0:
            inter = _run_child(["--child", "interleaved", "--threads", str(a.threads),
                                "--frames", str(a.interleaved_frames + 4), "--weights", weights])
    ratio = _run_child(["--child", "ratio", "--threads", str(a.threads), "--reps", str(a.reps)]) if a.reps else None
    load1 = os.getloadavg()

    gemm = {d: {k: max(g[d][k] for g in gemms) for k in gemms[0][d]} for d in ("float32", "bfloat16")}
    rate = {"fp32": gemm["float32"]["best"], "bf16": gemm["bfloat16"]["best"]}
    rate_cpu = {"fp32": gemm["float32"]["best_cpu"], "bf16": gemm["bfloat16"]["best_cpu"]}
    gflop = flops["gflop"]
    base_boxes = np.array(runs[BASE][0]["boxes"])
    base_golden = np.array(runs[BASE][0]["golden_boxes"])
    base_step = np.array(runs[BASE][0]["one_step_boxes"])

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical CPUs; {cpu_flags('avx512f', 'avx512_bf16', 'amx_bf16')}); "
          f"{a.threads} threads per run.")
    print(f"Load average (1/5/15 min) before: {load0[0]:.2f}/{load0[1]:.2f}/{load0[2]:.2f}, "
          f"after: {load1[0]:.2f}/{load1[1]:.2f}/{load1[2]:.2f} (a shared machine: timings are noisy).\n")
    n_frames = sum(len(r["walls"]) for r in runs[BASE])
    print(f"### LoRAT-B-224 on CPU ({a.threads} threads, 240x320 frames; median of {n_frames} timed frames per "
          f"configuration: the last 10 of {a.frames} tracked frames x {a.rounds} process(es), order rotated)\n")
    print("| config (dtype, linears) | s/frame median | s/frame min | per-process medians | CPU s/frame "
          f"| x official {OFFICIAL_S_PER_FRAME} s | network s | GFLOP/frame | best GEMM GFLOP/s | bound s/frame "
          "| of roofline | of roofline, CPU time | peak RSS GiB | box diff px vs fp32 plain: one step / golden clip / "
          f"{a.frames}-frame track | linear route |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for cfg in CONFIGS:
        rs = runs[cfg]
        walls = [w for r in rs for w in r["walls"]]
        cpus = [c for r in rs for c in r["cpus"]]
        med = _median(walls)
        b, frac = bound(gflop, rate[cfg[0]], med)
        _, frac_cpu = bound(gflop, rate_cpu[cfg[0]], _median(cpus) / a.threads)
        if cfg == BASE:
            diff = f"reference ({max(r['golden_box_err_px'] for r in rs):.1e} vs the official golden)"
        else:
            d_step = max(float(np.abs(np.array(r["one_step_boxes"]) - base_step).max()) for r in rs)
            d_loop = max(float(np.abs(np.array(r["boxes"]) - base_boxes).max()) for r in rs)
            d_gold = max(float(np.abs(np.array(r["golden_boxes"]) - base_golden).max()) for r in rs)
            diff = f"{d_step:.2g} / {d_gold:.2g} / {d_loop:.2g}"
        print(f"| {_label(cfg)} | {med:.3f} | {min(walls):.3f} | "
              + ", ".join(f"{_median(r['walls']):.3f}" for r in rs)
              + f" | {_median(cpus):.3f} | {med / OFFICIAL_S_PER_FRAME:.2f}x "
              f"| {_median([f for r in rs for f in r['forward_s']]):.3f} | {gflop:.1f} | {rate[cfg[0]]:.0f} "
              f"| {b:.3f} | {100 * frac:.0f} % | {100 * frac_cpu:.0f} % | {max(r['peak_rss_gib'] for r in rs):.2f} "
              f"| {diff} "
              f"| {_route(rs[0]['linear'], cfg[0])} |")
    print(f"\nOfficial reference: {OFFICIAL_S_PER_FRAME} s/frame, {OFFICIAL_PEAK_GIB} GiB peak (fp32, 2 threads). "
          "Network s: the tracker's network hook alone on one search crop (median of 4 after 2 warm-up calls). "
          "Bound = GFLOP / best GEMM rate of that dtype; of roofline = bound / s/frame median. The CPU-time "
          "column does the same per CPU second the threads were given (GEMM rate and s/frame both from process "
          "CPU time / threads): what the code reaches while it runs, less dependent on the other jobs' load. "
          "Box diff (max over runs and box coordinates): one step = the same 6 search crops (golden clip frames "
          "1-6 around the initial box) through every configuration, the network's numerics alone; golden clip = "
          "tracking its 12 frames; track = the timed looped clip. Along a track a small difference moves the next "
          "crop and can grow, with these synthetic weights (not a trained tracker) up to another cell winning.\n")
    print(f"| best GEMM rate, GFLOP/s ({a.threads} threads, best of {a.rounds} probe(s)) | F.linear | oneDNN packed "
          "| best | per CPU second: F.linear / oneDNN / best |")
    print("|---|---|---|---|---|")
    for d in ("float32", "bfloat16"):
        g = gemm[d]
        print(f"| {d} | {g['plain']:.0f} | {g['onednn']:.0f} | {g['best']:.0f} "
              f"| {g['plain_cpu']:.0f} / {g['onednn_cpu']:.0f} / {g['best_cpu']:.0f} |")
    ops = ", ".join(f"{k} {v:.2f}" for k, v in sorted(flops["by_op"].items(), key=lambda kv: -kv[1]))
    print(f"\nGFLOP of one tracking step by op: {ops}.")
    if inter:
        print(f"\n| interleaved in one process ({a.threads} threads; {len(next(iter(inter['walls'].values())))} frames "
              "each) | s/frame median | CPU s/frame median | ratio to fp32 plain (wall / CPU) |")
        print("|---|---|---|---|")
        base_w = _median(inter["walls"][_label(BASE)])
        base_c = _median(inter["cpus"][_label(BASE)])
        for cfg in CONFIGS:
            w, c = _median(inter["walls"][_label(cfg)]), _median(inter["cpus"][_label(cfg)])
            print(f"| {_label(cfg)} | {w:.3f} | {c:.3f} | {w / base_w:.2f} / {c / base_c:.2f} |")
        if not inter["switch"]:
            print("\n(No linear-backend switch in this checkout: plain and auto rows ran the same code.)")
    if ratio:
        print()
        print("| network (fp32, batch 1, interleaved runs) | s/forward (median) | s/forward (min) "
              "| ratio to plain ViT (median) | ratio (min) |")
        print("|---|---|---|---|---|")
        base = ratio["plain ViT-B/14 (blocks + norm, 320 tokens)"]
        for k, v in ratio.items():
            print(f"| {k} | {v['median']:.3f} | {v['min']:.3f} | {v['median'] / base['median']:.3f} "
                  f"| {v['min'] / base['min']:.3f} |")


if __name__ == "__main__":
    main()
