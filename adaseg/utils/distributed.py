"""torch.distributed helpers for ``torchrun``: init, sharding, gathering to rank 0.

``torchrun --nproc-per-node G adaseg derive ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each process; :func:`init_distributed`
reads them. Without them (a plain ``adaseg ...``) nothing is initialised and the run is a
world of one. The backend is chosen explicitly from the device: NCCL for CUDA, gloo for CPU.

Derive and eval shard the dataset's indices with :func:`shard_indices` (strided, so ranks
get similar mixes of images and sizes differ by at most one), compute per-image results,
then :func:`gather_objects` / :func:`gather_tensors` bring them to rank 0 together with
their indices, which puts them back in dataset order whatever the world size.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
import torch.distributed as dist

ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedSetupError(RuntimeError):
    """The torchrun environment is incomplete or inconsistent."""


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, ``local_rank`` on its node,
    the ``device`` it computes on and whether a process group was initialised."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    initialised: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, env: dict) -> int:
    try:
        return int(env[name])
    except (KeyError, ValueError):
        raise DistributedSetupError(f"environment variable {name}={env.get(name)!r} is not an integer") from None


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA devices, gloo otherwise."""
    return "nccl" if device.type == "cuda" else "gloo"


def init_distributed(device: str | torch.device = "cpu", *, env: dict | None = None) -> DistInfo:
    """Initialise the default process group from torchrun's variables, if present.

    Args:
        device: ``"cpu"`` or ``"cuda"`` (a CUDA run uses ``cuda:LOCAL_RANK``).
        env: the environment (default ``os.environ``).

    Returns:
        :class:`DistInfo`. With ``WORLD_SIZE`` unset or 1, no group is created.
    """
    env = dict(os.environ if env is None else env)
    device = torch.device(device)
    if "WORLD_SIZE" not in env or _env_int("WORLD_SIZE", env) == 1:
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", 0)
        return DistInfo(rank=0, world_size=1, local_rank=0, device=device, initialised=False)
    missing = [v for v in ENV_VARS if v not in env]
    if missing:
        raise DistributedSetupError(f"WORLD_SIZE is set but {', '.join(missing)} are not: launch with torchrun")
    rank, world, local = _env_int("RANK", env), _env_int("WORLD_SIZE", env), _env_int("LOCAL_RANK", env)
    if not 0 <= rank < world:
        raise DistributedSetupError(f"RANK={rank} is outside 0..{world - 1}")
    if device.type == "cuda":
        if local >= torch.cuda.device_count():
            raise DistributedSetupError(f"LOCAL_RANK={local} but only {torch.cuda.device_count()} CUDA devices are visible")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # env:// reads MASTER_ADDR/PORT; rank and world size are passed explicitly.
        os.environ.update({k: env[k] for k in ENV_VARS})
        dist.init_process_group(backend=backend_for(device), init_method="env://", rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local, device=device, initialised=True)


@contextlib.contextmanager
def distributed_session(device: str | torch.device = "cpu") -> Iterator[DistInfo]:
    """``with distributed_session(device) as info:`` -- a command's time in the process group.

    Initialises the group (:func:`init_distributed`), yields the :class:`DistInfo`, and on
    leaving always destroys the group. When the body finishes without an exception the ranks
    first meet at a barrier: a rank that tears gloo down while another still works (rank 0
    timing throughput or writing files) was seen to abort with ``std::terminate``. After an
    exception there is no barrier (the other ranks may never arrive); the error propagates.
    """
    info = init_distributed(device)
    try:
        yield info
        barrier()
    finally:
        cleanup()


def cleanup() -> None:
    """Destroy the default process group if one exists."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size) of the current process (0, 1 without a process group)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def shard_indices(n: int, rank: int | None = None, world_size: int | None = None) -> list[int]:
    """Indices of ``range(n)`` this rank processes: ``rank, rank + W, rank + 2W, ...``.

    Every index goes to exactly one rank (no padding, no duplicates), so gathered
    per-image results are counted once.
    """
    if rank is None or world_size is None:
        rank, world_size = world()
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    return list(range(rank, n, world_size))


def gather_objects(obj: Any, *, dst: int = 0) -> list[Any] | None:
    """Picklable ``obj`` of every rank, in rank order, on ``dst``; None on other ranks.

    Without a process group: ``[obj]``.
    """
    rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size if rank == dst else None
    dist.gather_object(obj, out, dst=dst)
    return out


def gather_tensors(tensor: torch.Tensor, *, dst: int = 0) -> list[torch.Tensor] | None:
    """Tensors of variable length along dim 0 (other dims and dtype equal on every rank),
    one per rank in rank order, on ``dst``; None on other ranks.

    Lengths are exchanged first; every rank pads to the longest, the padded tensors are
    all-gathered (supported by gloo and NCCL alike) and trimmed back.
    """
    rank, size = world()
    if size == 1:
        return [tensor]
    device = tensor.device
    length = torch.tensor([tensor.shape[0]], dtype=torch.long, device=device)
    lengths = [torch.zeros_like(length) for _ in range(size)]
    dist.all_gather(lengths, length)
    lengths_list = [int(x.item()) for x in lengths]
    longest = max(lengths_list)
    padded = tensor.new_zeros((longest, *tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    buffers = [torch.empty_like(padded) for _ in range(size)]
    dist.all_gather(buffers, padded.contiguous())
    if rank != dst:
        return None
    return [buf[:n] for buf, n in zip(buffers, lengths_list)]


def gather_in_order(indices: Sequence[int], results: Sequence[Any], *, dst: int = 0) -> list[Any] | None:
    """Gather ``(index, result)`` pairs of every rank and return, on ``dst``, the results
    sorted by index (dataset order); None elsewhere. Duplicate indices are an error."""
    if len(indices) != len(results):
        raise ValueError(f"{len(indices)} indices for {len(results)} results")
    gathered = gather_objects(list(zip(indices, results)), dst=dst)
    if gathered is None:
        return None
    pairs = sorted((p for part in gathered for p in part), key=lambda p: p[0])
    seen = [i for i, _ in pairs]
    if len(set(seen)) != len(seen):
        raise ValueError("an index was processed by more than one rank")
    return [r for _, r in pairs]


def barrier() -> None:
    """Wait for every rank (no-op without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
