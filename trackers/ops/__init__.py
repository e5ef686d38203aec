"""Fused operators with pure-PyTorch references (placeholder; the ops owner extends it)."""
from trackers.ops.corr4d import corr4d

__all__ = ["corr4d"]
