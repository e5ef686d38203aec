"""Recipe ``lora`` (LoRAT LoRA fine-tuning): what trains, the loss, merged vs un-merged, the release-layout adapter,
learning, resume, DDP and checkpoints."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from trackers.train.engine import train
from trackers.train.losses.box import iou_aware_bce_losses
from trackers.train.recipes.lora import ADAPTER_NAME, MODEL_PRESETS, LoRAConfig, LoRARecipe

REPO = Path(__file__).resolve().parents[1]
SYN = dict(num_frames=4, height=64, width=64, num_objects=(1, 2), object_size=(0.2, 0.35))


def _cfg(out: Path, **kw) -> LoRAConfig:
    base = dict(output_dir=str(out), preset="tiny", max_steps=40, batch_size=2, lr=3e-3, warmup_steps=2,
                min_lr_ratio=1.0, lora_rank=8, synthetic_clips=2, synthetic=SYN, train_pairs=4, max_gap=3,
                log_every=1, progress=False, amp="off", device="cpu")
    base.update(kw)
    return LoRAConfig(**base)


def _metric(run_dir: Path, name: str):
    return [float(r["value"]) for r in csv.DictReader(open(run_dir / "metrics.csv"))
            if r["split"] == "train" and r["name"] == name]


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    z, x = torch.randn(2, 3, 32, 32, generator=g), torch.randn(2, 3, 64, 64, generator=g)
    mask = torch.zeros(2, 4, 4, dtype=torch.long)
    mask[:, 1:3, 1:3] = 1
    return z, x, mask


def _initial_model(cfg: LoRAConfig):
    torch.manual_seed(cfg.seed)  # the engine seeds the same way before building the tracker
    return LoRARecipe(cfg).build_tracker().model


# ------------------------------------------------------------------------------------------------ loss
def test_iou_aware_bce_and_giou_by_hand():
    score = torch.tensor([[[0.0, 1.0], [-1.0, 2.0]]])
    # GT covers the left column (cells 0 and 2); cell 0 predicts the GT exactly, cell 2 a box of IoU 0.5
    gt = torch.tensor([[0.0, 0.0, 0.5, 1.0]])
    boxes = torch.tensor([[[[0.0, 0.0, 0.5, 1.0], [0.5, 0.0, 1.0, 1.0]],
                           [[0.0, 0.5, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0]]]])
    cls, reg, npos = iou_aware_bce_losses(score, boxes, gt, torch.tensor([True]))
    assert float(npos) == 2
    bce = lambda x, y: -(y * np.log(1 / (1 + np.exp(-x))) + (1 - y) * np.log(1 - 1 / (1 + np.exp(-x))))  # noqa
    want_cls = (bce(0.0, 1.0) + bce(1.0, 0.0) + bce(-1.0, 0.5) + bce(2.0, 0.0)) / 2
    want_reg = ((1 - 1.0) + (1 - 0.5)) / 2  # GIoU = IoU when one box holds the other
    assert float(cls) == pytest.approx(want_cls, rel=1e-6) and float(reg) == pytest.approx(want_reg, rel=1e-6)
    cls0, reg0, n0 = iou_aware_bce_losses(score, boxes, gt, torch.tensor([False]))
    assert float(n0) == 0 and float(reg0) == 0.0
    assert float(cls0) == pytest.approx(bce(0.0, 0) + bce(1.0, 0) + bce(-1.0, 0) + bce(2.0, 0), rel=1e-6)


# ------------------------------------------------------------------------------------------------ training
def test_only_adapters_head_and_embeddings_train_and_merge_matches(tmp_path):
    cfg = _cfg(tmp_path, max_steps=40)
    before = {k: v.clone() for k, v in _initial_model(cfg).state_dict().items()}
    recipe = LoRARecipe(cfg)
    result = train(recipe)
    model = recipe._tracker.model.eval()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in before if ".lora." in n or n == "token_type_embed" or n.startswith("head.")}
    assert sum(".lora." in n for n in trainable) == 2 * 6 * 2  # 6 adapters (q, k, v, proj, fc1, fc2) per block
    for k, v in model.state_dict().items():
        if k in trainable:
            assert not torch.equal(v, before[k]), f"{k} did not train"
        else:
            assert torch.equal(v, before[k]), f"frozen {k} changed"
    losses = _metric(tmp_path, "loss")
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), (losses[:5], losses[-5:])

    # merged after training computes what the un-merged network computes
    import copy

    z, x, mask = _inputs()
    with torch.no_grad():
        un = model(z, x, mask)
        merged = copy.deepcopy(model).merge_lora()
        me = merged(z, x, mask)
    assert not merged.has_lora
    torch.testing.assert_close(me["score_map"], un["score_map"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(me["boxes"], un["boxes"], atol=1e-5, rtol=1e-5)

    # the checkpoint folder is the merged tracker: it loads and tracks, with the trained network's outputs
    from trackers import LoRATracker

    tracker = LoRATracker.from_pretrained(result.checkpoint)
    assert not tracker.model.has_lora and tracker.config.search_size == 64
    with torch.no_grad():
        loaded = tracker.model(z, x, mask)
    torch.testing.assert_close(loaded["score_map"], un["score_map"], atol=1e-5, rtol=1e-5)
    video = np.zeros((5, 64, 80, 3), np.uint8) + 30
    for t in range(5):
        video[t, 20:40, 10 + 3 * t:30 + 3 * t] = 220
    out = tracker.track(video, init_box=(10.0, 20.0, 30.0, 40.0))
    assert np.asarray(out.boxes).shape == (5, 4) and np.isfinite(np.asarray(out.boxes)).all()

    # --init continues from the merged folder with fresh adapters (B = 0): the same function, adapters trainable
    cont = LoRARecipe(_cfg(tmp_path / "cont", preset=None, init=str(result.checkpoint))).build_tracker().model
    assert cont.has_lora and cont.config.lora_rank == 8
    with torch.no_grad():
        again = cont.eval()(z, x, mask)
    torch.testing.assert_close(again["score_map"], un["score_map"], atol=1e-5, rtol=1e-5)
    assert all(p.requires_grad == (".lora." in n or n == "token_type_embed" or n.startswith("head."))
               for n, p in cont.named_parameters())


def _dinov2_file(path: Path, seed: int = 11) -> dict:
    """A tiny DINOv2-layout backbone (fused qkv, class token in front of the position grid) from a random LoRAT."""
    from trackers import LoRATracker

    plain = LoRATracker.from_config("lorat-b-224", seed=seed, **MODEL_PRESETS["tiny"]).model
    sd = {k: v.clone() for k, v in plain.state_dict().items() if k.startswith(("patch_embed.", "blocks.", "norm."))}
    sd["pos_embed"] = torch.cat([torch.zeros(1, 1, 32), plain.pos_embed.detach()], dim=1)
    sd["cls_token"] = torch.zeros(1, 1, 32)
    torch.save(sd, path)
    return sd


def test_adapter_file_has_the_release_layout_and_loads_like_one(tmp_path):
    from safetensors.torch import load_file

    from trackers.models.lorat import LoRATConfig, convert_official_checkpoint

    dino = _dinov2_file(tmp_path / "dinov2_tiny.pth")
    result = train(LoRARecipe(_cfg(tmp_path / "run", max_steps=3, backbone=str(tmp_path / "dinov2_tiny.pth"))))
    adapter = load_file(str(result.checkpoint / ADAPTER_NAME))
    blocks = [f"blocks.{i}.{m}.lora.{ab}" for i in range(2)
              for m in ("attn.qkv.q", "attn.qkv.k", "attn.qkv.v", "attn.proj", "mlp.fc1", "mlp.fc2") for ab in "AB"]
    head = [f"head.{h}.layers.{j}.{w}" for h in ("cls_mlp", "reg_mlp") for j in range(3) for w in ("weight", "bias")]
    assert set(adapter) == {"token_type_embed", "lora_alpha", "use_rslora", *blocks, *head}
    assert adapter["lora_alpha"].dtype == torch.int64 and int(adapter["lora_alpha"]) == 64
    assert adapter["use_rslora"].dtype == torch.bool and not bool(adapter["use_rslora"])
    assert adapter["blocks.0.mlp.fc1.lora.A"].shape == (8, 32) and adapter["blocks.0.mlp.fc1.lora.B"].shape == (64, 8)
    # the official loading path: release file + DINOv2 backbone -> merged weights = the checkpoint's merged model
    config = LoRATConfig(**MODEL_PRESETS["tiny"])
    merged = convert_official_checkpoint(adapter, config, load_file=lambda role: dino)
    saved = load_file(str(result.checkpoint / "model.safetensors"))
    assert set(merged) == set(saved)
    for k in saved:
        torch.testing.assert_close(merged[k], saved[k], atol=1e-6, rtol=1e-6, msg=k)
    # the frozen backbone is the DINOv2 file's
    torch.testing.assert_close(saved["patch_embed.proj.weight"], dino["patch_embed.proj.weight"])


def test_resume_is_bit_identical_and_checks_the_backbone(tmp_path):
    kw = dict(max_steps=6, save_every=3, min_lr_ratio=0.01)
    train(LoRARecipe(_cfg(tmp_path / "full", **kw)))
    again = train(LoRARecipe(_cfg(tmp_path / "resumed", resume=str(tmp_path / "full" / "checkpoint-3"), **kw)))
    assert again.step == 6
    from safetensors.torch import load_file

    for name in (ADAPTER_NAME, "model.safetensors"):
        a = load_file(str(tmp_path / "full" / "checkpoint-6" / name))
        b = load_file(str(tmp_path / "resumed" / "checkpoint-6" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    # a run whose frozen backbone differs from the checkpoint's refuses to resume from it
    with pytest.raises(ValueError, match="frozen weights"):
        train(LoRARecipe(_cfg(tmp_path / "other", seed=5, resume=str(tmp_path / "full" / "checkpoint-3"), **kw)))


def test_weight_decay_groups_and_config_checks(tmp_path):
    cfg = _cfg(tmp_path)
    recipe = LoRARecipe(cfg)
    model = recipe.build_tracker().model
    decay, no_decay = recipe.param_groups(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(p.ndim == 2 for p in decay["params"]) and decay["weight_decay"] == cfg.weight_decay
    nd = {names[id(p)] for p in no_decay["params"]}
    assert "token_type_embed" in nd and no_decay["weight_decay"] == 0.0 and "head.cls_mlp.layers.0.bias" in nd
    assert LoRAConfig().lr == 1e-4 and LoRAConfig().weight_decay == 0.1 and LoRAConfig().lora_rank == 64
    with pytest.raises(ValueError, match="--checkpoint needs --init"):
        LoRAConfig(checkpoint="base.bin")
    with pytest.raises(ValueError, match="no training data"):
        LoRAConfig(synthetic_clips=0)


def test_torchrun_two_processes_match_one_process_with_double_batch(tmp_path):
    common = ["lora", "--preset", "tiny", "--max-steps", "3", "--lr", "2e-3", "--warmup-steps", "1",
              "--lora-rank", "8", "--synthetic-clips", "2",
              "--synthetic", "num_frames=4,height=64,width=64,num_objects=[1, 2]", "--train-pairs", "8",
              "--max-gap", "3", "--no-progress", "--log-every", "1", "--seed", "3", "--amp", "off",
              "--device", "cpu", "--eps", "1e-3"]
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

    a = load_file(str(tmp_path / "ddp" / "checkpoint-3" / ADAPTER_NAME))
    b = load_file(str(tmp_path / "single" / "checkpoint-3" / ADAPTER_NAME))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=k)
    np.testing.assert_allclose(_metric(tmp_path / "ddp", "loss"), _metric(tmp_path / "single", "loss"), rtol=1e-4)
