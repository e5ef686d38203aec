"""LoRAT's box head on the chosen score cell only: the same boxes, bit for bit, as the full box map.

A tracking step runs the regression MLP on the one cell ``select_box`` picks (after the Hann window) instead of
on every cell. These tests compare that path with the full-map path (``forward`` without ``select_cells``, what
training uses) on the tiny network and on the LoRAT-B-224 golden (synthetic weights, tests/data/lorat).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from golden_weights import synth_state_dict

import trackers
from _helpers import TINY_LORAT, moving_square_video
from trackers.box.pipeline import hann_window_2d, select_box
from trackers.models.lorat import LoRAT, LoRATConfig


class FullMapLoRATracker(trackers.LoRATracker):
    """The tracker as it was before: the box MLP on every cell, ``select_box`` picks one."""

    def _predict(self, templates, search):
        out = self.model.forward_tokens(templates, search)
        return out["score_map"], out["boxes"]


def _full_map(tracker: trackers.LoRATracker) -> FullMapLoRATracker:
    """The same tracker object (same weights and settings), switched to the full-map hook."""
    other = FullMapLoRATracker.__new__(FullMapLoRATracker)
    other.__dict__.update(tracker.__dict__)
    return other


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return trackers.LoRATracker.from_config(TINY_LORAT, seed=0)


@pytest.mark.parametrize("batch", [1, 2, 3, 9])
def test_boxes_at_equals_full_map_on_every_cell(batch):
    torch.manual_seed(1)
    model = LoRAT(LoRATConfig(**TINY_LORAT)).eval()
    cells_total = model.config.search_grid ** 2
    tokens = torch.randn(batch, cells_total, model.config.embed_dim)
    with torch.inference_mode():
        full = model.head.boxes(tokens).reshape(batch, -1, 4)
        for shift in range(cells_total):
            cells = (torch.arange(batch) * 5 + shift) % cells_total  # different cells per sample
            one = model.head.boxes_at(tokens, cells)
            assert torch.equal(one, full[torch.arange(batch), cells]), (batch, cells.tolist())


def test_select_cells_forward_and_errors():
    torch.manual_seed(0)
    model = LoRAT(LoRATConfig(**TINY_LORAT)).eval()
    z, x = torch.randn(2, 3, 28, 28), torch.randn(2, 3, 56, 56)
    mask = torch.zeros(2, 2, 2, dtype=torch.long)
    with torch.inference_mode():
        full = model(z, x, mask)
        picked = model(z, x, mask, select_cells=lambda s: s.reshape(s.shape[0], -1).argmax(1))
    assert set(full) == {"score_map", "boxes"} and full["boxes"].shape == (2, 4, 4, 4)
    assert set(picked) == {"score_map", "cells", "box"} and picked["box"].shape == (2, 4)
    assert torch.equal(picked["score_map"], full["score_map"])
    assert torch.equal(picked["cells"], full["score_map"].reshape(2, -1).argmax(1))
    assert torch.equal(picked["box"], full["boxes"].reshape(2, -1, 4)[torch.arange(2), picked["cells"]])
    tokens = torch.randn(2, 16, 32)
    with pytest.raises(ValueError, match="cells must be"):
        model.head.boxes_at(tokens, torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[0, 16\)"):
        model.head.boxes_at(tokens, torch.tensor([0, 16]))


def test_selected_cell_is_the_pipelines_choice(tiny):
    # Random maps, a flat one and one with -inf cells: the hook's cell is the windowed argmax select_box takes.
    g = torch.Generator().manual_seed(0)
    original = tiny.settings
    maps = torch.randn(6, 4, 4, generator=g) * 3
    maps[1] = 0.0
    maps[2, :2] = float("-inf")
    p = maps.sigmoid().reshape(6, -1)
    hann = hann_window_2d(4, 4).reshape(1, -1)
    for window, rule in (("blend", lambda: p * 0.55 + hann * 0.45), ("multiply", lambda: p * hann)):
        tr = tiny.with_settings(window=window, window_penalty=0.45)
        cells = tr._selected_cells(maps)
        assert torch.equal(cells, rule().argmax(1)), window
        numbers = torch.arange(16, dtype=torch.float32).reshape(1, 4, 4, 1).expand(6, 4, 4, 4)
        assert torch.equal(select_box(maps, numbers, tr.settings, 1)[0][:, 0].long(), cells)
    # The window matters on these maps (otherwise the check would not tell the rules apart).
    assert not torch.equal(p.argmax(1), (p * hann).argmax(1))
    tiny.settings = original


def test_tiny_tracking_matches_full_map_bit_for_bit(tiny):
    video = moving_square_video(T=8, H=60, W=80, dx=3.0, size=16)
    box = (4.0, 22.0, 20.0, 38.0)
    other = (45.0, 10.0, 70.0, 30.0)
    full = _full_map(tiny)
    for init in (box, [box, other]):
        a, b = tiny.track(video, init), full.track(video, init)
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
    # A batch of clips of 3 targets in one forward (3 rows: below MKL's GEMM threshold unless padded).
    batch = np.stack([video, video[:, ::-1].copy(), video[:, :, ::-1].copy()])
    a, b = tiny.track(batch, [box, other, box]), full.track(batch, [box, other, box])
    assert torch.equal(a.boxes, b.boxes)
    # Mixed precision (bf16 blocks, fp32 head) takes the same path.
    bf = trackers.LoRATracker.from_config(TINY_LORAT, seed=0, dtype=torch.bfloat16)
    a, b = bf.track(video, box), _full_map(bf).track(video, box)
    assert torch.equal(a.boxes, b.boxes)


def test_golden_b224_chosen_cell_boxes_are_the_full_maps(golden_dir, tmp_path):
    ref = np.load(golden_dir / "lorat" / "golden_track_B224.npz")
    sd = synth_state_dict(str(golden_dir / "lorat" / "state_dict_B224.tsv"), 0)
    sd["head.reg_mlp.layers.2.bias"][:] = -2.0  # golden "variant A"
    torch.save(sd, tmp_path / "merged.pth")
    tracker = trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint=tmp_path / "merged.pth")
    # Every cell of a real forward (golden clip frame 1 search crop): the single-cell box is the map's box.
    fwd = np.load(golden_dir / "lorat" / "golden_forward_B224.npz")
    z, x, mask = (torch.from_numpy(fwd[k]) for k in ("z", "x", "z_feat_mask"))
    model = tracker.model
    with torch.inference_mode():
        tokens = model.fuse(model.embed_template(z, mask), model.embed_search(x))
        full = model.head.boxes(tokens).reshape(2, -1, 4)
        for c in range(full.shape[1]):
            cells = torch.tensor([c, (c + 97) % full.shape[1]])
            assert torch.equal(model.head.boxes_at(tokens, cells), full[torch.arange(2), cells]), c
    # Tracking the first frames of the golden clip: same boxes as the full-map path, and as the official code.
    video, init_box = ref["video"][:5], ref["init_box_xyxy"]
    a, b = tracker.track(video, init_box), _full_map(tracker).track(video, init_box)
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
    assert float((a.boxes[1:] - torch.from_numpy(ref["boxes_xyxy_A"][:4])).abs().max()) < 1e-3
