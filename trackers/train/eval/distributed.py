"""Rank / world size for evaluation jobs launched with ``torchrun`` (no custom launcher).

``torchrun --nproc-per-node K ...`` starts K copies of the command and sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each one's environment. :func:`distributed_session` reads
them: with ``WORLD_SIZE > 1`` it joins the process group (gloo, which runs on CPU; evaluation only exchanges a few
Python objects, never tensors on the GPU) and leaves it on exit; otherwise it is a single-process no-op.

Evaluation work is sharded by sequence index (:func:`shard`) and every rank writes one result file per sequence.
The ranks compare their listings once at the start (:func:`all_gather_object`, while they are in step); at the end
rank 0 waits for the other ranks' files rather than at a collective barrier, because shards can finish hours apart
(one rank may draw the long sequences) and a collective would hit the process group's timeout. If a rank fails,
torchrun stops the others.
"""
from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass
from typing import Any, Iterator, List

import torch
import torch.distributed as dist

from trackers.train.engine import env_int

__all__ = ["DistInfo", "dist_info", "distributed_session", "all_gather_object", "shard", "default_device"]

#: Timeout of the process group's collectives (torch's default); they only run while the ranks are in step.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=30)


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job: ``rank`` in ``[0, world_size)``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that merges results and prints."""
        return self.rank == 0


def dist_info() -> DistInfo:
    """Rank, world size and local rank: from the live process group when there is one, else from the environment
    variables torchrun sets (defaults: a single process)."""
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), env_int("LOCAL_RANK", 0))
    world = env_int("WORLD_SIZE", 1)
    rank = env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, env_int("LOCAL_RANK", 0))


@contextlib.contextmanager
def distributed_session() -> Iterator[DistInfo]:
    """Join the gloo process group when launched by torchrun with ``WORLD_SIZE > 1``; leave it on exit.

    Yields the :class:`DistInfo` of this process. A process group that already exists (the caller set one up) is
    used as is and not torn down.
    """
    info = dist_info()
    owned = False
    if info.world_size > 1 and not dist.is_initialized():
        if not dist.is_available():
            raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
        dist.init_process_group("gloo", init_method="env://", rank=info.rank, world_size=info.world_size,
                                timeout=COLLECTIVE_TIMEOUT)
        owned = True
    try:
        yield info
    finally:
        if owned and dist.is_initialized():
            dist.destroy_process_group()


def all_gather_object(obj: Any) -> List[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` in a single process); picklable objects only."""
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return [obj]
    gathered: List[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def shard(num_items: int, info: DistInfo) -> List[int]:
    """Indices this rank processes: ``rank, rank + world_size, ...`` (round robin, so long and short sequences
    that sit next to each other in a listing spread over the ranks)."""
    if num_items < 0:
        raise ValueError(f"num_items must be >= 0, got {num_items}")
    return list(range(info.rank, num_items, info.world_size))


def default_device(info: DistInfo) -> torch.device:
    """``cuda:<local_rank>`` when CUDA is available (one GPU per rank, as torchrun lays them out), else CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", info.local_rank % torch.cuda.device_count())
    return torch.device("cpu")
