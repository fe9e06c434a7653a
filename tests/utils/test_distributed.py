"""Distributed helpers: sharding, init from torchrun variables, gathering to rank 0 —
with 2 real gloo processes on CPU."""

from __future__ import annotations

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp

from adaseg.utils.distributed import (
    DistributedSetupError,
    backend_for,
    gather_in_order,
    gather_objects,
    gather_tensors,
    init_distributed,
    shard_indices,
)


@pytest.mark.parametrize("n, world", [(0, 2), (1, 2), (7, 2), (10, 3), (5, 8)])
def test_shards_cover_everything_once(n, world):
    shards = [shard_indices(n, r, world) for r in range(world)]
    flat = sorted(i for s in shards for i in s)
    assert flat == list(range(n))
    sizes = [len(s) for s in shards]
    assert max(sizes) - min(sizes) <= 1


def test_shard_bad_rank():
    with pytest.raises(ValueError, match="outside a world"):
        shard_indices(4, 2, 2)


def test_single_process_without_torchrun():
    info = init_distributed("cpu", env={})
    assert (info.rank, info.world_size, info.initialised, info.is_main) == (0, 1, False, True)
    assert gather_objects({"a": 1}) == [{"a": 1}]
    t = torch.arange(3)
    assert gather_tensors(t)[0] is t
    assert gather_in_order([2, 0, 1], ["c", "a", "b"]) == ["a", "b", "c"]
    assert shard_indices(5) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "env, match",
    [
        ({"WORLD_SIZE": "2"}, "RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not"),
        ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
        ({"WORLD_SIZE": "2", "RANK": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "x", "MASTER_PORT": "1"}, "RANK=2 is outside"),
    ],
)
def test_incomplete_environment(env, match):
    with pytest.raises(DistributedSetupError, match=match):
        init_distributed("cpu", env=env)


def test_backend_choice():
    assert backend_for(torch.device("cpu")) == "gloo"
    assert backend_for(torch.device("cuda", 0)) == "nccl"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out_path: str) -> None:
    from adaseg.utils import distributed as D

    env = {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    info = D.init_distributed("cpu", env=env)
    try:
        assert info.initialised and info.rank == rank and info.world_size == world
        n = 7
        mine = D.shard_indices(n)
        results = [f"image{i}" for i in mine]
        ordered = D.gather_in_order(mine, results)
        # rank r contributes r+2 rows of width 3 filled with r
        rows = torch.full((rank + 2, 3), float(rank))
        tensors = D.gather_tensors(rows)
        objects = D.gather_objects({"rank": rank, "count": len(mine)})
        D.barrier()
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump({
                    "ordered": ordered,
                    "tensor_shapes": [list(t.shape) for t in tensors],
                    "tensor_values": [t.unique().tolist() for t in tensors],
                    "objects": objects,
                }, f)
        else:
            assert ordered is None and tensors is None and objects is None
    finally:
        D.cleanup()


def test_two_gloo_processes(tmp_path):
    out = tmp_path / "out.json"
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    result = json.loads(out.read_text())
    assert result["ordered"] == [f"image{i}" for i in range(7)]
    assert result["tensor_shapes"] == [[2, 3], [3, 3]]
    assert result["tensor_values"] == [[0.0], [1.0]]
    assert result["objects"] == [{"rank": 0, "count": 4}, {"rank": 1, "count": 3}]
