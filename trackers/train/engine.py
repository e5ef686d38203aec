"""The training engine every recipe shares.

A recipe (:class:`Recipe`) says *what* to train: the tracker to build, the datasets, the loss of a batch and,
optionally, parameter groups and validation. :func:`train` does the rest, the same way for every recipe:

* **optimiser and schedule**: AdamW, linear warm-up to the peak learning rate, then cosine decay
  (:func:`lr_factor`); global gradient-norm clipping; gradient accumulation over micro-steps;
* **mixed precision**: bfloat16 autocast on GPUs that support it (``amp="auto"``), off on CPU unless asked for;
* **data**: a deterministic, sharded sample stream (:class:`ShardedSampleStream`): an endless sequence of seeded
  permutations of the dataset cut into global batches, each process taking its own slice, so ``N`` processes with
  batch ``b`` see exactly the samples one process with batch ``N*b`` sees;
* **distribution**: launched by ``torchrun`` (single or multi-node), the engine reads ``RANK``, ``WORLD_SIZE`` and
  ``LOCAL_RANK``, joins the process group (NCCL on GPUs, gloo on CPU) and wraps the network in
  ``DistributedDataParallel``; only rank 0 writes files;
* **outputs** in ``output_dir``: the resolved ``config.yaml``, ``metrics.csv`` (one row per logged value:
  ``step, split, name, value, time``), TensorBoard events when ``tensorboard`` is installed, and
  ``checkpoint-<step>/`` folders holding the tracker exactly as :meth:`Tracker.save_pretrained` writes it (so
  ``PointTracker.from_pretrained(folder)`` loads it) plus ``training_state.pt``: optimiser, scheduler, gradient
  scaler, the RNG states of every process (python, numpy, torch, CUDA) and the sample-stream position;
* **exact resume** (``resume="latest"`` or a checkpoint folder): the continued run gives bit-identical parameters
  to an uninterrupted one. A first SIGINT (Ctrl-C) or SIGTERM (a scheduler's pre-emption notice) finishes the current
  step, writes a checkpoint and stops; all processes stop at the same step.

Randomness a recipe needs per sample (crops, trims) should come from :meth:`StepContext.generator`, which depends only
on the seed, the step and the sample index: the result is then the same for any number of processes and across
resumes.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import hashlib
import logging
import math
import os
import random
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Type, Union

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from trackers.train.config import TrainConfig, config_to_yaml_dict, save_yaml

__all__ = [
    "Recipe",
    "StepContext",
    "DistInfo",
    "ShardedSampleStream",
    "TrainResult",
    "train",
    "lr_factor",
    "latest_checkpoint",
    "setup_distributed",
    "TRAINING_STATE_NAME",
]

log = logging.getLogger("trackers.train")

TRAINING_STATE_NAME = "training_state.pt"
_CHECKPOINT_PREFIX = "checkpoint-"


# ================================================================================================ recipe interface
@dataclass
class StepContext:
    """What a recipe's loss / validation call knows about the current step.

    Attributes:
        step: optimiser step being computed (0-based).
        micro_step: micro-step within the step (gradient accumulation).
        indices: ``(batch,)`` dataset indices of the batch's samples.
        seed: the run's seed.
        device: where the batch and the network are.
        rank: process rank.
        world_size: number of processes.
        split: ``"train"`` or ``"val"``.
    """

    step: int
    micro_step: int
    indices: Tensor
    seed: int
    device: torch.device
    rank: int = 0
    world_size: int = 1
    split: str = "train"

    def generator(self, *keys: int, device: Union[str, torch.device] = "cpu") -> torch.Generator:
        """A torch generator seeded from (seed, split, step, *keys): same draws on any process count and on resume.

        Pass a sample's dataset index as a key for per-sample randomness.
        """
        text = ":".join(str(v) for v in (self.seed, self.split, self.step, *keys))
        seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)
        return torch.Generator(device=device).manual_seed(seed)


class Recipe:
    """What a training recipe provides; the engine (:func:`train`) does everything else.

    Subclasses set :attr:`name` (the ``trackers-train`` subcommand), :attr:`config_class` (a :class:`TrainConfig`
    subclass whose defaults are the paper's settings) and implement :meth:`build_tracker`, :meth:`build_datasets`
    and :meth:`loss`. The others have working defaults.
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    config_class: ClassVar[Type[TrainConfig]] = TrainConfig

    def __init__(self, config: TrainConfig):
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    # ---------------------------------------------------------------------------------------------- required
    def build_tracker(self) -> Any:
        """The tracker to train (a :class:`trackers.base.Tracker`; its ``.model`` is the trained network)."""
        raise NotImplementedError

    def build_datasets(self) -> Tuple[Any, Optional[Any]]:
        """``(train, val)`` map-style datasets (``len`` and integer indexing); ``val`` may be ``None``.

        Called after :meth:`build_tracker` (datasets may depend on the model, e.g. its input resolution). Items must
        be deterministic functions of their index (the engine handles order and sharding).
        """
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: Any, ctx: StepContext) -> Tuple[Tensor, Dict[str, float]]:
        """``(loss, metrics)`` of one batch. Call the network as ``model(...)`` (it may be wrapped for DDP).

        The loss should be a mean over the batch's samples, so that sharding a batch over processes (whose
        gradients DDP averages) gives the gradient of the whole batch.
        """
        raise NotImplementedError

    # ---------------------------------------------------------------------------------------------- optional
    def trained_module(self, tracker: Any) -> nn.Module:
        """The module the optimiser trains and DDP wraps (default: ``tracker.model``)."""
        return tracker.model

    def param_groups(self, model: nn.Module) -> Optional[List[Dict[str, Any]]]:
        """AdamW parameter groups (default ``None``: every parameter that requires grad, one group)."""
        return None

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier of every group at the 0-based optimiser ``step`` (default: linear warm-up then
        cosine, :func:`lr_factor`). Recipes with another schedule (e.g. a step drop) override it; it must be a pure
        function of ``step`` so that resuming reproduces it."""
        cfg = self.config
        return lr_factor(step, cfg.warmup_steps, cfg.max_steps, cfg.min_lr_ratio)

    def collate(self, items: Sequence[Any]) -> Any:
        """Batch a list of dataset items (default: ``torch.utils.data.default_collate``)."""
        from torch.utils.data import default_collate

        return default_collate(list(items))

    def validate(self, model: nn.Module, batch: Any, ctx: StepContext) -> Dict[str, float]:
        """Metrics of one validation batch (run without gradients); default: the training loss and its metrics."""
        loss, metrics = self.loss(model, batch, ctx)
        return {"loss": float(loss), **{k: float(v) for k, v in metrics.items()}}

    def save(self, tracker: Any, directory: Path) -> None:
        """Write the tracker into a checkpoint folder (default: ``tracker.save_pretrained(directory)``)."""
        tracker.save_pretrained(directory)

    def load(self, tracker: Any, directory: Path) -> None:
        """Restore the trained weights from a checkpoint folder written by :meth:`save`."""
        from safetensors.torch import load_file

        weights = directory / "model.safetensors"
        if not weights.is_file():
            raise FileNotFoundError(f"{directory} has no model.safetensors; is it a checkpoint folder?")
        module = self.trained_module(tracker)
        state = load_file(str(weights), device=str(next(module.parameters()).device))
        own = module.state_dict()
        # the file is fp32; cast back to whatever dtype the module trains in
        module.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in state.items()}, strict=True)


# ================================================================================================ schedule
def lr_factor(step: int, warmup_steps: int, max_steps: int, min_ratio: float = 0.0) -> float:
    """Learning-rate multiplier: linear warm-up ``(step+1)/warmup`` then cosine from 1 to ``min_ratio``.

    ``step`` is the 0-based optimiser step about to be taken; the cosine reaches ``min_ratio`` at the last step.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    span = max(1, max_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


# ================================================================================================ distribution
@dataclass
class DistInfo:
    """Process placement read from the variables ``torchrun`` sets (a single process without them)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_int(name: str, default: int) -> int:
    """An integer environment variable (as torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), or ``default``."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {raw!r}") from None


def setup_distributed(device: str = "auto") -> DistInfo:
    """Pick the device and, under ``torchrun`` (``WORLD_SIZE`` > 1), join the process group.

    NCCL is used when training on GPUs, gloo on CPU; the rendezvous address comes from torchrun's environment.
    """
    world = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    local = env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world:
        raise ValueError(f"RANK={rank} is outside WORLD_SIZE={world}")
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise ValueError("device='cuda' but no CUDA device is available")
        torch.cuda.set_device(local % torch.cuda.device_count())
        dev = torch.device("cuda", torch.cuda.current_device())
    else:
        dev = torch.device("cpu")
    owns = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=dev, owns_group=owns)


def _all_gather(obj: Any, info: DistInfo) -> List[Any]:
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def _barrier(info: DistInfo) -> None:
    if info.distributed:
        dist.barrier()


# ================================================================================================ data order
class ShardedSampleStream:
    """An endless, seeded stream of dataset indices, cut into global batches and sharded over processes.

    Position ``p`` of the stream is element ``p % L`` of permutation ``p // L`` (one seeded permutation per pass
    over the ``L`` samples). Step ``s``, micro-step ``m`` of rank ``r`` takes positions
    ``s*G + m*b*W + r*b + [0, b)`` with ``G = b*W*accum``; so the samples of a step do not depend on how they are
    split over processes and micro-steps, and any step's batch can be recomputed (exact resume).
    """

    def __init__(self, length: int, batch_size: int, world_size: int, rank: int, grad_accum: int, seed: int):
        if length < 1:
            raise ValueError(f"the training dataset is empty (length {length})")
        self.length, self.batch_size, self.world_size, self.rank = length, batch_size, world_size, rank
        self.grad_accum, self.seed = grad_accum, seed
        self._perm_epoch = -1
        self._perm: Optional[Tensor] = None

    @property
    def global_batch(self) -> int:
        return self.batch_size * self.world_size * self.grad_accum

    def _permutation(self, epoch: int) -> Tensor:
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.length, generator=g), epoch
        return self._perm

    def indices(self, step: int, micro_step: int) -> List[int]:
        """Dataset indices of this rank's micro-batch."""
        start = step * self.global_batch + micro_step * self.batch_size * self.world_size + self.rank * self.batch_size
        out = []
        for p in range(start, start + self.batch_size):
            out.append(int(self._permutation(p // self.length)[p % self.length]))
        return out

    def state(self, step: int) -> Dict[str, int]:
        """Where the stream stands before ``step`` (saved in checkpoints; the position follows from the step)."""
        return {"seed": self.seed, "position": step * self.global_batch, "epoch": (step * self.global_batch) // self.length}


class _IndexedDataset:
    """``(index, item)`` pairs so a batch knows its samples' dataset indices (picklable for loader workers)."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Tuple[int, Any]:
        return i, self.dataset[i]


class _Collate:
    def __init__(self, recipe: Recipe):
        self.recipe = recipe

    def __call__(self, pairs: Sequence[Tuple[int, Any]]) -> Tuple[Tensor, Any]:
        return torch.tensor([i for i, _ in pairs], dtype=torch.long), self.recipe.collate([x for _, x in pairs])


class _BatchPlan:
    """Index lists of the remaining micro-batches of this rank, in order (a ``batch_sampler`` for DataLoader)."""

    def __init__(self, stream: ShardedSampleStream, start_step: int, max_steps: int):
        self.stream, self.start_step, self.max_steps = stream, start_step, max_steps

    def __len__(self) -> int:
        return (self.max_steps - self.start_step) * self.stream.grad_accum

    def __iter__(self) -> Iterator[List[int]]:
        for step in range(self.start_step, self.max_steps):
            for m in range(self.stream.grad_accum):
                yield self.stream.indices(step, m)


def _seed_worker(worker_id: int) -> None:
    # loader workers: numpy / python draws follow the torch seed DataLoader derives from its seeded generator
    s = torch.initial_seed() % (2 ** 32)
    np.random.seed(s)
    random.seed(s)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


# ================================================================================================ RNG state
def _rng_state() -> Dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states as tensors and primitives only."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    py = random.getstate()
    state: Dict[str, Any] = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def _set_rng_state(state: Mapping[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


# ================================================================================================ checkpoints
def latest_checkpoint(run_dir: Union[str, Path]) -> Optional[Path]:
    """The ``checkpoint-<step>`` folder of ``run_dir`` with the highest step (complete ones only), or ``None``."""
    run_dir = Path(run_dir)
    best: Tuple[int, Optional[Path]] = (-1, None)
    if not run_dir.is_dir():
        return None
    for p in run_dir.iterdir():
        if p.is_dir() and p.name.startswith(_CHECKPOINT_PREFIX) and (p / TRAINING_STATE_NAME).is_file():
            tail = p.name[len(_CHECKPOINT_PREFIX):]
            if tail.isdigit() and int(tail) > best[0]:
                best = (int(tail), p)
    return best[1]


def _resolve_resume(resume: Optional[str], run_dir: Path) -> Optional[Path]:
    if resume is None or resume == "":
        return None
    if resume in ("latest", "auto"):
        found = latest_checkpoint(run_dir)
        if found is None and resume == "latest":
            raise FileNotFoundError(f"--resume latest: no checkpoint-<step> folder with {TRAINING_STATE_NAME} "
                                    f"in {run_dir}")
        return found
    path = Path(resume)
    if path.is_dir() and not (path / TRAINING_STATE_NAME).is_file():
        found = latest_checkpoint(path)
        if found is not None:
            return found
    if not (path / TRAINING_STATE_NAME).is_file():
        raise FileNotFoundError(f"--resume {resume}: not a checkpoint folder (no {TRAINING_STATE_NAME}) "
                                f"and not a run folder with checkpoints")
    return path


# ================================================================================================ logging
class _MetricLog:
    """``metrics.csv`` (long format) and optional TensorBoard events; a no-op on ranks other than 0."""

    FIELDS = ("step", "split", "name", "value", "time")

    def __init__(self, run_dir: Path, enabled: bool, resume_step: Optional[int]):
        self.enabled = enabled
        self.path = run_dir / "metrics.csv"
        self.tb = None
        if not enabled:
            return
        if resume_step is not None and self.path.is_file():
            # drop rows an interrupted run logged after the checkpoint we continue from
            with open(self.path, newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= resume_step]
            with open(self.path, "w", newline="") as fh:
                w = csv.DictWriter(fh, self.FIELDS)
                w.writeheader()
                w.writerows(rows)
        elif not self.path.is_file() or resume_step is None:
            with open(self.path, "w", newline="") as fh:
                csv.writer(fh).writerow(self.FIELDS)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except Exception:  # tensorboard is optional (the `train` extra installs it)
            SummaryWriter = None
        if SummaryWriter is not None:
            self.tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, step: int, split: str, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        now = time.time()
        with open(self.path, "a", newline="") as fh:
            w = csv.writer(fh)
            for k, v in metrics.items():
                w.writerow([step, split, k, f"{float(v):.8g}", f"{now:.3f}"])
        if self.tb is not None:
            for k, v in metrics.items():
                self.tb.add_scalar(f"{split}/{k}", float(v), step)

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _mean_metrics(parts: Sequence[Tuple[Dict[str, float], int]]) -> Dict[str, float]:
    """Weighted mean of metric dicts ``[(metrics, weight)]`` key by key."""
    sums: Dict[str, float] = {}
    weights: Dict[str, float] = {}
    for metrics, w in parts:
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + float(v) * w
            weights[k] = weights.get(k, 0.0) + w
    return {k: sums[k] / weights[k] for k in sums if weights[k] > 0}


# ================================================================================================ the loop
@dataclass
class TrainResult:
    """What :func:`train` returns.

    Attributes:
        run_dir: the run folder.
        step: optimiser steps completed.
        checkpoint: the last checkpoint written (``None`` if none).
        interrupted: the run stopped early on SIGINT/SIGTERM (a checkpoint of the reached step was written).
        train_metrics: the last logged training metrics.
        val_metrics: the last validation metrics (empty without validation).
    """

    run_dir: Path
    step: int
    checkpoint: Optional[Path]
    interrupted: bool = False
    train_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
    val_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)


class _StopFlag:
    """First SIGINT / SIGTERM: finish the current step, save and stop; a second one interrupts at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._previous: Dict[int, Any] = {}

    def __enter__(self) -> "_StopFlag":
        for sig in self.SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s: finishing the current step, then saving a checkpoint (send it again to abort)",
                    signal.Signals(signum).name)

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _autocast_dtype(amp: str, device: torch.device) -> Optional[torch.dtype]:
    if amp == "off":
        return None
    if amp == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    if amp == "fp16" and device.type != "cuda":
        raise ValueError("amp='fp16' needs a CUDA device; use amp='bf16' on CPU")
    return torch.bfloat16 if amp == "bf16" else torch.float16


def train(recipe: Recipe) -> TrainResult:
    """Run (or resume) the recipe's training as configured by ``recipe.config``; see the module docstring."""
    cfg = recipe.config
    info = setup_distributed(cfg.device)
    try:
        result = _train(recipe, cfg, info)
    except BaseException:
        if info.owns_group and dist.is_initialized():
            dist.destroy_process_group()  # no barrier: the other ranks may never reach one
        raise
    if info.owns_group and dist.is_initialized():
        # every rank finishes before any tears down: a gloo rank whose peer closed the connections while it was still
        # shutting down has aborted at exit ("terminate called without an active exception")
        dist.barrier()
        dist.destroy_process_group()
    return result


def _train(recipe: Recipe, cfg: TrainConfig, info: DistInfo) -> TrainResult:
    run_dir = Path(cfg.output_dir)
    device = info.device
    resume_dir = _resolve_resume(cfg.resume, run_dir)

    # the same seed everywhere: every rank builds identical initial weights
    _seed_everything(cfg.seed)
    tracker = recipe.build_tracker()
    module = recipe.trained_module(tracker)
    module.to(device)
    module.train()
    train_set, val_set = recipe.build_datasets()

    groups = recipe.param_groups(module)
    params = groups if groups is not None else [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"recipe {recipe.name!r} left no parameter to train")
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps,
                                  weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: recipe.lr_factor(s))
    amp_dtype = _autocast_dtype(cfg.amp, device)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16)

    # per-rank random streams after the (shared) initialisation
    _seed_everything(cfg.seed + 7919 * (info.rank + 1))
    step = 0
    if resume_dir is not None:
        state = torch.load(resume_dir / TRAINING_STATE_NAME, map_location="cpu", weights_only=True)
        recipe.load(tracker, resume_dir)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "scaler" in state and state["scaler"]:
            scaler.load_state_dict(state["scaler"])
        step = int(state["step"])
        rngs = state["rng"]
        if len(rngs) == info.world_size:
            _set_rng_state(rngs[info.rank])
        else:
            log.warning("checkpoint was written by %d processes, this run has %d: random streams are re-seeded",
                        len(rngs), info.world_size)
            _seed_everything(cfg.seed + 7919 * (info.rank + 1) + 104729 * step)
        if info.is_main:
            log.info("resumed from %s at step %d", resume_dir, step)

    model: nn.Module = module
    if info.distributed:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)

    stream = ShardedSampleStream(len(train_set), cfg.batch_size, info.world_size, info.rank, cfg.grad_accum, cfg.seed)
    loader = torch.utils.data.DataLoader(
        _IndexedDataset(train_set), batch_sampler=_BatchPlan(stream, step, cfg.max_steps),
        num_workers=cfg.num_workers, collate_fn=_Collate(recipe), worker_init_fn=_seed_worker,
        generator=torch.Generator().manual_seed(cfg.seed * 31 + info.rank + 1000 * step),
        persistent_workers=False)

    if info.is_main:
        if resume_dir is None and latest_checkpoint(run_dir) is not None:
            log.warning("%s already holds checkpoints; starting a new run over them (pass --resume to continue)",
                        run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_yaml({"recipe": recipe.name, **config_to_yaml_dict(cfg)}, run_dir / "config.yaml")
    metrics_log = _MetricLog(run_dir, info.is_main, step if resume_dir is not None else None)
    _barrier(info)

    bar = None
    if info.is_main and cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.max_steps, initial=step, desc=recipe.name or "train", dynamic_ncols=True)

    last_ckpt: Optional[Path] = None
    last_train: Dict[str, float] = {}
    last_val: Dict[str, float] = {}
    window: List[Tuple[Dict[str, float], int]] = []
    window_start = time.perf_counter()
    window_steps = 0
    interrupted = False
    batches = iter(loader)
    params_flat = [p for g in optimizer.param_groups for p in g["params"]]

    with _StopFlag() as stop:
        while step < cfg.max_steps:
            optimizer.zero_grad(set_to_none=True)
            step_metrics: List[Tuple[Dict[str, float], int]] = []
            for micro in range(cfg.grad_accum):
                indices, batch = next(batches)
                batch = _to_device(batch, device)
                ctx = StepContext(step=step, micro_step=micro, indices=indices, seed=cfg.seed, device=device,
                                  rank=info.rank, world_size=info.world_size)
                sync = micro == cfg.grad_accum - 1 or not info.distributed
                with (contextlib.nullcontext() if sync else model.no_sync()):
                    with torch.autocast(device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
                        loss, metrics = recipe.loss(model, batch, ctx)
                    if not torch.isfinite(loss.detach()):
                        raise FloatingPointError(f"non-finite loss {float(loss)} at step {step} "
                                                 f"(samples {indices.tolist()}); lower --lr or check the data")
                    scaler.scale(loss / cfg.grad_accum).backward()
                step_metrics.append(({"loss": float(loss.detach()),
                                      **{k: float(v) for k, v in metrics.items()}}, 1))
            scaler.unscale_(optimizer)
            if cfg.grad_clip > 0:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(params_flat, cfg.grad_clip))
            else:
                norms = [p.grad.detach().norm() for p in params_flat if p.grad is not None]
                grad_norm = float(torch.stack(norms).norm()) if norms else 0.0
            lr_now = optimizer.param_groups[0]["lr"]
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1

            merged = _mean_metrics(step_metrics)
            merged.update(grad_norm=grad_norm, lr=lr_now)
            window.append((merged, 1))
            window_steps += 1
            if bar is not None:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                bar.set_postfix(loss=f"{merged['loss']:.4g}",
                                samples_s=f"{window_steps * stream.global_batch / elapsed:.3g}")
                bar.update(1)
            if step % cfg.log_every == 0 or step == cfg.max_steps:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                local = _mean_metrics(window)
                gathered = _all_gather(local, info)
                last_train = _mean_metrics([(g, 1) for g in gathered])
                last_train["steps_per_s"] = window_steps / elapsed
                last_train["samples_per_s"] = window_steps * stream.global_batch / elapsed
                metrics_log.write(step, "train", last_train)
                window, window_steps, window_start = [], 0, time.perf_counter()

            stop_now = stop.requested
            if info.distributed:
                # every rank must stop at the same step (a signal may reach them at different moments)
                flag = torch.tensor([int(stop_now)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                stop_now = bool(flag.item())
            final = step == cfg.max_steps or stop_now
            if val_set is not None and ((cfg.val_every and step % cfg.val_every == 0) or step == cfg.max_steps):
                last_val = _validate(recipe, module, val_set, cfg, info, step)
                metrics_log.write(step, "val", last_val)
                if bar is not None:
                    bar.write(f"step {step}: " + ", ".join(f"val {k} {v:.4g}" for k, v in last_val.items()))
            if final or (cfg.save_every and step % cfg.save_every == 0):
                last_ckpt = _save_checkpoint(recipe, tracker, optimizer, scheduler, scaler, stream, cfg, info,
                                             run_dir, step)
            if stop_now and step < cfg.max_steps:
                interrupted = True
                break

    if bar is not None:
        bar.close()
    metrics_log.close()
    _barrier(info)
    return TrainResult(run_dir=run_dir, step=step, checkpoint=last_ckpt, interrupted=interrupted,
                       train_metrics=last_train, val_metrics=last_val)


@torch.no_grad()
def _validate(recipe: Recipe, module: nn.Module, dataset: Any, cfg: TrainConfig, info: DistInfo,
              step: int) -> Dict[str, float]:
    """Metrics over the whole validation set, sharded over ranks, averaged per sample."""
    module.eval()
    parts: List[Tuple[Dict[str, float], int]] = []
    amp_dtype = _autocast_dtype(cfg.amp, info.device)
    mine = list(range(info.rank, len(dataset), info.world_size))
    collate = _Collate(recipe)
    for a in range(0, len(mine), cfg.batch_size):
        idx = mine[a:a + cfg.batch_size]
        indices, batch = collate([(i, dataset[i]) for i in idx])
        ctx = StepContext(step=step, micro_step=0, indices=indices, seed=cfg.seed, device=info.device,
                          rank=info.rank, world_size=info.world_size, split="val")
        with torch.autocast(info.device.type, dtype=amp_dtype or torch.bfloat16, enabled=amp_dtype is not None):
            metrics = recipe.validate(module, _to_device(batch, info.device), ctx)
        parts.append(({k: float(v) for k, v in metrics.items()}, len(idx)))
    module.train()
    gathered = _all_gather(parts, info)
    return _mean_metrics([p for rank_parts in gathered for p in rank_parts])


def _save_checkpoint(recipe: Recipe, tracker: Any, optimizer, scheduler, scaler, stream: ShardedSampleStream,
                     cfg: TrainConfig, info: DistInfo, run_dir: Path, step: int) -> Path:
    """``checkpoint-<step>/``: the tracker (``save_pretrained`` format) and ``training_state.pt``; rank 0 writes."""
    rngs = _all_gather(_rng_state(), info)
    final = run_dir / f"{_CHECKPOINT_PREFIX}{step}"
    if info.is_main:
        tmp = run_dir / f".{_CHECKPOINT_PREFIX}{step}.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        recipe.save(tracker, tmp)
        state = {
            "step": step,
            "recipe": recipe.name,
            "world_size": info.world_size,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler.is_enabled() else {},
            "rng": rngs,
            "sampler": stream.state(step),
        }
        torch.save(state, tmp / TRAINING_STATE_NAME)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        if cfg.keep_checkpoints:
            done = sorted((int(p.name[len(_CHECKPOINT_PREFIX):]), p) for p in run_dir.iterdir()
                          if p.is_dir() and p.name.startswith(_CHECKPOINT_PREFIX)
                          and p.name[len(_CHECKPOINT_PREFIX):].isdigit())
            for _, old in done[:-cfg.keep_checkpoints]:
                shutil.rmtree(old, ignore_errors=True)
    _barrier(info)
    return final
