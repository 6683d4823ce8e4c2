"""objdisc.pipeline: `train.cache_mb` reaches the datasets that training reads more than once, and only those."""

import shutil

from objdisc import pipeline
from objdisc.config import load_params

from .conftest import tiny_params


def test_train_and_val_sets_get_the_cache_and_evaluation_does_not(tmp_path, synth_shards, monkeypatch):
    from objdisc.train import loop

    shards, index_path = synth_shards
    params_path = tiny_params(tmp_path, train__cache_mb=3)
    shutil.copytree(shards, tmp_path / "data/shards/synth")
    (tmp_path / "data/index").mkdir(parents=True)
    shutil.copy(index_path, tmp_path / "data/index/synth.json")
    monkeypatch.chdir(tmp_path)
    seen = {}
    monkeypatch.setattr(loop, "train", lambda model, train_set, val_set, *a, **k: seen.update(train=train_set, val=val_set))
    params = load_params(params_path)
    pipeline.train(params, progress=False)
    assert seen["train"].cache_bytes == seen["val"].cache_bytes == 3 * 2**20
    assert pipeline.dataset(params, "test", train=False).cache_bytes == 0  # evaluation reads each scene once
