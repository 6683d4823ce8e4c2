"""Loader: seeded epochs split evenly over ranks, exact resume, worker-independent, real 2-process DDP."""

import functools
import os
import socket
import subprocess
import sys
import textwrap

import torch

from objdisc.config import ImageConfig
from objdisc.data.index import load_index
from objdisc.data.loading import EvalSampler, SceneDataset, TrainSampler, make_loader
from objdisc.pipeline import image_transform


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def test_epochs_are_permutations_split_evenly_over_ranks():
    size, world = 10, 3
    samplers = [TrainSampler(size, seed=5, rank=r, world_size=world) for r in range(world)]
    per_rank = [take(iter(s), s.per_rank) for s in samplers]
    assert {len(p) for p in per_rank} == {4}  # ceil(10 / 3): every rank gets the same count
    first_epoch = [i for p in per_rank for i, _ in p]
    assert set(first_epoch) == set(range(size))  # nothing left out; 2 wrapped around
    seeds = [s for p in per_rank for _, s in p]
    assert len(set(seeds)) == len(seeds)  # every sample gets its own transform seed
    again = take(iter(TrainSampler(size, seed=5, rank=0, world_size=world)), 4)
    assert again == per_rank[0]
    other = take(iter(TrainSampler(size, seed=6, rank=0, world_size=world)), 4)
    assert other != per_rank[0]


def test_resume_continues_the_same_stream():
    full = take(iter(TrainSampler(7, seed=1, rank=1, world_size=2)), 20)
    resumed = take(iter(TrainSampler(7, seed=1, rank=1, world_size=2, start=9)), 11)
    assert resumed == full[9:]


def test_eval_sampler_partitions_the_split():
    parts = [list(EvalSampler(11, rank=r, world_size=3)) for r in range(3)]
    assert sorted(p for part in parts for p, _ in part) == list(range(11))
    assert [p for p, _ in EvalSampler(11, limit=4)] == [0, 1, 2, 3]


def make_dataset(synth_shards, size=16):
    shards, index_path = synth_shards
    transform = functools.partial(image_transform, cfg=ImageConfig(size=size), train=True)
    return SceneDataset(shards, load_index(index_path), "train", transform)


def test_batches_do_not_depend_on_worker_count(synth_shards):
    dataset = make_dataset(synth_shards)
    assert len(dataset) == 16
    batches = {}
    for workers in (0, 2):
        loader = iter(make_loader(dataset, 4, TrainSampler(len(dataset), seed=0), workers=workers, drop_last=True))
        batches[workers] = take(loader, 6)  # crosses an epoch boundary
    for a, b in zip(batches[0], batches[2]):
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["image"], b["image"])  # includes the seeded random view choice
        assert a["image"].shape == (4, 3, 16, 16) and a["mask"].shape == (4, 16, 16)


DDP_SCRIPT = textwrap.dedent(
    """
    import functools, json, os, sys
    import torch, torch.distributed as dist
    from objdisc.config import ImageConfig
    from objdisc.data.index import load_index
    from objdisc.data.loading import SceneDataset, TrainSampler, make_loader
    from objdisc.pipeline import image_transform
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    shards, index_path, out = sys.argv[1:4]
    ds = SceneDataset(shards, load_index(index_path), "train",
                      functools.partial(image_transform, cfg=ImageConfig(size=8), train=True))
    loader = iter(make_loader(ds, 3, TrainSampler(len(ds), 0, rank, world), workers=1, drop_last=True))
    seen = [next(loader)["index"].tolist() for _ in range(6)]  # 18 samples: more than one epoch slice
    dist.barrier()
    json.dump(seen, open(f"{out}/rank{rank}.json", "w"))
    dist.destroy_process_group()
    """
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_loader(synth_shards, tmp_path):
    import json

    shards, index_path = synth_shards
    script = tmp_path / "ddp.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc_per_node=2",
        f"--master_port={free_port()}", str(script), str(shards), str(index_path), str(tmp_path),
    ]
    subprocess.run(cmd, check=True, env=env, timeout=180, capture_output=True)
    seen = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(len(s) == 6 for s in seen)  # neither rank starved or hung
    rank0 = [i for b in seen[0] for i in b][:8]  # per-rank epoch slice = 16 / 2
    rank1 = [i for b in seen[1] for i in b][:8]
    assert sorted(rank0 + rank1) == list(range(16))  # the two ranks share the epoch exactly
