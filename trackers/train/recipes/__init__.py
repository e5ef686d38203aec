"""Training recipes: one module per recipe, each a :class:`~trackers.train.engine.Recipe` subclass and its config.

:data:`RECIPES` maps a ``trackers-train`` subcommand to ``("module:Class", one-line description)``; modules are
imported only when their recipe is used, so listing the subcommands stays cheap. A new recipe is one module plus one
line here.
"""
from __future__ import annotations

import importlib
from typing import Dict, Tuple, Type

__all__ = ["RECIPES", "get_recipe", "recipe_names"]

RECIPES: Dict[str, Tuple[str, str]] = {
    "point": ("trackers.train.recipes.point:PointRecipe",
              "CoTracker3 point tracker, supervised on synthetic clips (paper section 3.3)"),
    "point-pseudo": ("trackers.train.recipes.point_pseudo:PointPseudoRecipe",
                     "CoTracker3 fine-tuning on real videos with pseudo-labels from frozen teachers (paper 3.1)"),
    "box": ("trackers.train.recipes.box:BoxRecipe",
            "DETRack box tracker: QFL + GIoU/L1, denoising groups, CE keep-rate warm-up (paper sections 3.4-3.6)"),
    "lora": ("trackers.train.recipes.lora:LoRARecipe",
             "LoRAT box tracker: LoRA fine-tuning of a frozen ViT, IoU-aware BCE + GIoU (paper section 4)"),
}


def recipe_names() -> list:
    """Subcommand names, in registration order."""
    return list(RECIPES)


def get_recipe(name: str) -> Type:
    """The recipe class registered as ``name``; ValueError lists the known ones."""
    try:
        target = RECIPES[name][0]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; known recipes: {', '.join(RECIPES)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
