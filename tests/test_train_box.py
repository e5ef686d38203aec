"""Recipe ``box`` (DETRack training) and single-object training pairs: losses, denoising isolation, data, learning,
resume, DDP, checkpoints."""
from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trackers.box.pipeline import CropSizes
from trackers.train.data.sot_pairs import PairConfig, SOTPairDataset, SyntheticSequences, jitter_box
from trackers.train.data.sot_datasets import GOT10kDataset, LaSOTDataset
from trackers.train.data.synthetic import SyntheticConfig
from trackers.train.engine import train
from trackers.train.losses.box import (
    cells_in_box,
    corner_cells,
    centre_cell,
    denoising_losses,
    giou_loss,
    l1_box_loss,
    make_denoising_queries,
    matching_losses,
    quality_focal_loss,
)
from trackers.train.recipes.box import MODEL_PRESETS, BoxConfig, BoxRecipe, ce_keep_ratio_at, lr_with_drop

REPO = Path(__file__).resolve().parents[1]
# Texture kinds pinned: the learning-curve test overfits two clips, and which clips those are should not move
# when the generator's default texture list grows.
SYN = dict(num_frames=4, height=64, width=64, num_objects=(1, 2), object_size=(0.2, 0.35),
           textures=("noise", "stripes", "checker", "gradient"))


def _box_cfg(out: Path, **kw) -> BoxConfig:
    base = dict(output_dir=str(out), preset="tiny", max_steps=50, batch_size=2, lr=3e-3, encoder_lr=1e-3,
                grad_clip=1.0, synthetic_clips=2, synthetic=SYN, train_pairs=4, max_gap=3, dn_groups=2,
                log_every=1, progress=False, amp="off", device="cpu", lr_drop_at=1.0,
                # the learning-curve test overfits 4 pairs: photometric augmentation (tested on its own in
                # test_train_photometric.py) would only slow that down
                brightness_jitter=0.0, grayscale_prob=0.0, flip_prob=0.0)
    base.update(kw)
    return BoxConfig(**base)


def _metric(run_dir: Path, name: str):
    return [float(r["value"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))
            if r["split"] == "train" and r["name"] == name]


# ------------------------------------------------------------------------------------------------ losses
def test_quality_focal_loss_hand_values():
    logits = torch.tensor([0.0, 0.0, math.log(3.0), 2.0])
    target = torch.tensor([0.8, 0.0, 1.0, 0.0])
    got = quality_focal_loss(logits, target, beta=2.0)
    s = 1 / (1 + math.exp(-2.0))
    want = [0.3 ** 2 * math.log(2.0),          # sigma 0.5, y 0.8: BCE = -(0.8 + 0.2) log 0.5
            0.5 ** 2 * math.log(2.0),          # sigma 0.5, y 0
            0.25 ** 2 * -math.log(0.75),       # sigma 0.75, y 1
            s ** 2 * -math.log(1 - s)]         # y 0: |0 - s|^2 * -log(1 - s)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6)
    # beta 0 is plain BCE; the minimum sits at sigma = y
    assert float(quality_focal_loss(torch.tensor([0.0]), torch.tensor([0.5]), 0.0)) == pytest.approx(math.log(2.0))
    x = torch.tensor([math.log(0.3 / 0.7)], requires_grad=True)
    quality_focal_loss(x, torch.tensor([0.3])).sum().backward()
    assert abs(float(x.grad)) < 1e-6
    with pytest.raises(ValueError, match="differ"):
        quality_focal_loss(torch.zeros(2), torch.zeros(3))


def test_giou_and_l1_hand_values():
    a = torch.tensor([[0.0, 0.0, 2.0, 2.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    b = torch.tensor([[1.0, 1.0, 3.0, 3.0], [2.0, 0.0, 3.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    # overlap 1, union 7, hull 9; disjoint: union 2, hull 3; identical
    np.testing.assert_allclose(giou_loss(a, b).numpy(), [1 - (1 / 7 - 2 / 9), 1 + 1 / 3, 0.0], atol=1e-6)
    np.testing.assert_allclose(l1_box_loss(a, b).numpy(), [1.0, 1.0, 0.0])


def test_token_assignment_and_denoising_contents():
    grid = (4, 4)
    cells = torch.arange(16)[None]
    inside = cells_in_box(cells, torch.tensor([[0.25, 0.25, 0.75, 0.5]]), grid)
    assert sorted(torch.nonzero(inside[0]).flatten().tolist()) == [5, 6]  # row 1, columns 1..2
    tiny = cells_in_box(cells, torch.tensor([[0.3, 0.3, 0.32, 0.32]]), grid)
    assert torch.nonzero(tiny[0]).flatten().tolist() == [5]  # the centre cell is always a positive
    box = torch.tensor([[0.1, 0.3, 0.6, 0.9]])
    assert int(centre_cell(box, grid)[0]) == 2 * 4 + 1
    assert corner_cells(box, grid)[0].tolist() == [4 + 0, 4 + 2, 12 + 0, 12 + 2]
    gens = [torch.Generator().manual_seed(0)]
    dn = make_denoising_queries(box, 5, 7, gens, grid, positive_noise=0.4, negative_noise=(0.6, 1.0))
    assert dn.boxes.shape == (1, 10, 4) and dn.attn_mask.shape == (17, 17)
    assert dn.token_index[0, 0::2].eq(2 * 4 + 1).all()  # positives: the centre token
    assert set(dn.token_index[0, 1::2].tolist()) <= set(corner_cells(box, grid)[0].tolist())  # negatives: corners
    gt_c = torch.tensor([0.35, 0.6, 0.5, 0.6])
    pos, neg = dn.boxes[0, 0::2], dn.boxes[0, 1::2]
    shift = lambda b: ((b[:, :2] - gt_c[:2]).abs() / (gt_c[2:] / 2)).max(1).values  # noqa: E731
    assert (shift(pos) < 0.4 + 1e-6).all()           # positive centres stay inside the box
    assert (shift(neg) > shift(pos).max()).all() or (neg[:, 2:] / gt_c[2:] - 1).abs().min() >= 0.6 - 1e-6


def test_matching_and_denoising_losses_targets():
    grid = (4, 4)
    gt = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.0, 0.0, 0.0, 0.0]])
    present = torch.tensor([True, False])
    cells = torch.tensor([[5, 0, 10, 15], [5, 0, 10, 15]])
    boxes = torch.tensor([[0.5, 0.5, 0.5, 0.5], [0.1, 0.1, 0.2, 0.2], [0.5, 0.5, 0.25, 0.25],
                          [0.9, 0.9, 0.1, 0.1]]).expand(2, 4, 4)
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]]).expand(2, 4)
    cls, loc, npos = matching_losses(boxes, logits, cells, gt, present, grid, top_k=1)
    assert npos.tolist() == [2.0, 0.0]  # cells 5 and 10 are inside the box; nothing is positive when absent
    # positive 0 has IoU 1 -> target 1; positive 2 has IoU 0.25; others 0
    want0 = (quality_focal_loss(logits[0], torch.tensor([1.0, 0.0, 0.25, 0.0])).sum() / 2)
    assert float(cls[0]) == pytest.approx(float(want0), rel=1e-6)
    assert float(cls[1]) == pytest.approx(float(quality_focal_loss(logits[1], torch.zeros(4)).sum()), rel=1e-6)
    assert float(loc[0]) == pytest.approx(0.0, abs=1e-6) and float(loc[1]) == 0.0  # top-1 is the perfect box
    dcls, dloc = denoising_losses(boxes[:, :2], logits[:, :2], torch.tensor([True, False]), gt, present)
    assert float(dcls[1]) == 0.0 and float(dloc[1]) == 0.0 and float(dloc[0]) == pytest.approx(0.0, abs=1e-6)


def test_denoising_groups_are_isolated_by_the_attention_mask():
    from trackers import BoxTracker
    from trackers.models.detrack import DenoisingQueries

    model = BoxTracker.from_config("detrack-vitb-256", seed=0, **MODEL_PRESETS["tiny"]).model.eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a fresh head predicts its reference boxes (zero last layer): give it real weights
        for p in model.head.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    z, x = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    gt = torch.tensor([[0.2, 0.3, 0.6, 0.7], [0.4, 0.1, 0.9, 0.5]])
    k = model.config.num_selected_queries()
    dn = make_denoising_queries(gt, 3, k, [torch.Generator().manual_seed(i) for i in range(2)], (8, 8))
    run = lambda boxes, idx: model(z, x, dn_queries=DenoisingQueries(boxes=boxes, token_index=idx),  # noqa: E731
                                   attn_mask=dn.attn_mask)
    with torch.no_grad():
        plain = model(z, x)
        a = run(dn.boxes, dn.token_index)
        boxes, idx = dn.boxes.clone(), dn.token_index.clone()
        boxes[:, 2:4] = torch.tensor([0.8, 0.8, 0.3, 0.2])  # perturb group 1 (queries 2 and 3) only
        idx[:, 2:4] = 0
        b = run(boxes, idx)
    # the matching queries see no denoising query: identical to a forward without any
    torch.testing.assert_close(a.boxes, plain.boxes, atol=2e-5, rtol=0)
    torch.testing.assert_close(a.scores, plain.scores, atol=2e-5, rtol=0)
    torch.testing.assert_close(b.boxes, a.boxes, atol=2e-5, rtol=0)
    # the other groups do not see group 1
    keep = [0, 1, 4, 5]
    torch.testing.assert_close(b.dn_boxes[:, :, keep], a.dn_boxes[:, :, keep], atol=2e-5, rtol=0)
    torch.testing.assert_close(b.dn_scores[:, :, keep], a.dn_scores[:, :, keep], atol=2e-5, rtol=0)
    assert float((b.dn_boxes[:, :, 2:4] - a.dn_boxes[:, :, 2:4]).abs().max()) > 1e-2
    # without the mask the perturbation does leak (the check above can fail)
    with torch.no_grad():
        leak_a = model(z, x, dn_queries=DenoisingQueries(boxes=dn.boxes, token_index=dn.token_index))
        leak_b = model(z, x, dn_queries=DenoisingQueries(boxes=boxes, token_index=idx))
    assert float((leak_a.boxes - leak_b.boxes).abs().max()) > 1e-3


def test_keep_ratio_and_lr_schedules():
    assert ce_keep_ratio_at(0, 100, 0.7, 0.2, 0.5) == 1.0 and ce_keep_ratio_at(19, 100, 0.7, 0.2, 0.5) == 1.0
    assert ce_keep_ratio_at(45, 100, 0.7, 0.2, 0.5) == pytest.approx(0.85)  # half-way down the cosine
    assert ce_keep_ratio_at(70, 100, 0.7, 0.2, 0.5) == 0.7 and ce_keep_ratio_at(99, 100, 0.7, 0.2, 0.5) == 0.7
    assert [lr_with_drop(s, 0, 10, 1.0, 0.8, 0.1) for s in range(10)] == [1.0] * 8 + [0.1] * 2
    assert lr_with_drop(0, 2, 10, 1.0, 0.8, 0.1) == 0.5  # the warm-up still applies


# ------------------------------------------------------------------------------------------------ data
def _write_png(path: Path, box, h=48, w=64, bright=True):
    from PIL import Image

    img = np.zeros((h, w, 3), np.uint8) + 20
    if bright:
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        img[y1:y2, x1:x2] = 230
    Image.fromarray(img).save(path)


def _fake_trees(root: Path):
    """A GOT-10k split with 2 sequences and a LaSOT tree with 1 sequence; frames 2, 3 of every sequence absent."""
    T = 8
    boxes = [(10 + 2 * t, 12, 30 + 2 * t, 30) for t in range(T)]
    absent = [0, 0, 1, 1, 0, 0, 0, 0]
    got = root / "got" / "train"
    got.mkdir(parents=True)
    (got / "list.txt").write_text("GOT-10k_Train_000001\nGOT-10k_Train_000002\n")
    for name in ("GOT-10k_Train_000001", "GOT-10k_Train_000002"):
        d = got / name
        d.mkdir()
        for t in range(T):
            _write_png(d / f"{t + 1:08d}.png", boxes[t], bright=not absent[t])
        (d / "groundtruth.txt").write_text("".join(f"{b[0]},{b[1]},{b[2] - b[0]},{b[3] - b[1]}\n" for b in boxes))
        (d / "absence.label").write_text("".join(f"{a}\n" for a in absent))
        (d / "cover.label").write_text("".join(f"{0 if a else 8}\n" for a in absent))
    las = root / "lasot" / "cat" / "cat-1"
    (las / "img").mkdir(parents=True)
    for t in range(T):
        _write_png(las / "img" / f"{t + 1:08d}.png", boxes[t], bright=not absent[t])
    # LaSOT is 1-based: write x + 1, y + 1; absent frames carry 0,0,0,0
    (las / "groundtruth.txt").write_text("".join(
        "0,0,0,0\n" if absent[t] else f"{b[0] + 1},{b[1] + 1},{b[2] - b[0]},{b[3] - b[1]}\n"
        for t, b in enumerate(boxes)))
    (las / "full_occlusion.txt").write_text(",".join(str(a) for a in absent[:4] + [0] * 4))
    (las / "out_of_view.txt").write_text(",".join("0" for _ in range(T)))
    return got, root / "lasot", absent


def test_pairs_from_got10k_and_lasot_honour_absent_frames(tmp_path):
    got, las, absent = _fake_trees(tmp_path)
    sources = [GOT10kDataset(got), LaSOTDataset(las)]
    sizes = CropSizes(32, 64, 4)
    neg = SOTPairDataset(sources, sizes, 60, PairConfig(max_gap=3, min_object_size=0), seed=0)
    n_neg = 0
    for i in range(len(neg)):
        it = neg[i]
        t, s = it["frames"].tolist()
        assert not absent[t]                       # never an absent template
        assert abs(t - s) <= 3 and t != s
        assert bool(it["present"]) == (not absent[s])
        crop = it["search"].mean(0)                # bright target on a dark background
        if it["present"]:
            x1, y1, x2, y2 = (it["search_box"] * 64).tolist()
            inner = crop[int(math.ceil(y1)) + 1:int(y2) - 1, int(math.ceil(x1)) + 1:int(x2) - 1]
            assert inner.numel() and float(inner.min()) > 1.0, (i, it["search_box"])
        else:
            n_neg += 1
            assert it["search_box"].eq(0).all() and float(crop.max()) < 0.0  # nothing bright in an absent frame
        # the template mask covers the template box's cells
        assert int(it["template_mask"].sum()) >= 1
    assert n_neg > 0
    skip = SOTPairDataset(sources, sizes, 30, PairConfig(max_gap=3, absent="skip"), seed=0)
    assert all(bool(skip[i]["present"]) for i in range(len(skip)))


def test_pairs_are_seeded_and_identical_in_workers():
    src = SyntheticSequences(3, SyntheticConfig(**SYN), seed=0)
    ds = SOTPairDataset([src], CropSizes(32, 64, 4), 6, PairConfig(max_gap=3), seed=5)

    def items(workers):
        loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=workers)
        return [b for b in loader]

    a, b = items(0), items(2)
    for x, y in zip(a, b):
        for k in x:
            assert torch.equal(x[k], y[k]), k
    assert not torch.equal(ds[0]["search"], ds[1]["search"])
    rng = np.random.default_rng(0)
    sizes = np.array([np.diff(jitter_box(np.array([10.0, 10, 30, 20]), 0.25, 0.0, rng)[[0, 2]])[0]
                      for _ in range(400)])
    assert 0.2 < np.std(np.log(sizes / 20.0)) < 0.3  # scale jitter: log-normal with sigma 0.25


def test_synthetic_part_prob_reaches_the_sequences(tmp_path):
    """``--synthetic-part-prob`` turns that share of the synthetic sequences into part targets, in the training
    and the validation sources, and is checked."""
    cfg = _box_cfg(tmp_path, synthetic_clips=6, synthetic_part_prob=1.0, val_pairs=2)
    recipe = BoxRecipe(cfg)
    recipe.build_tracker()
    train, val = recipe.build_datasets()
    for ds in (train, val):
        seqs = ds.sources[0]
        assert seqs.clips.part_prob == 1.0
        assert any(bool(seqs.clips[i]["is_part"]) for i in range(len(seqs)))
    with pytest.raises(ValueError, match="synthetic_part_prob"):
        _box_cfg(tmp_path, synthetic_part_prob=-0.1)


# ------------------------------------------------------------------------------------------------ training
def test_loss_falls_and_checkpoint_loads_and_tracks(tmp_path):
    result = train(BoxRecipe(_box_cfg(tmp_path)))
    losses, ious = _metric(tmp_path, "loss"), _metric(tmp_path, "iou")
    assert len(losses) == 50
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5]), (losses[:5], losses[-5:])
    assert np.mean(ious[-5:]) > np.mean(ious[:5]) + 0.15
    keep = _metric(tmp_path, "keep_ratio")
    assert keep[0] == 1.0 and keep[-1] == pytest.approx(0.7)  # candidate elimination warmed up

    from trackers import BoxTracker

    tracker = BoxTracker.from_pretrained(result.checkpoint)
    assert tracker.config.search_size == 64 and tracker.config.embed_dim == 32
    video = np.zeros((5, 64, 80, 3), np.uint8) + 30
    for t in range(5):
        video[t, 20:40, 10 + 3 * t:30 + 3 * t] = 220
    out = tracker.track(video, init_box=(10.0, 20.0, 30.0, 40.0))
    assert np.asarray(out.boxes).shape == (5, 4) and np.isfinite(np.asarray(out.boxes)).all()
    # --init continues from the saved folder
    cont = BoxRecipe(_box_cfg(tmp_path / "cont", preset=None, init=str(result.checkpoint))).build_tracker()
    ref = tracker.model.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in cont.model.state_dict().items())
    with pytest.raises(ValueError, match="do not combine"):
        BoxRecipe(_box_cfg(tmp_path / "cont", init=str(result.checkpoint))).build_tracker()


def test_resume_is_bit_identical_across_the_lr_drop(tmp_path):
    kw = dict(max_steps=6, save_every=3, lr_drop_at=0.6, ce_start=0.0, ce_ramp=0.5)
    train(BoxRecipe(_box_cfg(tmp_path / "full", **kw)))
    again = train(BoxRecipe(_box_cfg(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-3"), **kw)))
    assert again.step == 6
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "full" / "checkpoint-6" / "model.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "checkpoint-6" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    lrs = _metric(tmp_path / "full", "lr_factor")
    assert lrs == [1.0, 1.0, 1.0, 1.0, 0.1, 0.1]
    # the logged learning rate is the one used (decoder group), the drop included
    np.testing.assert_allclose(_metric(tmp_path / "full", "lr"), [3e-3] * 4 + [3e-4] * 2, rtol=1e-9)
    # the encoder really trained at its own rate (AdamW's first step moves every weight by about lr)
    c = load_file(str(tmp_path / "full" / "checkpoint-3" / "model.safetensors"))
    assert any(not torch.equal(a[k], c[k]) for k in a if k.startswith("backbone."))


def test_init_encoder_from_an_ostrack_style_checkpoint(tmp_path):
    from trackers import BoxTracker

    src = BoxTracker.from_config("detrack-vitb-256", seed=3, **MODEL_PRESETS["tiny"]).model
    state = {f"backbone.{k}": v for k, v in src.backbone.state_dict().items()}
    torch.save({"net": state}, tmp_path / "ostrack.pth")
    recipe = BoxRecipe(_box_cfg(tmp_path / "run", init_encoder=str(tmp_path / "ostrack.pth")))
    model = recipe.build_tracker().model
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(model.backbone.state_dict()[k], v), k
    groups = recipe.param_groups(model)
    assert [g["lr"] for g in groups] == [3e-3, 1e-3] and [g["name"] for g in groups] == ["decoder", "encoder"]


def test_torchrun_two_processes_match_one_process_with_double_batch(tmp_path):
    """`torchrun -m trackers.train.cli box`: 2 gloo processes = 1 process with twice the batch (denoising noise,
    jittered pairs and the CE schedule included)."""
    common = ["box", "--preset", "tiny", "--max-steps", "3", "--lr", "2e-3", "--encoder-lr", "1e-3",
              "--synthetic-clips", "2", "--synthetic", "num_frames=4,height=64,width=64,num_objects=[1, 2]",
              "--train-pairs", "8", "--max-gap", "3", "--dn-groups", "2", "--ce-start", "0", "--ce-ramp", "0.5",
              "--no-progress", "--log-every", "1", "--seed", "3", "--amp", "off", "--device", "cpu",
              "--eps", "1e-3"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    two = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "trackers.train.cli", *common, "--batch-size", "1", "--output-dir",
                            str(tmp_path / "ddp")], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True)
    one = subprocess.run([sys.executable, "-m", "trackers.train.cli", *common, "--batch-size", "2", "--output-dir",
                          str(tmp_path / "single")], env=env, capture_output=True, text=True, timeout=300)
    _, err = two.communicate(timeout=300)
    assert two.returncode == 0, err[-3000:]
    assert one.returncode == 0, one.stderr[-3000:]
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "ddp" / "checkpoint-3" / "model.safetensors"))
    b = load_file(str(tmp_path / "single" / "checkpoint-3" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    np.testing.assert_allclose(_metric(tmp_path / "ddp", "loss"), _metric(tmp_path / "single", "loss"), rtol=1e-4)


def test_training_with_template_token_types_feeds_the_pair_masks(tmp_path):
    """A network built with template token types trains on the pairs' template masks and tracks with them."""
    from trackers import BoxTracker

    initial = []

    class Recording(BoxRecipe):
        def build_tracker(self):
            tracker = super().build_tracker()
            initial.append(tracker.model.backbone.token_type_embed.detach().clone())
            return tracker

    result = train(Recording(_box_cfg(tmp_path, max_steps=3, model={"template_token_types": True}, dn_groups=0)))
    before = initial[-1]
    tracker = BoxTracker.from_pretrained(result.checkpoint)
    assert tracker.config.template_token_types
    after = tracker.model.backbone.token_type_embed
    assert not torch.allclose(before, after)  # both rows learn: every template has target and context tokens
    assert bool((before - after).abs().sum(-1).min() > 0)
    video = np.zeros((4, 64, 80, 3), np.uint8) + 30
    for t in range(4):
        video[t, 20:40, 10 + 3 * t:30 + 3 * t] = 220
    out = tracker.track(video, init_box=(10.0, 20.0, 30.0, 40.0))
    assert np.isfinite(out.boxes.numpy()).all()
