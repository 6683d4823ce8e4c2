"""Suite-wide settings: one torch thread per test process (small convolutions on a shared 2-core
machine are far slower with two competing threads), and the `tf` marker's skip when TensorFlow is
missing."""

import importlib.util

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("tensorflow") is not None:
        return
    skip = pytest.mark.skip(reason="needs the tf extra (scripts/setup tf)")
    for item in items:
        if "tf" in item.keywords:
            item.add_marker(skip)


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
TINY_SPLITS = {"train": [0, 16], "val": [16, 20], "test": [20, 24]}


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory):
    """24 tiny synthetic scenes (3 views, 24×32) in the CLEVR3D layout."""
    from objdisc.data.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("raw") / "synth"
    generate(SynthConfig(scenes=24, views=3, height=24, width=32, seed=3), out, workers=1, progress=False)
    return out


@pytest.fixture(scope="session")
def synth_shards(synth_raw, tmp_path_factory):
    """The tiny synthetic scenes converted to WebDataset shards and indexed: (shards, index path)."""
    from objdisc.data.convert import convert
    from objdisc.data.index import build_index

    shards = tmp_path_factory.mktemp("shards") / "synth"
    convert("clevr3d", synth_raw, shards, options={"splits": TINY_SPLITS}, shard_scenes=6, progress=False)
    index_path = shards.parent / "synth.json"
    build_index(shards, progress=False, out=index_path)
    return shards, index_path


def tiny_params(tmp_path, **overrides):
    """The repo's params.yaml shrunk to test size, written into ``tmp_path``; returns its path."""
    import yaml

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["synth"].update(scenes=24, height=24, width=32, workers=1)
    raw["sprites"].update(scenes=40)
    raw["datasets"]["synth"]["options"]["splits"] = TINY_SPLITS
    raw["datasets"]["synth"]["image"]["size"] = 16
    raw["storage"].update(shard_scenes=6, workers=1)
    raw["models"]["slot_attention"].update(hidden=8, slot_dim=8, mlp_hidden=16, decoder_init=4)
    raw["datasets"]["synth"]["num_slots"] = 4
    for block in raw["models"].values():
        block.pop("train", None)  # per-model train overrides would override the tiny train block
    raw["train"].update(steps=6, batch_size=4, checkpoint_every=2, log_every=2, val_every=3, val_batches=1, workers=0, warmup_steps=2)
    raw["evaluate"].update(batch_size=4, pictures=2)
    raw["render"].update(scene_ids=[0], num_frames=4)
    for dotted, value in overrides.items():
        node = raw
        *parents, last = dotted.split("__")
        for p in parents:
            node = node[p]
        node[last] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
