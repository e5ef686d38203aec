"""LoRAT-B-224 parity with the official code (goldens in tests/data/lorat, synthetic weights, seed 0).

Weights are written to disk the way the official project ships them (a DINOv2 ``.pth`` plus a safetensors release
file named ``.bin``, or a merged inference state dict) and loaded through the public ``from_pretrained`` path.
The full-size model is loaded once per module and shared.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from golden_weights import synth_state_dict

import trackers
from trackers.nn.lora import LoRAAdapter, LoRALinear, SplitLoRALinear

FWD_TOL = 1e-4
BOX_TOL_PX = 1e-3


@pytest.fixture(scope="module")
def lorat_dir(golden_dir):
    return golden_dir / "lorat"


@pytest.fixture(scope="module")
def synth():
    return synth_state_dict


@pytest.fixture(scope="module")
def official_files(lorat_dir, synth, tmp_path_factory):
    """Synthetic official files: DINOv2 backbone .pth, release file (safetensors named .bin), merged .pth."""
    from safetensors.torch import save_file

    root = tmp_path_factory.mktemp("lorat_official")
    dino = synth(str(lorat_dir / "state_dict_dinov2_vitb14.tsv"), 0)
    torch.save(dino, root / "dinov2_vitb14_pretrain.pth")
    release = synth(str(lorat_dir / "checkpoint_B224_trainable.tsv"), 0)
    release["lora_alpha"] = torch.tensor(64)
    release["use_rslora"] = torch.tensor(False)
    save_file(release, str(root / "base.bin"))
    merged = synth(str(lorat_dir / "state_dict_B224.tsv"), 0)
    torch.save(merged, root / "merged_inference.pth")
    return root


@pytest.fixture(scope="module")
def released(official_files):
    """LoRAT-B-224 from the release file + DINOv2 file (LoRA merged at load) -- the big shared model."""
    return trackers.LoRATracker.from_pretrained(
        "lorat-b-224",
        checkpoint=official_files / "base.bin",
        backbone_checkpoint=official_files / "dinov2_vitb14_pretrain.pth",
    )


def _inputs(npz):
    return (torch.from_numpy(npz["z"]), torch.from_numpy(npz["x"]), torch.from_numpy(npz["z_feat_mask"]))


def _maxdiff(a, b) -> float:
    return float((torch.as_tensor(a).double() - torch.as_tensor(b).double()).abs().max())


def test_raw_forward_matches_official(lorat_dir, official_files):
    ref = np.load(lorat_dir / "golden_forward_B224.npz")
    tracker = trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint=official_files / "merged_inference.pth")
    z, x, mask = _inputs(ref)
    with torch.inference_mode():
        out = tracker.model(z, x, mask)
        z_tok = tracker.model.embed_template(z, mask)
        x_tok = tracker.model.embed_search(x)
    assert _maxdiff(z_tok[0], ref["z_tokens_in_b0"]) < FWD_TOL
    assert _maxdiff(x_tok[0], ref["x_tokens_in_b0"]) < FWD_TOL
    assert out["score_map"].shape == (2, 16, 16) and out["boxes"].shape == (2, 16, 16, 4)
    assert _maxdiff(out["score_map"], ref["score_map"]) < FWD_TOL
    assert _maxdiff(out["boxes"], ref["boxes"]) < FWD_TOL


def test_release_file_merge_matches_official(lorat_dir, released):
    ref = np.load(lorat_dir / "golden_lora_merge_B224.npz")
    model = released.model
    # Plain ViT after loading: no adapters, no split layers, official merged key layout.
    assert not any(isinstance(m, (LoRALinear, SplitLoRALinear, LoRAAdapter)) for m in model.modules())
    sd = model.state_dict()
    assert sorted(sd) == sorted(str(k) for k in ref["merged_keys"])
    assert _maxdiff(sd["pos_embed"], ref["pos_embed_interp"]) < 1e-6
    for key, (total, total_abs) in zip(ref["merged_keys"], ref["merged_fp"]):
        v = sd[str(key)].double()
        assert abs(float(v.sum()) - total) <= 1e-6 * (1 + total_abs), key
        assert abs(float(v.abs().sum()) - total_abs) <= 1e-6 * (1 + total_abs), key
    with torch.inference_mode():
        out = model(*_inputs(ref))
    assert _maxdiff(out["score_map"], ref["score_map_merged"]) < FWD_TOL
    assert _maxdiff(out["boxes"], ref["boxes_merged"]) < FWD_TOL
    # The LoRA matters for this golden (otherwise the check above would be vacuous).
    assert _maxdiff(ref["score_map_merged"], ref["score_map_nolora"]) > 0.05


@pytest.mark.slow
def test_unmerged_form_matches_official_and_merges(lorat_dir, official_files, released):
    ref = np.load(lorat_dir / "golden_lora_merge_B224.npz")
    tracker = trackers.LoRATracker.from_pretrained(
        "lorat-b-224",
        checkpoint=official_files / "base.bin",
        checkpoints={"backbone": official_files / "dinov2_vitb14_pretrain.pth"},
        merge_lora=False,
    )
    model = tracker.model
    assert model.has_lora and tracker.config.lora_rank == 64
    keys = {k for k in model.state_dict()}
    layout = [line.split("\t")[0] for line in (lorat_dir / "state_dict_B224_train.tsv").read_text().splitlines()
              if line.strip()]
    assert keys == set(layout)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora." in n or n.startswith(("head.", "token_type_embed")) for n in trainable)
    assert sum(p.numel() for n, p in model.named_parameters() if n in trainable) == 12_985_349
    inputs = _inputs(ref)
    with torch.inference_mode():
        out = model(*inputs)
    assert _maxdiff(out["score_map"], ref["score_map_unmerged"]) < FWD_TOL
    assert _maxdiff(out["boxes"], ref["boxes_unmerged"]) < FWD_TOL
    tracker.merge_lora()
    assert not model.has_lora
    merged_sd, ref_sd = model.state_dict(), released.model.state_dict()
    assert merged_sd.keys() == ref_sd.keys()
    assert max(_maxdiff(merged_sd[k], ref_sd[k]) for k in ref_sd) == 0.0  # same fp32 merge, bit for bit
    with torch.inference_mode():
        out_merged = model(*inputs)
    assert _maxdiff(out_merged["score_map"], out["score_map"]) < FWD_TOL
    assert _maxdiff(out_merged["boxes"], out["boxes"]) < FWD_TOL


def test_save_pretrained_reloads_without_backbone(lorat_dir, released, tmp_path):
    ref = np.load(lorat_dir / "golden_lora_merge_B224.npz")
    folder = released.save_pretrained(tmp_path / "lorat-b-224-merged")
    doc = json.loads((folder / "config.json").read_text())
    assert doc["tracker"] == "LoRATracker" and doc["config"]["lora_rank"] == 0
    from safetensors.torch import load_file

    saved = load_file(str(folder / "model.safetensors"))
    assert sorted(saved) == sorted(str(k) for k in ref["merged_keys"])  # official merged layout
    again = trackers.LoRATracker.from_pretrained(folder)  # no DINOv2 file anywhere
    with torch.inference_mode():
        out = again.model(*_inputs(ref))
    assert _maxdiff(out["score_map"], ref["score_map_merged"]) < FWD_TOL
    # The same file is accepted as checkpoint= of the registry entry (official-layout merged file).
    third = trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint=folder / "model.safetensors")
    assert max(_maxdiff(third.model.state_dict()[k], v) for k, v in saved.items()) == 0.0


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["A", "B"])
def test_tracking_run_matches_official(lorat_dir, synth, variant, tmp_path):
    ref = np.load(lorat_dir / "golden_track_B224.npz")
    meta = json.loads(str(ref["meta"]))
    sd = synth(str(lorat_dir / "state_dict_B224.tsv"), 0)
    sd["head.reg_mlp.layers.2.bias"][:] = meta["variants"][variant]
    torch.save(sd, tmp_path / "merged.pth")
    tracker = trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint=tmp_path / "merged.pth")

    video, init_box = ref["video"], ref["init_box_xyxy"]
    # Template side: mean colour, adjusted crop transform, normalised crop and foreground mask.
    session = tracker.stream(video[0], init_box)
    st = session.targets[0]
    assert _maxdiff(st.fill, ref["template_image_mean"]) < 1e-3
    assert _maxdiff(st.template_transform.as_array(), ref["template_crop_params"]) < 1e-6
    assert torch.equal(st.template_mask, torch.from_numpy(ref["z_feat_mask"]))
    from trackers.box.pipeline import init_stream, search_crop

    sizes = tracker.crop_sizes
    _, z = init_stream(torch.from_numpy(video[0]).permute(2, 0, 1).float(), init_box, tracker.settings, sizes)
    assert _maxdiff(z, ref["template_curated"]) < 1e-4
    x1, tf1 = search_crop(torch.from_numpy(video[1]).permute(2, 0, 1).float(), st, tracker.settings, sizes)
    assert _maxdiff(x1, ref[f"search_input_f1_{variant}"]) < 1e-4
    assert _maxdiff(tf1.as_array(), ref[f"search_crop_params_{variant}"][0]) < 1e-6

    result = tracker.track(video, init_box)
    assert result.boxes.shape == (12, 4) and result.scores.shape == (12,)
    assert _maxdiff(result.boxes[0], init_box) == 0.0 and float(result.scores[0]) == 1.0
    assert _maxdiff(result.boxes[1:], ref[f"boxes_xyxy_{variant}"]) < BOX_TOL_PX
    assert _maxdiff(result.scores[1:], ref[f"confidence_{variant}"]) < FWD_TOL

    # The streaming session reproduces the same run frame by frame.
    for t in range(1, 4):
        step = session.step(video[t])
        assert step.start_frame == t and step.boxes.shape == (1, 4)
        assert _maxdiff(step.boxes[0], ref[f"boxes_xyxy_{variant}"][t - 1]) < BOX_TOL_PX
        assert abs(float(step.scores[0]) - float(ref[f"confidence_{variant}"][t - 1])) < FWD_TOL
