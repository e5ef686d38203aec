"""The training engine with a toy recipe: schedule, config layers, logs, checkpoints, exact resume, torchrun/DDP."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import pytest
import torch
from torch import nn

from trackers.train.config import TrainConfig, add_config_arguments, config_from_args, resolve_config
from trackers.train.engine import (
    TRAINING_STATE_NAME,
    Recipe,
    ShardedSampleStream,
    latest_checkpoint,
    lr_factor,
    train,
)

REPO = Path(__file__).resolve().parents[1]

# The toy recipe lives in a source string so that torchrun worker processes can run exactly the same code.
TOY_SOURCE = '''
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from trackers.train.config import TrainConfig
from trackers.train.engine import Recipe


@dataclass
class ToyConfig(TrainConfig):
    """Toy regression.

    Attributes:
        dim: input width.
        samples: dataset size.
        dropout: dropout rate (draws from the global torch generator).
        stop_at: send ``stop_signal`` to this process during this step (-1: never).
        stop_signal: signal number to send.
    """

    dim: int = 6
    samples: int = 40
    dropout: float = 0.0
    stop_at: int = -1
    stop_signal: int = 2


class ToyNet(nn.Module):
    def __init__(self, dim, dropout):
        super().__init__()
        self.config = {"dim": dim}
        self.fc1 = nn.Linear(dim, 16)
        self.fc2 = nn.Linear(16, 1)
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        return self.fc2(self.drop(torch.tanh(self.fc1(x)))).squeeze(-1)


class ToyTracker:
    """Stands in for a Tracker: a .model and save_pretrained() in the same file layout."""

    def __init__(self, model):
        self.model = model

    def save_pretrained(self, directory):
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps({"tracker": "Toy", "config": self.model.config}))
        save_file({k: v.detach().float().contiguous().clone() for k, v in self.model.state_dict().items()},
                  str(directory / "model.safetensors"))


class ToyData:
    def __init__(self, n, dim):
        g = torch.Generator().manual_seed(123)
        self.x = torch.randn(n, dim, generator=g)
        w = torch.randn(dim, generator=g)
        self.y = torch.sin(self.x @ w)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


class ToyRecipe(Recipe):
    name = "toy"
    config_class = ToyConfig

    def build_tracker(self):
        return ToyTracker(ToyNet(self.config.dim, self.config.dropout))

    def build_datasets(self):
        return ToyData(self.config.samples, self.config.dim), ToyData(8, self.config.dim)

    def loss(self, model, batch, ctx):
        if ctx.step == self.config.stop_at and ctx.micro_step == 0:
            import os, signal
            os.kill(os.getpid(), self.config.stop_signal)
        # per-sample noise from the step context: the same for any process count and on resume
        noise = torch.stack([torch.randn((), generator=ctx.generator(int(i))) for i in ctx.indices]) * 0.01
        err = (model(batch["x"]) - batch["y"] - noise) ** 2
        return err.mean(), {"abs_err": float(err.detach().sqrt().mean())}
'''

_ns: Dict[str, Any] = {}
exec(compile(TOY_SOURCE, "toy_recipe", "exec"), _ns)
ToyConfig, ToyRecipe = _ns["ToyConfig"], _ns["ToyRecipe"]


def _params(run_dir: Path, step: int) -> Dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / f"checkpoint-{step}" / "model.safetensors"))


def _cfg(tmp: Path, **kw) -> Any:
    base = dict(output_dir=str(tmp), max_steps=10, lr=3e-2, warmup_steps=3, batch_size=4, log_every=2,
                progress=False, seed=5)
    base.update(kw)
    return ToyConfig(**base)


# ------------------------------------------------------------------------------------------------ schedule / data
def test_lr_schedule_warmup_then_cosine():
    f = [lr_factor(s, 4, 20, 0.1) for s in range(20)]
    assert f[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a >= b for a, b in zip(f[3:], f[4:]))          # non-increasing after the warm-up
    assert f[-1] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(15 / 16 * torch.pi)).item()))
    assert lr_factor(20, 4, 20, 0.1) == pytest.approx(0.1)


def test_sample_stream_shards_match_one_big_batch():
    one = ShardedSampleStream(10, 4, 1, 0, 1, seed=3)
    two = [ShardedSampleStream(10, 2, 2, r, 1, seed=3) for r in range(2)]
    accum = ShardedSampleStream(10, 2, 1, 0, 2, seed=3)
    for step in range(6):                                      # crosses several passes over the data
        big = one.indices(step, 0)
        assert two[0].indices(step, 0) + two[1].indices(step, 0) == big
        assert accum.indices(step, 0) + accum.indices(step, 1) == big
    first_pass = [i for s in range(5) for i in ShardedSampleStream(10, 2, 1, 0, 1, 3).indices(s, 0)]
    assert sorted(first_pass) == list(range(10))               # every sample once per pass


# ------------------------------------------------------------------------------------------------ config layers
def test_yaml_and_cli_precedence(tmp_path):
    import argparse

    import yaml

    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"lr": 1e-3, "max_steps": 77, "dim": 3,
                                                       "betas": [0.8, 0.9]}))
    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ToyConfig)
    args = parser.parse_args(["--config", str(tmp_path / "run.yaml"), "--lr", "2e-4", "--no-progress",
                              "--resume"])
    cfg = config_from_args(ToyConfig, args)
    assert cfg.lr == 2e-4                      # CLI beats YAML
    assert cfg.max_steps == 77 and cfg.dim == 3  # YAML beats defaults
    assert cfg.betas == (0.8, 0.9)
    assert cfg.progress is False and cfg.resume == "latest"
    assert cfg.weight_decay == ToyConfig().weight_decay  # untouched default
    with pytest.raises(ValueError, match="unknown ToyConfig fields: nope"):
        resolve_config(ToyConfig, {"nope": 1})
    with pytest.raises(ValueError, match="bad value for max_steps"):
        resolve_config(ToyConfig, {"max_steps": "many"})
    with pytest.raises(ValueError, match="amp must be"):
        resolve_config(ToyConfig, {"amp": "fp8"})


def test_help_lists_subcommands(capsys):
    from trackers.train.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "trackers-train" in out and "point" in out
    with pytest.raises(SystemExit):
        main(["point", "--help"])
    out = capsys.readouterr().out
    assert "--lr" in out and "--resume" in out and "--width" in out


# ------------------------------------------------------------------------------------------------ training
def test_training_writes_config_logs_and_checkpoints(tmp_path):
    result = train(ToyRecipe(_cfg(tmp_path, max_steps=30, save_every=10, keep_checkpoints=2, val_every=10)))
    assert result.step == 30 and not result.interrupted
    saved = yaml_load(tmp_path / "config.yaml")
    assert saved["recipe"] == "toy" and saved["lr"] == 3e-2 and saved["betas"] == [0.9, 0.999]
    # the written file reproduces the run's config when passed back with --config
    import argparse

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, ToyConfig)
    args = parser.parse_args(["--config", str(tmp_path / "config.yaml")])
    assert config_from_args(ToyConfig, args, recipe="toy") == _cfg(tmp_path, max_steps=30, save_every=10,
                                                                   keep_checkpoints=2, val_every=10)
    with pytest.raises(ValueError, match="recipe 'toy', not 'point'"):
        config_from_args(ToyConfig, args, recipe="point")
    # only the newest two checkpoints are kept; the newest is the one "latest" finds
    assert sorted(p.name for p in tmp_path.glob("checkpoint-*")) == ["checkpoint-20", "checkpoint-30"]
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-30"
    state = torch.load(tmp_path / "checkpoint-30" / TRAINING_STATE_NAME, weights_only=True)
    assert state["step"] == 30 and state["sampler"]["position"] == 30 * 4
    assert json.loads((tmp_path / "checkpoint-30" / "config.json").read_text())["tracker"] == "Toy"
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    train_loss = [float(r["value"]) for r in rows if r["split"] == "train" and r["name"] == "loss"]
    assert len(train_loss) == 15 and train_loss[-1] < 0.5 * train_loss[0]  # it learns
    lrs = [float(r["value"]) for r in rows if r["name"] == "lr"]
    assert max(lrs) == pytest.approx(3e-2, rel=0.2) and lrs[-1] < 3e-3  # warm-up then cosine decay
    assert {r["name"] for r in rows if r["split"] == "val"} >= {"loss", "abs_err"}
    assert "samples_per_s" in {r["name"] for r in rows}


def yaml_load(path):
    import yaml

    return yaml.safe_load(Path(path).read_text())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_and_resume_is_bit_identical(tmp_path, sig):
    kw = dict(max_steps=10, grad_accum=2, dropout=0.3, grad_clip=0.5)
    full = train(ToyRecipe(_cfg(tmp_path / "full", **kw)))
    before = signal.getsignal(sig)
    # a signal during step 4: the step completes, checkpoint-5 is written, the run stops
    part = train(ToyRecipe(_cfg(tmp_path / "part", stop_at=4, stop_signal=int(sig), **kw)))
    assert signal.getsignal(sig) is before  # the previous handler is back
    assert part.interrupted and part.step == 5 and part.checkpoint == tmp_path / "part" / "checkpoint-5"
    resumed = train(ToyRecipe(_cfg(tmp_path / "part", resume="latest", **kw)))
    assert resumed.step == 10 and not resumed.interrupted
    a, b = _params(tmp_path / "full", 10), _params(tmp_path / "part", 10)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = torch.load(tmp_path / "full" / "checkpoint-10" / TRAINING_STATE_NAME, weights_only=True)
    sb = torch.load(tmp_path / "part" / "checkpoint-10" / TRAINING_STATE_NAME, weights_only=True)
    for pa, pb in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()):
        assert torch.equal(pa["exp_avg"], pb["exp_avg"]) and torch.equal(pa["exp_avg_sq"], pb["exp_avg_sq"])
    # the metrics of the resumed run continue the interrupted file without duplicate steps
    steps = [(r["step"], r["name"]) for r in csv.DictReader(open(tmp_path / "part" / "metrics.csv"))
             if r["split"] == "train"]
    assert len(steps) == len(set(steps))
    # resuming from an explicit checkpoint folder into a new run folder works too
    again = train(ToyRecipe(_cfg(tmp_path / "other", resume=str(tmp_path / "part" / "checkpoint-5"), **kw)))
    c = _params(tmp_path / "other", 10)
    assert again.step == 10 and all(torch.equal(a[k], c[k]) for k in a)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(ToyRecipe(_cfg(tmp_path / "empty", resume="latest")))


def test_torchrun_two_processes_match_one_process_with_double_batch(tmp_path):
    (tmp_path / "toy_recipe.py").write_text(TOY_SOURCE)
    script = tmp_path / "run_toy.py"
    script.write_text(textwrap.dedent('''
        import sys
        sys.path.insert(0, sys.argv[1])
        from toy_recipe import ToyConfig, ToyRecipe
        from trackers.train.engine import train
        out, batch = sys.argv[2], int(sys.argv[3])
        train(ToyRecipe(ToyConfig(output_dir=out, max_steps=6, batch_size=batch, lr=3e-2, warmup_steps=2,
                                  grad_clip=0.5, log_every=3, progress=False, seed=9)))
    '''))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          str(script), str(tmp_path), str(tmp_path / "ddp"), "3"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert two.returncode == 0, two.stderr[-3000:]
    one = subprocess.run([sys.executable, str(script), str(tmp_path), str(tmp_path / "single"), "6"],
                         env=env, capture_output=True, text=True, timeout=240)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = _params(tmp_path / "ddp", 6), _params(tmp_path / "single", 6)
    torch.manual_seed(9)
    init = ToyRecipe(ToyConfig()).build_tracker().model.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-6), k
    moved = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert moved < 1e-5
    # training did change the parameters (the comparison is not between two untouched models)
    assert any(not torch.allclose(a[k], init[k].float(), atol=1e-3) for k in a if k in init)
    state = torch.load(tmp_path / "ddp" / "checkpoint-6" / TRAINING_STATE_NAME, weights_only=True)
    assert state["world_size"] == 2 and len(state["rng"]) == 2


def test_accumulation_and_loader_workers_do_not_change_the_result(tmp_path):
    kw = dict(max_steps=4, grad_clip=0.5, eps=1e-3)
    big = train(ToyRecipe(_cfg(tmp_path / "big", batch_size=4, **kw)))
    acc = train(ToyRecipe(_cfg(tmp_path / "acc", batch_size=2, grad_accum=2, num_workers=2, **kw)))
    assert big.step == acc.step == 4
    a, b = _params(tmp_path / "big", 4), _params(tmp_path / "acc", 4)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-5, atol=1e-6, msg=k)
