"""Photometric augmentation of training crops: colour jitter, grayscale, solarize, Gaussian blur, horizontal flip.

Every function takes ``(3, H, W)`` float images in ``0..255`` (the crops of :mod:`trackers.train.data.sot_pairs`
before ImageNet normalisation) and draws its randomness from a ``numpy.random.Generator``, so an augmented pair
stays a deterministic function of its seed. The operations follow torchvision's definitions (colour jitter
factors drawn uniformly from ``[max(0, 1 - s), 1 + s]``; contrast blends with the mean grey level, saturation with
the grey image; ITU-R 601 luma) so that the strengths the tracking papers quote mean the same here.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["colour_jitter", "gaussian_blur", "grayscale", "solarize", "three_augment"]

_LUMA = (0.299, 0.587, 0.114)


def grayscale(img: torch.Tensor) -> torch.Tensor:
    """Luma replicated over the three channels."""
    y = _LUMA[0] * img[0] + _LUMA[1] * img[1] + _LUMA[2] * img[2]
    return y.unsqueeze(0).expand(3, -1, -1).clone()


def _factor(strength: float, rng: np.random.Generator) -> float:
    return float(rng.uniform(max(0.0, 1.0 - strength), 1.0 + strength))


def colour_jitter(img: torch.Tensor, rng: np.random.Generator, brightness: float = 0.0, contrast: float = 0.0,
                  saturation: float = 0.0) -> torch.Tensor:
    """Brightness, then contrast, then saturation, each with a factor drawn only when its strength is > 0."""
    out = img
    if brightness > 0:
        out = (out * _factor(brightness, rng)).clamp(0.0, 255.0)
    if contrast > 0:
        mean = grayscale(out)[0].mean()
        out = ((out - mean) * _factor(contrast, rng) + mean).clamp(0.0, 255.0)
    if saturation > 0:
        grey = grayscale(out)
        out = ((out - grey) * _factor(saturation, rng) + grey).clamp(0.0, 255.0)
    return out


def solarize(img: torch.Tensor, threshold: float = 128.0) -> torch.Tensor:
    """Invert every value at or above ``threshold``."""
    return torch.where(img >= threshold, 255.0 - img, img)


def gaussian_blur(img: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (kernel radius ``ceil(3 sigma)``, reflected borders)."""
    radius = max(1, int(math.ceil(3.0 * sigma)))
    radius = min(radius, img.shape[-1] - 1, img.shape[-2] - 1)  # reflect padding needs radius < side
    x = torch.arange(-radius, radius + 1, dtype=img.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    out = F.pad(img.unsqueeze(0), (radius, radius, radius, radius), mode="reflect")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(3, 1, 1, -1), groups=3)
    out = F.conv2d(out, k.view(1, 1, -1, 1).expand(3, 1, -1, 1), groups=3)
    return out[0]


def three_augment(images: list, rng: np.random.Generator) -> list:
    """DeiT III's "3-augment": one of grayscale, solarize or Gaussian blur (sigma in [0.1, 2]), the same choice
    and strength for every image of the list."""
    choice = int(rng.integers(3))
    if choice == 0:
        return [grayscale(im) for im in images]
    if choice == 1:
        return [solarize(im) for im in images]
    sigma = float(rng.uniform(0.1, 2.0))
    return [gaussian_blur(im, sigma) for im in images]
