"""The shared box-tracking base (pipeline, sessions, batching, input checks), exercised through a tiny LoRAT."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import trackers
from _helpers import TINY_LORAT as TINY
from trackers.results import BoxTracks
from trackers.box.pipeline import (
    CropSizes,
    CropTransform,
    SOTSettings,
    check_init_box,
    crop_transform,
    hann_window_2d,
    init_stream,
    pixel_aligned_crop,
    rasterize_box,
    template_foreground_mask,
)

H, W = 60, 80
BOX = (30.0, 20.0, 46.0, 34.0)


def _video(t: int = 6, h: int = H, w: int = W, dx: float = 3.0) -> np.ndarray:
    """A textured block moving right over a gradient background (uint8, (T, H, W, 3))."""
    yy, xx = np.mgrid[0:h, 0:w]
    out = np.empty((t, h, w, 3), np.uint8)
    for i in range(t):
        frame = np.stack([xx * 3 % 256, yy * 4 % 256, (xx + yy) % 256], -1).astype(np.uint8)
        x0 = int(30 + dx * i)
        frame[20:34, max(x0, 0):max(x0 + 16, 0)] = (250, 20, 20)
        frame[24:30, max(x0 + 4, 0):max(x0 + 12, 0)] = (20, 20, 250)
        out[i] = frame
    return out


@pytest.fixture(scope="module")
def tracker():
    torch.manual_seed(0)
    return trackers.LoRATracker.from_config(TINY, seed=0)


# ---------------------------------------------------------------------------------------------- pipeline pieces

def test_rasterize_and_hann():
    assert rasterize_box((1.2, 2.0, 3.0, 4.5)) == (1, 2, 3, 5)
    assert rasterize_box((-0.5, 0.0, 3.99995, 4.0001)) == (-1, 0, 4, 5)
    win = hann_window_2d(5, 5)
    assert torch.allclose(win[2, 2], torch.tensor(1.0)) and float(win[0].abs().max()) == 0.0
    assert torch.allclose(win, torch.outer(torch.hann_window(5, periodic=False), torch.hann_window(5, periodic=False)))


def test_pixel_aligned_crop_identity_and_padding():
    frame = torch.arange(3 * 10 * 12, dtype=torch.float32).reshape(3, 10, 12)
    fill = torch.tensor([1.0, 2.0, 3.0])
    # scale 1, integer shift: the crop is an exact copy of the frame window, padded where it leaves the frame.
    crop, tf = pixel_aligned_crop(frame, np.array([1.0, 1.0]), np.array([-4.0, 3.0]), 8, fill)
    assert torch.equal(crop[:, 3:8, 0:8], frame[:, 0:5, 4:12])
    assert torch.equal(crop[:, :3], fill.reshape(3, 1, 1).expand(3, 3, 8))
    assert torch.equal(tf.scale, torch.tensor([1.0, 1.0])) and torch.equal(tf.translation, torch.tensor([-4.0, 3.0]))
    # No overlap at all: everything is fill, the ideal transform is kept.
    crop, tf = pixel_aligned_crop(frame, np.array([1.0, 1.0]), np.array([-100.0, 0.0]), 8, fill)
    assert torch.equal(crop, fill.reshape(3, 1, 1).expand(3, 8, 8))
    box = torch.tensor([100.0, 0.0, 104.0, 4.0], dtype=torch.float64)
    assert torch.allclose(tf.to_frame(tf.to_crop(box)), box)


def test_crop_transform_centres_box():
    box = torch.tensor([10.0, 20.0, 30.0, 60.0], dtype=torch.float64)
    s, t = crop_transform(box, 2.0, 100)
    side = np.sqrt((20 + 30) * (40 + 30))
    assert np.allclose(s, 100 / side)
    assert np.allclose(np.array([20.0, 40.0]) * s + t, 50.0)


def test_template_mask_and_stream_init():
    tf = CropTransform(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 0.0]))
    mask = template_foreground_mask(torch.tensor([14.0, 0.0, 30.0, 13.0]), tf, 56, 4)
    expected = torch.zeros(4, 4, dtype=torch.int64)
    expected[0:1, 1:3] = 1
    assert torch.equal(mask, expected)
    frame = torch.from_numpy(_video(1)[0]).permute(2, 0, 1).float()
    state, z = init_stream(frame, BOX, SOTSettings(), CropSizes(template=28, search=56, template_grid=2))
    m = state.template_mask
    assert z.shape == (3, 28, 28) and m.shape == (2, 2) and int(m.sum()) >= 1
    assert torch.allclose(state.fill, frame.mean(dim=(1, 2)))
    assert state.box.dtype == torch.float64 and state.box.tolist() == list(BOX)


@pytest.mark.parametrize(
    "box,match",
    [
        ((10, 10, 10, 20), "empty"),
        ((10, 10, 20, 10), "empty"),
        ((20, 10, 10, 20), "inverted"),
        ((10, 30, 20, 20), "inverted"),
        ((10, float("nan"), 20, 20), "finite"),
        ((10, 10, float("inf"), 20), "finite"),
        ((W + 5, 10, W + 20, 20), "outside"),
        ((-30, -30, -1, -1), "outside"),
        ((1, 2, 3), "4 numbers"),
        ("abcd", "4 numbers"),
    ],
)
def test_bad_init_box(tracker, box, match):
    with pytest.raises(ValueError, match=match):
        tracker.stream(_video(1)[0], box)
    with pytest.raises(ValueError, match=match):
        tracker.track(_video(2), box)


def test_init_box_partly_outside_is_accepted():
    b = check_init_box((-5.0, -5.0, 10.0, 10.0), (H, W))
    assert b.tolist() == [-5.0, -5.0, 10.0, 10.0]


def test_bad_frames(tracker):
    video = _video(3)
    session = tracker.stream(video[0], BOX)
    with pytest.raises(ValueError, match="differs from the stream's first frame"):
        session.step(np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(ValueError, match="3 RGB channels"):
        session.step(np.zeros((H, W, 4), np.uint8))
    with pytest.raises(ValueError, match="one frame"):
        session.step(np.zeros((W, 3), np.uint8))
    with pytest.raises(ValueError, match="3 RGB channels"):
        tracker.stream(np.zeros((H, W, 1), np.uint8), BOX)
    with pytest.raises(ValueError, match="differs"):
        tracker.track([video[0], np.zeros((H, W + 1, 3), np.uint8)], BOX)
    with pytest.raises(ValueError, match="3 RGB channels"):
        tracker.track(np.zeros((2, H, W, 2), np.uint8), BOX)
    with pytest.raises(ValueError, match="no frames"):
        tracker.track(np.zeros((0, H, W, 3), np.uint8), BOX)
    with pytest.raises(ValueError, match="sessions"):
        tracker.step_many([session], [])
    # The failed steps did not advance the session.
    assert session.frame_index == 1
    step = session.step(video[1])
    assert session.frame_index == 2 and step.boxes.shape == (1, 4) and step.start_frame == 1
    assert 0.0 <= float(step.scores[0]) <= 1.0
    final = session.close()
    assert final.boxes.shape == (2, 4) and final.start_frame == 0
    with pytest.raises(RuntimeError, match="closed"):
        session.step(video[2])


# ---------------------------------------------------------------------------------------------- tracking API

def test_track_stream_and_batch_agree(tracker):
    video = _video(6)
    res = tracker.track(video, BOX)
    assert isinstance(res, BoxTracks)
    assert res.boxes.shape == (6, 4) and res.scores.shape == (6,) and res.image_size == (H, W)
    assert res.boxes[0].tolist() == list(BOX) and float(res.scores[0]) == 1.0
    b = res.boxes
    assert bool(torch.isfinite(b).all())
    assert bool((b[:, 0] >= 0).all() and (b[:, 2] <= W).all() and (b[:, 1] >= 0).all() and (b[:, 3] <= H).all())
    assert bool(((res.scores >= 0) & (res.scores <= 1)).all())

    # Channels-first float input and a torch tensor give the same result.
    res_cf = tracker.track(torch.from_numpy(video).permute(0, 3, 1, 2).float(), torch.tensor(BOX))
    assert torch.allclose(res_cf.boxes, res.boxes, atol=1e-6)

    # Two interleaved sessions on one model are independent and equal the whole-clip run.
    other_box = (5.0, 5.0, 25.0, 25.0)
    s1, s2 = tracker.stream(video[0], BOX), tracker.stream(video[0], other_box)
    ref2 = tracker.track(video, other_box)
    for t in range(1, 6):
        b1 = s1.step(video[t]).boxes[0]
        b2 = s2.step(video[t]).boxes[0]
        assert torch.allclose(b1, res.boxes[t], atol=1e-3)
        assert torch.allclose(b2, ref2.boxes[t], atol=1e-3)
    # ... and several steps at once give the same frames.
    with tracker.stream(video[0], BOX) as s3:
        chunk = s3.step(video[1:4])
        assert chunk.start_frame == 1 and chunk.boxes.shape == (3, 4)
        assert torch.allclose(chunk.boxes, res.boxes[1:4], atol=1e-3)
    assert s3.closed and s3.results().boxes.shape == (4, 4)

    # Several targets in one session (one forward per frame) equal single-target runs.
    multi = tracker.track(video, [BOX, other_box])
    assert multi.boxes.shape == (2, 6, 4) and multi.scores.shape == (2, 6)
    assert torch.allclose(multi.boxes[0], res.boxes, atol=1e-3)
    assert torch.allclose(multi.boxes[1], ref2.boxes, atol=1e-3)
    with tracker.stream(video[0], [BOX, other_box]) as sm:
        st = sm.step(video[1])
        assert st.boxes.shape == (2, 1, 4) and sm.boxes.shape == (2, 4)
        assert torch.allclose(st.boxes[:, 0], torch.stack([res.boxes[1], ref2.boxes[1]]), atol=1e-3)

    # A batch of clips (one batched forward per frame) equals separate runs.
    batch = np.stack([video, video[:, :, ::-1].copy()])
    flipped_box = (W - BOX[2], BOX[1], W - BOX[0], BOX[3])
    res_b = tracker.track(batch, [BOX, flipped_box])
    assert res_b.boxes.shape == (2, 6, 4) and res_b.scores.shape == (2, 6)
    res_f = tracker.track(batch[1], flipped_box)
    assert torch.allclose(res_b.boxes[0], res.boxes, atol=1e-3)
    assert torch.allclose(res_b.boxes[1], res_f.boxes, atol=1e-3)
    assert torch.allclose(res_b.scores[1], res_f.scores, atol=1e-4)

    # step_many batches sessions of different videos and sizes.
    small = _video(2, h=40, w=50)
    sa, sb = tracker.stream(video[0], BOX), tracker.stream(small[0], (5.0, 5.0, 20.0, 20.0))
    out = tracker.step_many([sa, sb], [video[1], small[1]])
    assert len(out) == 2 and all(isinstance(o, BoxTracks) for o in out)
    assert torch.allclose(out[0].boxes[0], res.boxes[1], atol=1e-3) and out[1].image_size == (40, 50)


def test_target_leaving_the_frame_keeps_tracking(tracker):
    video = _video(12, dx=6.0)  # the block exits on the right after a few frames
    res = tracker.track(video, BOX)
    assert res.boxes.shape == (12, 4) and bool(torch.isfinite(res.boxes).all())
    session = tracker.stream(video[0], (W - 6.0, 20.0, W + 10.0, 34.0))  # init box partly outside
    for t in range(1, 12):
        step = session.step(video[t])
        box, score = step.boxes[0], float(step.scores[0])
        assert bool(torch.isfinite(box).all()) and 0.0 <= score <= 1.0
        assert box[0] >= 0 and box[2] <= W and box[1] >= 0 and box[3] <= H
    # A state box entirely outside the image (e.g. set by a user) still gives a crop and an answer.
    import dataclasses

    outside = torch.tensor([W + 50.0, H + 50.0, W + 60.0, H + 60.0], dtype=torch.float64)
    session.targets[0] = dataclasses.replace(session.targets[0], box=outside)
    assert bool(torch.isfinite(session.step(video[0]).boxes).all())


def test_bfloat16_runs_and_stays_close(tracker):
    video = _video(4)
    bf = trackers.LoRATracker.from_config(TINY, seed=0, dtype=torch.bfloat16)
    assert bf.dtype == torch.bfloat16
    # Mixed precision: block matrices in bf16; embeddings, norms, LayerScale and head stay fp32.
    m = bf.model
    assert m.blocks[0].attn.qkv.weight.dtype == torch.bfloat16 and m.blocks[1].mlp.fc2.weight.dtype == torch.bfloat16
    assert m.pos_embed.dtype == m.norm.weight.dtype == m.head.cls_mlp.layers[0].weight.dtype == torch.float32
    assert m.blocks[0].ls1.gamma.dtype == torch.float32
    res = bf.track(video, BOX)
    assert res.boxes.dtype == torch.float64 and bool(torch.isfinite(res.boxes).all())
    assert bool(((res.scores >= 0) & (res.scores <= 1)).all())
    z, x, mask = torch.randn(1, 3, 28, 28), torch.randn(1, 3, 56, 56), torch.zeros(1, 2, 2, dtype=torch.long)
    with torch.inference_mode():
        a = tracker.model(z, x, mask)["score_map"]
        b = m(z, x, mask)["score_map"]
    assert b.dtype == torch.float32 and float((a - b).abs().max()) < 0.05
    # Back to float32 restores a uniform network.
    bf.to(dtype="float32")
    assert bf.dtype == torch.float32 and all(p.dtype == torch.float32 for p in m.parameters())


# ---------------------------------------------------------------------------------------------- save / load

def test_save_reload_and_unmerged_fine_tuning_form(tracker, tmp_path):
    video = _video(4)
    ref = tracker.track(video, BOX)
    folder = tracker.save_pretrained(tmp_path / "tiny")
    again = trackers.LoRATracker.from_pretrained(folder)
    assert not again.model.has_lora
    assert torch.allclose(again.track(video, BOX).boxes, ref.boxes, atol=1e-6)
    # Generic loader picks the class from config.json.
    assert isinstance(trackers.load_tracker(folder), trackers.LoRATracker)

    # Un-merged form from a merged file: fresh adapters with B = 0 reproduce the merged network.
    un = trackers.LoRATracker.from_pretrained(folder, merge_lora=False, lora_rank=4)
    assert un.model.has_lora and un.config.lora_rank == 4
    trainable = [n for n, p in un.model.named_parameters() if p.requires_grad]
    assert trainable and all(".lora." in n or n.startswith(("head.", "token_type_embed")) for n in trainable)
    assert torch.allclose(un.track(video, BOX).boxes, ref.boxes, atol=1e-4)

    # Fine-tune a little, save the un-merged form, reload it un-merged and merged: same function.
    with torch.no_grad():
        for n, p in un.model.named_parameters():
            if n.endswith("lora.B"):
                p.normal_(std=0.05)
    z = torch.randn(1, 3, 28, 28)
    x = torch.randn(1, 3, 56, 56)
    m = torch.zeros(1, 2, 2, dtype=torch.long)
    with torch.inference_mode():
        want = un.model(z, x, m)["score_map"]
    folder_un = un.save_pretrained(tmp_path / "tiny-unmerged")
    kept = trackers.LoRATracker.from_pretrained(folder_un, merge_lora=False)
    merged = trackers.LoRATracker.from_pretrained(folder_un)
    assert kept.model.has_lora and not merged.model.has_lora and merged.config.lora_rank == 0
    with torch.inference_mode():
        assert torch.allclose(kept.model(z, x, m)["score_map"], want, atol=1e-6)
        assert torch.allclose(merged.model(z, x, m)["score_map"], want, atol=1e-5)


def test_registry_entries():
    names = trackers.list_models("lorat-*")
    assert names == ["lorat-b-224", "lorat-b-378", "lorat-g-224", "lorat-g-378", "lorat-l-224", "lorat-l-378"]
    for n in names:
        e = trackers.get_entry(n)
        assert e.tracker_name == "LoRATracker" and set(e.files) == {"weights", "backbone"}
        assert e.converter == "trackers.models.lorat:convert_official_checkpoint"
        assert e.files["weights"].kind == "manual" and e.files["backbone"].kind == "hub"
    e = trackers.get_entry("lorat-l-378")
    assert e.config["search_size"] == 378 and e.config["embed_dim"] == 1024 and e.settings["search_factor"] == 5.0
    assert e.files["backbone"].repo_id == "timm/vit_large_patch14_dinov2.lvd142m"


def test_release_weights_need_a_manual_download():
    with pytest.raises(trackers.WeightsNotAvailableError, match=r"base\.bin.*github.com/LitingLin/LoRAT.*checkpoint="):
        trackers.LoRATracker.from_pretrained("lorat-b-224")


def test_settings_live_beside_the_config(tracker, tmp_path):
    video = _video(4)
    folder = tracker.save_pretrained(tmp_path / "s")
    wide = trackers.LoRATracker.from_pretrained(folder, search_factor=5.0, window_penalty=0.2)
    assert wide.settings.search_factor == 5.0 and wide.settings.window_penalty == 0.2
    assert not hasattr(wide.config, "search_factor")
    assert wide.save_pretrained(tmp_path / "s2") and trackers.LoRATracker.from_pretrained(
        tmp_path / "s2").settings.search_factor == 5.0
    assert not torch.allclose(wide.track(video, BOX).boxes, tracker.track(video, BOX).boxes)
    with pytest.raises(ValueError, match="unknown SOTSettings field"):
        trackers.LoRATracker.from_pretrained(folder, serch_factor=5.0)
    with pytest.raises(ValueError, match="window_penalty"):
        trackers.LoRATracker.from_pretrained(folder, window_penalty=2.0)


def test_release_file_without_backbone_is_a_clear_error(tmp_path):
    from safetensors.torch import save_file

    save_file({"token_type_embed": torch.zeros(3, 768), "lora_alpha": torch.tensor(64),
               "blocks.0.mlp.fc1.lora.A": torch.zeros(64, 768), "blocks.0.mlp.fc1.lora.B": torch.zeros(3072, 64)},
              str(tmp_path / "base.bin"))
    # Offline in tests: the registry's DINOv2 file cannot be fetched, and the error says what to pass.
    with pytest.raises(trackers.WeightsNotAvailableError, match="checkpoints=.*backbone"):
        trackers.LoRATracker.from_pretrained("lorat-b-224", checkpoint=tmp_path / "base.bin")
    with pytest.raises(FileNotFoundError):
        trackers.LoRATracker.from_pretrained(
            "lorat-b-224", checkpoint=tmp_path / "base.bin", backbone_checkpoint=tmp_path / "missing.pth"
        )


def test_track_video_file(tracker, tmp_path):
    from trackers.io import read_video, write_video

    path = write_video(tmp_path / "clip.mp4", _video(4), fps=10)
    res = tracker.track(path, BOX)
    assert res.boxes.shape == (4, 4)
    decoded = read_video(path)
    assert torch.allclose(res.boxes, tracker.track(decoded, BOX).boxes, atol=1e-6)
