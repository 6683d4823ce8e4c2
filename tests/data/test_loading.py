"""Loader: seeded epochs split evenly over ranks, exact resume, worker-independent, real 2-process DDP."""

import functools
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from objdisc.config import ImageConfig
from objdisc.data.index import load_index
from objdisc.data.loading import EvalSampler, SceneDataset, TrainSampler, make_loader
from objdisc.models.family import image_transform


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



def test_cache_hands_out_the_same_scenes_without_reading_again(synth_shards, monkeypatch):
    """With ``cache_mb`` every scene is decoded once; the batches are those of the uncached
    dataset, a caller that modifies a scene does not change the cache, and the budget holds."""
    import numpy as np

    shards, index_path = synth_shards
    transform = functools.partial(image_transform, cfg=ImageConfig(size=16), train=True)
    plain = SceneDataset(shards, load_index(index_path), "train", transform)
    cached = SceneDataset(shards, load_index(index_path), "train", transform, cache_mb=64)
    reads = []
    read = cached.read
    monkeypatch.setattr(cached, "read", lambda position: reads.append(position) or read(position))

    def batches(dataset):
        return take(iter(make_loader(dataset, 4, TrainSampler(len(dataset), seed=0), drop_last=True)), 12)

    for a, b in zip(batches(plain), batches(cached)):  # three epochs
        assert torch.equal(a["index"], b["index"])
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask"], b["mask"])
    assert sorted(reads) == list(range(len(cached)))  # each scene read once in three epochs

    scene = cached.scene(3)
    scene["image"][:] = 0
    scene["objects"].clear()
    again = cached.scene(3)
    assert again["image"].any() and again["objects"] == plain.scene(3)["objects"]
    for key, value in plain.scene(3).items():
        assert np.array_equal(value, again[key]) if isinstance(value, np.ndarray) else value == again[key]

    one = sum(v.nbytes for v in plain.scene(0).values() if isinstance(v, np.ndarray))
    small = SceneDataset(shards, load_index(index_path), "train", transform, cache_mb=2.5 * one / 2**20)
    for position in range(len(small)):
        small.scene(position)
    assert len(small._cache) == 2 and small._cached_bytes <= 2.5 * one  # the rest is read each time
    assert len(SceneDataset(shards, load_index(index_path), "train", transform)._cache) == 0


def test_cache_rejects_a_negative_budget(synth_shards):
    shards, index_path = synth_shards
    with pytest.raises(ValueError, match="cache_mb must be >= 0"):
        SceneDataset(shards, load_index(index_path), "train", lambda scene, g: {}, cache_mb=-1)


DDP_SCRIPT = textwrap.dedent(
    """
    import functools, json, os, sys
    import torch, torch.distributed as dist
    from objdisc.config import ImageConfig
    from objdisc.data.index import load_index
    from objdisc.data.loading import SceneDataset, TrainSampler, make_loader
    from objdisc.models.family import image_transform
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


# --- fault-injection items 5 and 6: shards changed after indexing -------------------------------


def flip_byte_in_member(shard, member_suffix="image_00.png", at=None):
    """Flip one byte of the first ``*.<member_suffix>`` member (in its middle unless ``at`` says
    where): the shard keeps its size. A flip inside PNG pixel data still decodes; one in the PNG
    signature (``at=1``) does not."""
    import tarfile

    with tarfile.open(shard) as tar:
        info = next(m for m in tar.getmembers() if m.name.endswith(member_suffix))
    data = bytearray(shard.read_bytes())
    data[info.offset_data + (info.size // 2 if at is None else at)] ^= 0xFF
    shard.write_bytes(bytes(data))
    return info.name


def copy_shards(synth_shards, tmp_path):
    import shutil

    shards, index_path = synth_shards
    copy = tmp_path / "shards"
    shutil.copytree(shards, copy)
    return copy, load_index(index_path)


def test_shard_changed_after_indexing_is_refused(synth_shards, tmp_path):
    """Item 5: a byte flipped inside a member of an indexed shard (same size) was trained on."""
    import pytest

    from objdisc.data.storage import StorageError

    shards, index = copy_shards(synth_shards, tmp_path)
    transform = functools.partial(image_transform, cfg=ImageConfig(size=8), train=False)
    flip_byte_in_member(shards / "train-000001.tar")
    with pytest.raises(StorageError, match=r"train-000001\.tar: sha256 differs from the index.*objdisc index"):
        SceneDataset(shards, index, "train", transform)
    (shards / "val-000000.tar").write_bytes((shards / "val-000000.tar").read_bytes()[:-512])
    with pytest.raises(StorageError, match=r"val-000000\.tar: \d+ bytes, the index says \d+"):
        SceneDataset(shards, index, "val", transform)
    SceneDataset(shards, index, "test", transform)  # the other splits' shards are fine


def test_shards_are_hashed_once_per_process(synth_shards, tmp_path, monkeypatch):
    """Item 5: the cost is at most one sha256 per shard per process; reads only stat the shard,
    and a shard whose mtime changes is hashed again before it is read."""
    import os

    from objdisc.data import storage

    shards, index = copy_shards(synth_shards, tmp_path)
    hashed = []
    real = storage.sha256_file
    monkeypatch.setattr(storage, "sha256_file", lambda path: hashed.append(os.path.basename(path)) or real(path))
    transform = functools.partial(image_transform, cfg=ImageConfig(size=8), train=False)
    first = SceneDataset(shards, index, "train", transform)
    assert sorted(hashed) == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    second = SceneDataset(shards, index, "train", transform)
    for position in range(len(second)):
        second[position]
    batches = list(make_loader(first, 4, EvalSampler(len(first)), workers=0))
    assert len(batches) == 4 and len(hashed) == 3  # nothing hashed again
    path = shards / "train-000002.tar"
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))  # touched, same bytes
    first[len(first) - 1]
    assert hashed[3:] == ["train-000002.tar"]
    flip_byte_in_member(path)
    import pytest

    with pytest.raises(storage.StorageError, match="train-000002.tar: sha256 differs"):
        first[len(first) - 1]


def test_decode_error_names_shard_and_key(synth_shards, tmp_path, monkeypatch):
    """Item 6: a decoder's own exception inside the dataset becomes a StorageError naming the shard
    and the scene's key."""
    import zlib

    import pytest

    from objdisc.data import storage

    shards, index = copy_shards(synth_shards, tmp_path)
    dataset = SceneDataset(shards, index, "train", functools.partial(image_transform, cfg=ImageConfig(size=8), train=False))

    def broken(path, offset):
        raise zlib.error("Error -3 while decompressing data: invalid stored block lengths")

    monkeypatch.setattr(storage, "read_scene", broken)
    shard, _ = dataset.locations[0]
    with pytest.raises(storage.StorageError, match=rf"{shard}: scene '{dataset.keys[0]}' at offset 0 does not decode: error: Error -3"):
        dataset.scene(0)



@pytest.mark.parametrize("verify", [True, False])
def test_shard_corrupted_under_a_worker_ends_as_one_line(synth_shards, tmp_path, capsys, verify):
    """Item 6: a shard corrupted after indexing failed inside a DataLoader worker with a 22-line
    traceback; torch's wrapped worker message now reaches the user as one line naming the shard:
    the worker's re-check of the changed shard (verify) or the decoder's error (no verify)."""
    from objdisc.errors import exit_on_error

    shards, index = copy_shards(synth_shards, tmp_path)
    transform = functools.partial(image_transform, cfg=ImageConfig(size=8), train=False)
    dataset = SceneDataset(shards, index, "train", transform, verify=verify)
    # After the start-up check, so only the worker can find it.
    flip_byte_in_member(shards / "train-000001.tar", at=None if verify else 1)
    with pytest.raises(SystemExit):
        with exit_on_error():
            for _ in make_loader(dataset, 4, EvalSampler(len(dataset)), workers=1):
                pass
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "train-000001.tar" in lines[0] and "Traceback" not in err
    assert ("objdisc index" in lines[0]) if verify else ("cannot decode PNG" in lines[0])


def test_worker_message_reduction_keeps_other_messages():
    from objdisc.errors import one_line

    wrapped = ValueError(
        "Caught StorageError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n    g()\n'
        "objdisc.data.storage.StorageError: /s/train-000001.tar: sha256 differs from the index\n"
    )
    assert one_line(wrapped) == "/s/train-000001.tar: sha256 differs from the index"
    assert one_line(ValueError("plain: message")) == "plain: message"
    assert one_line(KeyError("index has no split 'x'")) == "index has no split 'x'"
