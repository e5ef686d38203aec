"""Evaluation: benchmark metrics equal to the official toolkits (:mod:`.metrics`, numpy only) and classical
OpenCV baselines (:mod:`.baselines`, OpenCV imported on first use)."""
from trackers.train.eval.baselines import CSRTTracker, LucasKanadeTracker
from trackers.train.eval.metrics import (
    OPE_CONVENTIONS,
    TAPVID_METRIC_NAMES,
    TAPVID_RESOLUTION,
    TAPVID_THRESHOLDS,
    GOT10kResult,
    OPEResult,
    TapVidQueries,
    aggregate_got10k,
    aggregate_ope,
    aggregate_tapvid,
    compute_tapvid_metrics,
    got10k_metrics,
    ope_metrics,
    sample_queries_first,
    sample_queries_strided,
    tapvid_metrics,
    xyxy_to_xywh,
)

__all__ = [
    "CSRTTracker", "LucasKanadeTracker",
    "OPE_CONVENTIONS", "TAPVID_METRIC_NAMES", "TAPVID_RESOLUTION", "TAPVID_THRESHOLDS",
    "GOT10kResult", "OPEResult", "TapVidQueries",
    "aggregate_got10k", "aggregate_ope", "aggregate_tapvid", "compute_tapvid_metrics", "got10k_metrics",
    "ope_metrics", "sample_queries_first", "sample_queries_strided", "tapvid_metrics", "xyxy_to_xywh",
]
