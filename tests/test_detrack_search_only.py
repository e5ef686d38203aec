"""DETRack without the template's encoder outputs (what a tracking step asks for): the same boxes, bit for bit.

The decoder reads search tokens only, so the tracker's forward skips the last encoder block's attention output,
projection and MLP on the template rows (``template_outputs=False``). Everything the tracker uses must be
unchanged: the kept search tokens, candidate elimination, query scores and boxes.
"""
from __future__ import annotations

import math

import pytest
import torch
from _helpers import TINY_DETRACK, moving_square_video

import trackers
from trackers.models.detrack import DETRack, DETRackConfig


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (a fresh decoder predicts zero box deltas, which would hide differences)."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * (0.3 / math.sqrt(p.shape[-1]) if p.dim() > 1 else 0.02))
    return model


class FullEncoderBoxTracker(trackers.BoxTracker):
    """The tracker as it was before: the encoder computes the template's outputs too."""

    def _predict(self, templates, search):
        out = self.model.forward_tokens(templates, search, num_decoder_layers=self._check_decoder_layers())
        return DETRack.score_map(out)


def _assert_same(a, b):
    for name in ("boxes", "scores", "query_index", "enc_boxes", "enc_scores", "enc_index", "memory"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert all(torch.equal(x, y) for x, y in zip(a.kept_index, b.kept_index))


# TINY_DETRACK eliminates candidates in its last block (ce_locations=(1, 2, 3), depth 4); the variant without CE
# there covers a plain last block.
@pytest.mark.parametrize("overrides", [{}, {"ce_locations": (1, 2)}, {"ce_keep_ratio": 1.0}])
@pytest.mark.parametrize("mixed", [False, True])
def test_search_only_encoder_gives_the_same_outputs(overrides, mixed):
    torch.manual_seed(0)
    model = _randomised(DETRack(DETRackConfig(**{**TINY_DETRACK, **overrides}))).eval()
    if mixed:
        model.to_mixed_precision(torch.bfloat16)
    z, x = torch.randn(3, 3, 32, 32), torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        full = model(z, x)
        lean = model(z, x, template_outputs=False)
        enc = model.encode(z, x)
        enc_lean = model.backbone.forward_tokens(model.embed_template(z), model.backbone.embed_search(x),
                                                 template_outputs=False)
    _assert_same(full, lean)
    assert full.template_tokens.shape == (3, 64, 32) and lean.template_tokens is None
    assert enc_lean.num_template == 0 and enc_lean.tokens.shape == enc.search_tokens.shape
    assert torch.equal(enc_lean.search_tokens, enc.search_tokens)
    assert torch.equal(enc_lean.search_index, enc.search_index)


def test_full_size_network_batch_of_two():
    torch.manual_seed(0)
    model = DETRack(DETRackConfig()).eval()
    z, x = torch.randn(2, 3, 128, 128), torch.randn(2, 3, 256, 256)
    with torch.inference_mode():
        _assert_same(model(z, x), model(z, x, template_outputs=False))


def test_tracking_is_unchanged():
    tracker = trackers.BoxTracker.from_config(TINY_DETRACK, seed=0)
    _randomised(tracker.model)
    full = FullEncoderBoxTracker.__new__(FullEncoderBoxTracker)
    full.__dict__.update(tracker.__dict__)
    video = moving_square_video(T=8, H=48, W=64)
    for box in ((4.0, 16.0, 20.0, 32.0), [(4.0, 16.0, 20.0, 32.0), (30.0, 5.0, 50.0, 25.0)]):
        a, b = tracker.track(video, box), full.track(video, box)
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.scores, b.scores)
