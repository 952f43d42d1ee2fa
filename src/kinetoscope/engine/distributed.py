"""Process groups from ``torchrun``'s environment, sharded sampling, and gathering results."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


DEVICES = ("auto", "cpu", "cuda")


def resolve_device(device: str = "auto") -> torch.device:
    """``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``; anything else is a one-line error."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' asked for, but CUDA is not available on this machine; use --device cpu")
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    return torch.device("cuda", torch.cuda.current_device()) if use_cuda else torch.device("cpu")


def init_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by ``torchrun`` (``WORLD_SIZE > 1``): NCCL on GPUs, gloo on
    CPU. Without ``torchrun`` this is a single process."""
    use_cuda = resolve_device(device).type == "cuda"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    if use_cuda:
        torch.cuda.set_device(local)
        dev = torch.device("cuda", local)
    else:
        dev = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(rank, world, local, dev)


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


class EpochShardSampler(Sampler[int]):
    """A shuffled (or ordered) epoch, split across ranks, that can start mid-epoch.

    The order is a function of ``(seed, epoch)`` alone, so a resumed run sees the same samples in the
    same order; ``start`` skips the samples this rank already consumed. Training pads the permutation
    so every rank gets the same number of samples (DDP needs equal step counts).
    """

    def __init__(self, size: int, rank: int = 0, world_size: int = 1, shuffle: bool = True, seed: int = 0) -> None:
        self.size, self.rank, self.world, self.shuffle, self.seed = size, rank, world_size, shuffle, seed
        self.epoch, self.start = 0, 0
        self.per_rank = -(-size // world_size)

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def indices(self) -> list[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        order += order[: self.per_rank * self.world - self.size]  # pad to equal shares
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices()[self.start :])

    def __len__(self) -> int:
        return self.per_rank - self.start


def eval_shard(size: int, rank: int, world_size: int) -> list[int]:
    """Videos this rank evaluates: a strided share with no padding, so each video is counted once."""
    return list(range(rank, size, world_size))


def all_gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def agree(flags: list[bool], info: DistInfo) -> list[bool]:
    """Each flag true on any rank is true on all of them (a decision every rank must take together,
    such as saving a checkpoint, which is a collective)."""
    if not info.enabled:
        return flags
    t = torch.tensor([float(f) for f in flags], device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return [bool(v) for v in t.tolist()]


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(value: float, info: DistInfo) -> float:
    if not info.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device if info.device.type == "cuda" else "cpu")
    dist.all_reduce(t)
    return float(t.item() / info.world_size)
