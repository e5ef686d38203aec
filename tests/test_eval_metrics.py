"""trackers.train.eval.metrics: parity with the official TAP-Vid / GOT-10k / pytracking / OSTrack evaluation code
(golden outputs in tests/data/metrics), hand-computed toys and edge cases. Warnings are errors here: degenerate
inputs must give documented values (NaN for undefined ratios) silently."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from trackers.train.eval import metrics as M

pytestmark = pytest.mark.filterwarnings("error")

DATA = Path(__file__).resolve().parent / "data" / "metrics"
TAPVID_CASES = ["case0_all_visible", "case1_heavy_occlusion", "case2_perfect", "case3_batch2", "case4_edge"]
SOT_SEQS = ["seq0_clean", "seq1_absent_invalid", "seq2_out_of_image"]


@pytest.fixture(scope="module")
def tapvid():
    with np.load(DATA / "golden_tapvid.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def sot():
    with np.load(DATA / "golden_sot.npz") as d:
        return {k: d[k] for k in d.files}


def _ours(g, prefix):
    """Golden inputs in the reference layout -> our conventions (T, N) order, visible flags, (t, x, y) queries."""
    return dict(
        pred_tracks=g[prefix + "pred_tracks"].transpose(0, 2, 1, 3),
        pred_visible=~g[prefix + "pred_occluded"].transpose(0, 2, 1),
        gt_tracks=g[prefix + "gt_tracks"].transpose(0, 2, 1, 3),
        gt_visible=~g[prefix + "gt_occluded"].transpose(0, 2, 1),
        queries=g[prefix + "query_points"][..., [0, 2, 1]],
    )


def _xyxy(b):
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def _close(a, b, atol=1e-12):
    np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64),
                               rtol=0, atol=atol, equal_nan=True)


# ============================================================================================ TAP-Vid goldens
@pytest.mark.parametrize("case", TAPVID_CASES)
@pytest.mark.parametrize("mode", ["first", "strided"])
@pytest.mark.parametrize("trackwise", [False, True])
def test_tapvid_golden_our_conventions(tapvid, case, mode, trackwise):
    p = f"{case}/{mode}/"
    res = M.tapvid_metrics(**_ours(tapvid, p), query_mode=mode, trackwise=trackwise)
    assert list(res) == list(M.TAPVID_METRIC_NAMES)
    for name in M.TAPVID_METRIC_NAMES:
        want = tapvid[p + ("trackwise/" if trackwise else "metrics/") + name]
        assert res[name].shape == want.shape, name
        _close(res[name], want)


@pytest.mark.parametrize("case", TAPVID_CASES)
def test_tapvid_golden_reference_layout(tapvid, case):
    for mode in ("first", "strided"):
        p = f"{case}/{mode}/"
        res = M.compute_tapvid_metrics(tapvid[p + "query_points"], tapvid[p + "gt_occluded"], tapvid[p + "gt_tracks"],
                                       tapvid[p + "pred_occluded"], tapvid[p + "pred_tracks"], mode)
        for name in M.TAPVID_METRIC_NAMES:
            _close(res[name], tapvid[p + "metrics/" + name])


def test_tapvid_unbatched_and_torch_input(tapvid):
    p = "case3_batch2/strided/"
    inputs = _ours(tapvid, p)
    batched = M.tapvid_metrics(**inputs, query_mode="strided")
    for b in range(2):
        one = M.tapvid_metrics(**{k: torch.from_numpy(np.ascontiguousarray(v[b])) for k, v in inputs.items()},
                               query_mode="strided")
        for name in M.TAPVID_METRIC_NAMES:
            assert np.ndim(one[name]) == 0
            _close(one[name], batched[name][b])


@pytest.mark.parametrize("case", ["case0_all_visible", "case1_heavy_occlusion", "case2_perfect"])
def test_query_samplers_golden(tapvid, case):
    tracks = tapvid[f"{case}/sampler_input/target_points"].transpose(1, 0, 2)   # (T, N, 2)
    visible = ~tapvid[f"{case}/sampler_input/target_occluded"].T                  # (T, N)
    for mode, sampler in (("first", M.sample_queries_first), ("strided", M.sample_queries_strided)):
        s = sampler(tracks, visible)
        out = f"{case}/{mode}/sampler_output/"
        want_q = tapvid[out + "query_points"][0]
        assert s.queries.dtype == np.float64
        np.testing.assert_array_equal(s.queries[:, [0, 2, 1]], want_q)
        np.testing.assert_array_equal(s.tracks.transpose(1, 0, 2), tapvid[out + "target_points"][0])
        np.testing.assert_array_equal(~s.visible.T, tapvid[out + "occluded"][0])
        if mode == "strided":
            np.testing.assert_array_equal(s.track_index, tapvid[out + "trackgroup"][0])
        # the sampled queries are exactly the ones the golden metrics were computed with
        np.testing.assert_array_equal(s.queries[:, [0, 2, 1]], tapvid[f"{case}/{mode}/query_points"][0])


def test_aggregate_tapvid_is_mean_over_videos(tapvid):
    per_video = [M.tapvid_metrics(**_ours(tapvid, f"{c}/first/"), query_mode="first") for c in TAPVID_CASES[:4]]
    agg = M.aggregate_tapvid(per_video)
    assert agg["num_videos"] == 5  # case3 holds two videos
    for name in M.TAPVID_METRIC_NAMES:
        vals = np.concatenate([np.ravel(tapvid[f"{c}/first/metrics/{name}"]) for c in TAPVID_CASES[:4]])
        _close(agg[name], vals.mean())
    # video 1 of case4 has no visible evaluated point: pts_within is undefined for it and skipped (or NaN)
    edge = M.tapvid_metrics(**_ours(tapvid, "case4_edge/first/"), query_mode="first")
    assert np.isnan(edge["pts_within_1"][1])
    agg = M.aggregate_tapvid([edge])
    _close(agg["pts_within_1"], tapvid["case4_edge/first/metrics/pts_within_1"][0])
    _close(agg["average_jaccard"], tapvid["case4_edge/first/metrics/average_jaccard"].mean())
    assert np.isnan(M.aggregate_tapvid([edge], skip_undefined=False)["pts_within_1"])


# ============================================================================================ TAP-Vid toys / edges
def _one_track(gt_xy, pred_xy, gt_vis, pred_vis, t_query):
    gt = np.asarray(gt_xy, float)[:, None]
    pred = np.asarray(pred_xy, float)[:, None]
    return dict(pred_tracks=pred, pred_visible=np.asarray(pred_vis)[:, None], gt_tracks=gt,
                gt_visible=np.asarray(gt_vis)[:, None], queries=[[t_query, *gt_xy[t_query]]])


def test_tapvid_hand_computed_jaccard():
    # frame 0 = query (not scored); frame 1 off by 0.5 px; frame 2 off by 3 px; all visible
    inp = _one_track([[10, 10], [10, 10], [20, 20]], [[10, 10], [10.5, 10], [23, 20]], [1, 1, 1], [1, 1, 1], 0)
    r = M.tapvid_metrics(**inp, query_mode="first")
    # d=1,2: TP=1 (frame 1), FP=1 (frame 2 too far), GT-visible=2 -> 1/3; d>=4: 2/2
    _close([r[f"jaccard_{d}"] for d in M.TAPVID_THRESHOLDS], [1 / 3, 1 / 3, 1, 1, 1])
    _close([r[f"pts_within_{d}"] for d in M.TAPVID_THRESHOLDS], [0.5, 0.5, 1, 1, 1])
    _close(r["average_jaccard"], 11 / 15)
    _close(r["average_pts_within_thresh"], 0.8)
    _close(r["occlusion_accuracy"], 1.0)
    # predicting frame 2 occluded removes the false positive but keeps the miss; occlusion accuracy drops
    inp["pred_visible"] = np.array([[1], [1], [0]], bool)
    r = M.tapvid_metrics(**inp, query_mode="first")
    _close([r[f"jaccard_{d}"] for d in M.TAPVID_THRESHOLDS], [0.5] * 5)
    _close(r["occlusion_accuracy"], 0.5)
    # 'strided' with the query in the middle scores frames 0 and 2; 'first' only frame 2
    inp = _one_track([[0, 0], [10, 10], [20, 20]], [[0, 5], [10, 10], [20, 20]], [1, 1, 1], [1, 1, 1], 1)
    _close(M.tapvid_metrics(**inp, query_mode="strided")["pts_within_4"], 0.5)
    _close(M.tapvid_metrics(**inp, query_mode="first")["pts_within_4"], 1.0)


def test_tapvid_threshold_is_strict_and_rescaling():
    # exactly 2 px off: not within 2 (strict <), within 4
    inp = _one_track([[0, 0], [100, 100]], [[0, 0], [102, 100]], [1, 1], [1, 1], 0)
    r = M.tapvid_metrics(**inp)
    assert r["pts_within_2"] == 0.0 and r["pts_within_4"] == 1.0
    # the same 2 px error measured in a 512x1024 (H x W) video: x scales by 256/1024 -> 0.5 px in the raster
    r = M.tapvid_metrics(**inp, image_size=(512, 1024))
    assert r["pts_within_1"] == 1.0
    inp = _one_track([[0, 0], [100, 100]], [[0, 0], [100, 102]], [1, 1], [1, 1], 0)
    r = M.tapvid_metrics(**inp, image_size=(512, 1024))  # y scales by 256/512 -> 1 px: not within 1
    assert r["pts_within_1"] == 0.0 and r["pts_within_2"] == 1.0


def test_tapvid_edge_cases_are_defined():
    rng = np.random.default_rng(0)
    T, N = 6, 4
    gt = rng.uniform(0, 256, (T, N, 2))
    q = np.concatenate([np.zeros((N, 1)), gt[0]], 1)
    vis = np.ones((T, N), bool)
    # perfect predictions: every metric is 1
    r = M.tapvid_metrics(gt, vis, gt, vis, q)
    for name in M.TAPVID_METRIC_NAMES:
        assert r[name] == 1.0, name
    # everything occluded in GT and prediction: occlusion accuracy 1, positions undefined (NaN), Jaccard 0/0 NaN
    occ = np.zeros((T, N), bool)
    r = M.tapvid_metrics(gt, occ, gt, occ, q)
    assert r["occlusion_accuracy"] == 1.0
    assert np.isnan(r["pts_within_1"]) and np.isnan(r["jaccard_1"]) and np.isnan(r["average_jaccard"])
    # GT all occluded but predicted visible: every prediction is a false positive -> Jaccard 0
    r = M.tapvid_metrics(gt, vis, gt, occ, q)
    assert r["jaccard_16"] == 0.0 and r["occlusion_accuracy"] == 0.0
    # one frame: only the query frame, nothing is scored -> NaN everywhere, no warning
    r = M.tapvid_metrics(gt[:1], vis[:1], gt[:1], vis[:1], q, query_mode="strided")
    assert all(np.isnan(r[n]) for n in M.TAPVID_METRIC_NAMES)
    # empty query set
    r = M.tapvid_metrics(np.zeros((T, 0, 2)), np.zeros((T, 0), bool), np.zeros((T, 0, 2)), np.zeros((T, 0), bool),
                         np.zeros((0, 3)))
    assert all(np.isnan(r[n]) for n in M.TAPVID_METRIC_NAMES)
    r = M.tapvid_metrics(np.zeros((T, 0, 2)), np.zeros((T, 0), bool), np.zeros((T, 0, 2)), np.zeros((T, 0), bool),
                         np.zeros((0, 3)), trackwise=True)
    assert r["jaccard_1"].shape == (0,)
    # samplers on a clip where nothing is ever visible
    for sampler in (M.sample_queries_first, M.sample_queries_strided):
        s = sampler(gt, occ)
        assert s.queries.shape == (0, 3) and s.tracks.shape == (T, 0, 2) and s.visible.shape == (T, 0)
    # an aggregate over only undefined videos is NaN, without a warning
    assert np.isnan(M.aggregate_tapvid([M.tapvid_metrics(gt, occ, gt, occ, q)])["pts_within_1"])


def test_tapvid_bad_inputs():
    gt = np.zeros((4, 2, 2))
    vis = np.ones((4, 2), bool)
    q = np.zeros((2, 3))
    with pytest.raises(ValueError, match="query_mode"):
        M.tapvid_metrics(gt, vis, gt, vis, q, query_mode="last")
    with pytest.raises(ValueError, match="outside"):
        M.tapvid_metrics(gt, vis, gt, vis, [[0, 0, 0], [4, 0, 0]])
    with pytest.raises(ValueError, match="pred_visible"):
        M.tapvid_metrics(gt, vis[:3], gt, vis, q)
    with pytest.raises(ValueError, match="stride"):
        M.sample_queries_strided(gt, vis, stride=0)
    # probabilities are refused (casting would make every non-zero probability "visible"); 0/1 floats are fine
    with pytest.raises(ValueError, match="Threshold probabilities"):
        M.tapvid_metrics(gt, np.full((4, 2), 0.3), gt, vis, q)
    assert M.tapvid_metrics(gt, vis.astype(np.float32), gt, vis, q)["occlusion_accuracy"] == 1.0


# ============================================================================================ GOT-10k
def _seq(sot, s):
    return {k.split("/")[-1]: sot[k] for k in sot if k.startswith(f"input/{s}/")}


def test_got10k_golden(sot):
    per_seq = []
    for s in SOT_SEQS:
        i = _seq(sot, s)
        W, H = i["image_wh"]
        pred, gt = _xyxy(i["pred_xywh"]), _xyxy(i["gt_xywh"])
        r = M.got10k_metrics(pred, gt, image_size=(H, W), cover=i["got10k_cover"])
        g = f"got10k_val/{s}/"
        _close(r.ious, sot[g + "ious_used"])
        _close(r.success_curve, sot[g + "succ_curve_101"])
        _close([r.ao, r.sr50, r.sr75], [sot[g + "ao"], sot[g + "sr50"], sot[g + "sr75"]])
        # the image bound (the toolkit's clipping quirk) matters for the out-of-image sequence
        _close(M.got10k_metrics(pred, gt, image_size=(H, W)).ious, sot[g + "rect_iou_bound_frames1"])
        _close(M.got10k_metrics(pred, gt).ious, sot[g + "rect_iou_nobound_frames1"])
        per_seq.append(r)
    overall = M.aggregate_got10k(per_seq)
    g = "got10k_val/overall/"
    _close([overall.ao, overall.sr50, overall.sr75], [sot[g + "ao"], sot[g + "sr50"], sot[g + "sr75"]])
    _close(overall.success_curve, sot[g + "succ_curve_101"])
    assert overall.num_sequences == 3
    assert abs(overall.ao - np.mean([r.ao for r in per_seq])) > 1e-3  # frame-weighted, not a mean of AOs


def test_got10k_hand_computed():
    gt = np.array([[0, 0, 10, 10]] * 3, float)
    pred = np.array([[50, 50, 60, 60], [0, 0, 10, 10], [5, 0, 15, 10]], float)  # frame 0 is never scored
    r = M.got10k_metrics(pred, gt)
    _close(r.ious, [1.0, 1 / 3], atol=1e-15)
    _close([r.ao, r.sr50, r.sr75], [2 / 3, 0.5, 0.5], atol=1e-15)
    r = M.got10k_metrics(pred, gt, cover=[8, 8, 0])  # absent frame 2 dropped
    _close([r.ao, r.sr50], [1.0, 1.0], atol=1e-15)
    # IoU exactly 0.5 is not a success (strict >)
    r = M.got10k_metrics(np.array([[0, 0, 10, 10], [0, 0, 10, 10]], float),
                         np.array([[0, 0, 10, 10], [0, 0, 20, 10]], float))
    assert r.ious[0] == 0.5 and r.sr50 == 0.0
    # clipping quirk: a GT box hanging 10 px off the left border is moved inside, not cropped
    gt = np.array([[0, 0, 1, 1], [-10, 0, 40, 30]], float)
    pred = np.array([[0, 0, 1, 1], [0, 0, 50, 30]], float)
    _close(M.got10k_metrics(pred, gt, image_size=(100, 100)).ao, 1.0)
    _close(M.got10k_metrics(pred, gt).ao, 2 / 3)


def test_got10k_edge_cases():
    box = np.array([[0, 0, 10, 10]], float)
    one = M.got10k_metrics(box, box)  # one frame: nothing scored
    assert one.ious.size == 0 and np.isnan(one.ao) and np.isnan(one.sr50) and np.isnan(one.sr75)
    absent = M.got10k_metrics(np.repeat(box, 3, 0), np.repeat(box, 3, 0), cover=[1, 0, 0])
    assert np.isnan(absent.ao)
    good = M.got10k_metrics(np.repeat(box, 3, 0), np.repeat(box, 3, 0))
    merged = M.aggregate_got10k([one, good, absent])
    assert merged.ao == good.ao and merged.num_sequences == 3
    with pytest.raises(ValueError, match="cover"):
        M.got10k_metrics(np.repeat(box, 3, 0), np.repeat(box, 3, 0), cover=[1, 1])
    with pytest.raises(ValueError, match="same T"):
        M.got10k_metrics(np.repeat(box, 3, 0), np.repeat(box, 2, 0))


# ============================================================================================ OTB / LaSOT
@pytest.mark.parametrize("benchmark", ["otb", "lasot"])
def test_got10k_toolkit_ope_golden(sot, benchmark):
    per_seq = []
    for s in SOT_SEQS:
        i = _seq(sot, s)
        r = M.ope_metrics(_xyxy(i["pred_xywh"]), _xyxy(i["gt_xywh"]), convention="got10k_toolkit", benchmark=benchmark,
                          target_visible=i["target_visible"])  # ignored by this toolkit
        per_seq.append(r)
    for key, r in list(zip(SOT_SEQS, per_seq)) + [("overall", M.aggregate_ope(per_seq))]:
        g = f"g10k_toolkit_{benchmark}/{key}/"
        _close(r.success_curve, sot[g + "success_curve_21"])
        _close(r.precision_curve, sot[g + "precision_curve_51"])
        _close([r.auc, r.precision, r.success_rate],
               [sot[g + "success_score"], sot[g + "precision_score_20px"], sot[g + "success_rate_0.5"]])
        if benchmark == "lasot":
            _close(r.norm_precision_curve, sot[g + "normalized_precision_curve_51"])
            _close(r.norm_precision, sot[g + "normalized_precision_score"])
        else:
            assert r.norm_precision_curve is None and np.isnan(r.norm_precision)


@pytest.mark.parametrize("convention", ["pytracking", "ostrack"])
@pytest.mark.parametrize("benchmark", ["otb", "lasot"])
@pytest.mark.parametrize("exclude", [0, 1])
def test_pytracking_ostrack_golden(sot, convention, benchmark, exclude):
    per_seq = []
    for j, s in enumerate(SOT_SEQS):
        i = _seq(sot, s)
        r = M.ope_metrics(_xyxy(i["pred_xywh"]), _xyxy(i["gt_xywh"]), convention=convention, benchmark=benchmark,
                          target_visible=i["target_visible"] if benchmark == "lasot" else None,
                          exclude_invalid_frames=bool(exclude))
        g = f"{convention}_{benchmark}/{s}/"
        np.testing.assert_array_equal(r.valid, sot[g + "valid"])
        _close(r.overlap, sot[g + "err_overlap"])
        _close(r.center_error, sot[g + "err_center"])
        _close(r.norm_center_error, sot[g + "err_center_normalized"])
        g = f"{convention}_{benchmark}/exclude_invalid_{exclude}/"
        # per-sequence curves are float32 in the toolkit
        _close(r.success_curve, sot[g + "per_seq_success_curve_21"][j], atol=1e-6)
        _close(r.precision_curve, sot[g + "per_seq_precision_curve_51"][j], atol=1e-6)
        _close(r.norm_precision_curve, sot[g + "per_seq_norm_precision_curve_51"][j], atol=1e-6)
        _close(r.average_overlap, sot[g + "per_seq_avg_overlap"][j])
        per_seq.append(r)
    agg = M.aggregate_ope(per_seq)
    # dataset scores are float32 percentages in the toolkit: compare as fractions to 1e-6
    for attr, key in (("auc", "AUC"), ("success_rate", "OP50"), ("op75", "OP75"), ("precision", "Precision"),
                      ("norm_precision", "NormPrecision")):
        _close(getattr(agg, attr), sot[g + key] / 100.0, atol=1e-6)
    _close(agg.success_curve * 100, sot[g + "success_curve_21_pct"], atol=1e-4)


def test_pytracking_threshold_grid_matches_torch(sot):
    r = M.ope_metrics(np.array([[0, 0, 2, 2.0]]), np.array([[0, 0, 2, 2.0]]))
    np.testing.assert_array_equal(r.iou_thresholds, sot["pytracking/threshold_set_overlap"])
    np.testing.assert_array_equal(M._PT_CENTER_THRESHOLDS, sot["pytracking/threshold_set_center"])
    np.testing.assert_array_equal(M._PT_NORM_THRESHOLDS, sot["pytracking/threshold_set_center_norm"])


def test_ope_hand_computed_and_validity_rules():
    gt = np.array([[10, 10, 20, 20], [10, 10, 20, 20]], float)
    pred = np.array([[0, 0, 1, 1], [15, 10, 25, 20]], float)  # frame 0 becomes GT (IoU 1); frame 1 IoU 1/3, 5 px
    for conv in M.OPE_CONVENTIONS:
        r = M.ope_metrics(pred, gt, convention=conv, benchmark="otb")
        # IoU > thr: both frames up to 0.30, only frame 0 from 0.35 to 0.95, none at 1.0
        _close(r.success_curve, [1.0] * 7 + [0.5] * 13 + [0.0])
        _close(r.auc, 13.5 / 21)
        _close([r.precision, r.success_rate, r.op75], [1.0, 0.5, 0.5])
    # GT touching the top border (y = 0): invalid for pytracking (all four > 0), valid for OSTrack (w, h > 0)
    gt0 = gt - [0, 10, 0, 10]
    pred0 = pred - [0, 10, 0, 10]
    pt = M.ope_metrics(pred0, gt0, convention="pytracking")
    os_ = M.ope_metrics(pred0, gt0, convention="ostrack")
    assert not pt.valid.any() and os_.valid.all()
    _close(pt.success_curve, np.zeros(21))
    _close(pt.norm_precision, 1.0)  # pytracking counts the invalid frames' -1 normalised error as precise
    _close(os_.auc, 13.5 / 21)
    # a zero-width prediction repeats the previous (repaired) one
    r = M.ope_metrics(np.array([[10, 10, 20, 20], [12, 10, 22, 20], [30, 30, 30, 40]], float),
                      np.repeat(gt[:1], 3, 0), convention="pytracking")
    _close(r.overlap[2], r.overlap[1])
    # LaSOT: frames flagged invisible are failures for precision even with a valid GT box
    r = M.ope_metrics(pred, gt, benchmark="lasot", target_visible=[True, False])
    assert r.valid.tolist() == [True, False] and r.center_error[1] == np.inf and r.norm_center_error[1] == np.inf
    # UAV rules: NaN ground truth is allowed (invalid frame) and an invalid frame's centre error -1 is "precise"
    gt_nan = np.array([[10, 10, 20, 20], [np.nan] * 4], float)
    r = M.ope_metrics(pred, gt_nan, benchmark="uav")
    assert r.valid.tolist() == [True, False] and r.center_error[1] == -1.0 and r.overlap[1] == -1.0
    _close([r.precision, r.success_rate], [1.0, 0.5])
    with pytest.raises(ValueError, match="NaN"):
        M.ope_metrics(pred, gt_nan, benchmark="otb")


def test_ope_edge_cases():
    gt = np.array([[10, 10, 20, 20]], float)
    one = M.ope_metrics(gt + 3, gt)  # one frame: frame 0 is the GT, a success
    _close([one.auc, one.precision, one.norm_precision], [20 / 21, 1.0, 1.0])
    # every frame invalid with exclude_invalid_frames: no scored frame -> NaN curves, left out of the aggregate
    absent = M.ope_metrics(np.zeros((2, 4)) + [0, 0, 1, 1], np.zeros((2, 4)), exclude_invalid_frames=True)
    assert np.isnan(absent.auc) and np.isnan(absent.average_overlap)
    agg = M.aggregate_ope([one, absent])
    assert agg.num_sequences == 1 and agg.auc == one.auc
    with pytest.raises(ValueError, match="convention"):
        M.ope_metrics(gt, gt, convention="lasot")
    with pytest.raises(ValueError, match="negative"):
        M.ope_metrics(np.array([[0, 0, 1, 1], [5, 5, 4, 6]], float), np.repeat(gt, 2, 0))
    with pytest.raises(ValueError, match="results\\[1\\]"):
        M.aggregate_ope([one, M.ope_metrics(gt, gt, convention="ostrack")])
