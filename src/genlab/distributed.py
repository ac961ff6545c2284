"""Several processes, one run: DistributedDataParallel under torchrun, gloo on CPU, NCCL on CUDA.

`torchrun --nproc-per-node N -m genlab train MODEL ...` starts N copies of the same `fit`;
torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) tells each which
one it is, as in pytorch/examples' ddp-tutorial-series/multigpu_torchrun.py. What that changes:
  - batches: `--batch-size` stays the global batch. Every process shuffles with the same seed and
    takes its contiguous share of each batch (`shard`), so a run means the same at any N;
  - gradients: each phase's loss runs through its own DDP wrapper (`phase_loss_fns`), which
    averages the gradients of that phase's own parameters over the processes (the other phases'
    parameters are ignored by it, so the GANs' alternating optimizers need no unused-parameter
    search); batch-norm buffers are broadcast from rank 0 at each forward;
  - writes: rank 0 alone writes the run folder, logs and shows the progress bar (`is_main`);
  - noise: each rank draws its own (rank 0 the stream a single process would draw), so runs at
    different N differ by the noise and, with batch norm, by per-shard batch statistics;
  - faults: every collective times out after `timeout_s()`, so a lost rank ends the job instead
    of hanging it, and `lost_ranks` names who is missing.
Without torchrun (WORLD_SIZE unset or 1) nothing here runs a collective.
"""

from __future__ import annotations

import gc
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Callable

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from .errors import GenlabError

# Seconds a collective may wait for a peer. Rank 0's per-epoch evaluation (2,000 test digits by
# default) must fit in it; GENLAB_DIST_TIMEOUT overrides it for slow evaluations.
DEFAULT_TIMEOUT_S = 30
LOST_WAIT_S = 5  # after a failed collective: how long the survivors wait for each other to check in
_ALIVE_KEY = "genlab/alive/{}"


class RankLost(GenlabError):
    """A collective failed because a process of the job is gone. `speaks`: this survivor is the
    lowest-numbered one, so it alone prints the message."""

    def __init__(self, message: str, speaks: bool):
        super().__init__(message)
        self.speaks = speaks


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False  # this fit call created the process group, so it also destroys it

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_rank() -> int:
    """RANK as torchrun set it (0 in a plain process): decides who prints before a group exists."""
    return int(os.environ.get("RANK", "0"))


def timeout_s() -> float:
    return float(os.environ.get("GENLAB_DIST_TIMEOUT", DEFAULT_TIMEOUT_S))


def join(device: torch.device) -> tuple[Ranks, torch.device]:
    """Ranks from torchrun's environment, the process group (created here if none exists) and
    this rank's device: CUDA device LOCAL_RANK with NCCL, else the CPU with gloo."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Ranks(), device
    if device.type not in ("cpu", "cuda"):
        raise GenlabError(f"training in several processes needs the CPU or CUDA, not {device.type}: use --device cpu")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    owns_group = not dist.is_initialized()
    if owns_group:
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(seconds=timeout_s()))
    return Ranks(rank, world_size, local_rank, owns_group), device


def wait_for_all(ranks: Ranks) -> None:
    """Every rank waits here until all have arrived (nothing without torchrun)."""
    if ranks.distributed:
        dist.barrier()


def leave(ranks: Ranks) -> None:
    """Destroy the group this process created, once what used it is collected: gloo work that a
    DDP wrapper still holds when the interpreter exits can abort the process (SIGABRT)."""
    if ranks.owns_group and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def check_batches(n_train: int, batch_size: int, ranks: Ranks) -> None:
    """Every process needs at least one image of every batch, the epoch's last one included."""
    smallest = min(batch_size, n_train % batch_size or batch_size)
    if smallest < ranks.world_size:
        raise GenlabError(
            f"{ranks.world_size} processes need at least {ranks.world_size} images in every batch, but with batch size "
            f"{batch_size} the last batch of an epoch has {smallest} of the {n_train} training images: pick another batch size"
        )


def shard(start: int, stop: int, ranks: Ranks) -> slice:
    """This rank's contiguous share of the rows [start, stop) of one global batch."""
    n = stop - start
    return slice(start + n * ranks.rank // ranks.world_size, start + n * (ranks.rank + 1) // ranks.world_size)


def rank_seed(seed: int, rank: int, step: int) -> int:
    """The noise seed of a rank > 0 started at `step` (rank 0 keeps the run's own stream)."""
    return (seed * 1_000_003 + rank * 7_919 + step) % 2**63


def any_rank(ranks: Ranks, flag: bool, device: torch.device) -> bool:
    """True on every rank if `flag` is True on any (one collective)."""
    if not ranks.distributed:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def first_over_ranks(ranks: Ranks, value: int | None, device: torch.device) -> int | None:
    """The smallest `value` any rank holds (None where a rank has none), on every rank."""
    if not ranks.distributed:
        return value
    none = float(2**62)
    reduced = torch.tensor([none if value is None else float(value)], device=device, dtype=torch.float64)
    dist.all_reduce(reduced, op=dist.ReduceOp.MIN)
    return None if reduced.item() == none else int(reduced.item())


def sum_over_ranks(ranks: Ranks, values: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same keys, each summed over every rank (one collective over the stacked values)."""
    if not ranks.distributed or not values:
        return dict(values)
    keys = sorted(values)
    stacked = torch.stack([torch.as_tensor(values[k]).detach().double().reshape(()) for k in keys])
    dist.all_reduce(stacked)
    summed = {k: stacked[i].to(torch.as_tensor(values[k]).dtype) for i, k in enumerate(keys)}  # sorted: the same on every rank
    return {k: summed[k] for k in values}  # in the caller's order (the log's column order)


def gather(ranks: Ranks, tensor: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    """Every rank's `tensor` (same shape on all), on every rank, as CPU tensors."""
    if not ranks.distributed:
        return [tensor]
    local = tensor.to(device)
    parts = [torch.empty_like(local) for _ in range(ranks.world_size)]
    dist.all_gather(parts, local)
    return [p.cpu() for p in parts]


class _PhaseLoss(nn.Module):
    """One phase's loss as a module's forward, so that DDP can wrap it."""

    def __init__(self, model: nn.Module, phase: str, loss_fn: Callable):
        super().__init__()
        self.model, self.phase, self.loss_fn = model, phase, loss_fn

    def forward(self, x, y, cache):
        return self.loss_fn(x, y, self.phase, cache)


def phase_loss_fns(model: nn.Module, phase_params: dict[str, set[int]], loss_fn: Callable, ranks: Ranks, device: torch.device) -> Callable:
    """`loss_fn(x, y, phase, cache)` whose backward averages the gradients of that phase's
    parameters over the ranks: one DDP wrapper per phase that ignores every other parameter."""
    wrapped = {}
    for phase, own in phase_params.items():
        module = _PhaseLoss(model, phase, loss_fn)
        others = [f"model.{name}" for name, p in model.named_parameters() if id(p) not in own]
        DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(module, others)
        wrapped[phase] = DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda" else None)
    return lambda x, y, phase, cache: wrapped[phase](x, y, cache)


def is_collective_failure(error: BaseException) -> bool:
    return isinstance(error, dist.DistError) or (isinstance(error, RuntimeError) and "gloo" in str(error).lower())


def lost_ranks(ranks: Ranks, wait_s: float = LOST_WAIT_S) -> tuple[list[int], bool] | None:
    """After a collective failed: (the ranks that did not check in within `wait_s`, whether
    this rank is the lowest survivor), via the rendezvous store; None if the store is gone too."""
    try:
        store = dist.distributed_c10d._get_default_store()
        store.set(_ALIVE_KEY.format(ranks.rank), "1")
        deadline = time.monotonic() + wait_s
        while True:
            alive = [r for r in range(ranks.world_size) if store.check([_ALIVE_KEY.format(r)])]
            if len(alive) == ranks.world_size or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    except Exception:  # the store's host is gone (its node was lost): nobody can be asked
        return None
    return [r for r in range(ranks.world_size) if r not in alive], ranks.rank == min(alive)
