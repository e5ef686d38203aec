"""``trackers-train``: one subcommand per recipe, options generated from the recipe's config dataclass.

Examples::

    trackers-train --help                                  # lists the recipes (and `eval`)
    trackers-train eval points --data synthetic:20 --model lk   # evaluation runners
    trackers-train point --help                            # every option with its default
    trackers-train point --config run.yaml --lr 2e-4       # YAML file, overridden by the command line
    trackers-train point --output-dir runs/a --resume      # continue from the newest checkpoint of runs/a
    torchrun --nproc-per-node 2 -m trackers.train.cli point --preset small   # data-parallel on one machine

Precedence: the recipe's defaults (the paper's settings) < ``--config`` YAML < command-line options.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import List, Optional

from trackers.train.config import add_config_arguments, config_from_args
from trackers.train.recipes import RECIPES, get_recipe

__all__ = ["build_parser", "main"]


def build_parser(load_recipes: Optional[List[str]] = None) -> argparse.ArgumentParser:
    """The parser with a subcommand per recipe; only recipes named in ``load_recipes`` get their options."""
    parser = argparse.ArgumentParser(
        prog="trackers-train",
        description="Train trackers. Pick a recipe; `trackers-train RECIPE --help` lists its options. "
                    "Multi-GPU / multi-node: launch the same command through torchrun.",
    )
    sub = parser.add_subparsers(dest="recipe", metavar="RECIPE", title="recipes")
    sub.required = True
    for name in RECIPES:
        summary = RECIPES[name][1]
        if load_recipes is not None and name not in load_recipes:
            sub.add_parser(name, help=summary, add_help=False)
            continue
        cls = get_recipe(name)
        p = sub.add_parser(name, help=summary, description=sys.modules[cls.__module__].__doc__ or cls.__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        add_config_arguments(p, cls.config_class)
    # evaluation and pseudo-labelling share the command but are not recipes; their options live with the runner
    sub.add_parser("eval", help="evaluate a tracker on TAP-Vid / GOT-10k / LaSOT / synthetic data, or label "
                                "videos (`trackers-train eval --help`)", add_help=False)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Entry point of ``trackers-train``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # import only the chosen recipe (each recipe may pull in heavy modules)
    chosen = next((a for a in argv if not a.startswith("-")), None)
    if chosen == "eval":
        from trackers.train.eval.runner import main_eval

        return main_eval(argv[argv.index("eval") + 1:])
    parser = build_parser([chosen] if chosen in RECIPES else [])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from trackers.train.engine import train

    cls = get_recipe(args.recipe)
    try:
        config = config_from_args(cls.config_class, args, recipe=args.recipe)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    result = train(cls(config))
    if result.checkpoint is not None:
        state = "interrupted at" if result.interrupted else "finished at"
        logging.getLogger("trackers.train").info("%s step %d; last checkpoint: %s", state, result.step,
                                                 result.checkpoint)
    return 130 if result.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
