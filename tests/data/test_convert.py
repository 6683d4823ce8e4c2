"""The converter: every format round-trips the source exactly; parallel == serial; resumable;
``skip_bad`` lists bad scenes instead of failing."""

import json

import numpy as np
import pytest
from PIL import Image

from objdisc.data import storage
from objdisc.data.convert import MANIFEST, convert, plan
from objdisc.data.sources import SourceError, get_source

from ..conftest import TINY_SPLITS


def assert_scenes_equal(a, b):
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], np.ndarray):
            assert a[k].dtype == b[k].dtype, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)
        else:
            assert a[k] == b[k], k


def test_plan_covers_each_split_once():
    jobs = plan({"train": 13, "test": 5}, 6)
    assert [(j.split, j.start, j.stop) for j in jobs] == [
        ("train", 0, 6), ("train", 6, 12), ("train", 12, 13), ("test", 0, 5)
    ]


@pytest.mark.parametrize("fmt", storage.FORMATS)
def test_round_trip_every_format(synth_raw, tmp_path, fmt):
    out = tmp_path / fmt
    result = convert("clevr3d", synth_raw, out, fmt=fmt, options={"splits": TINY_SPLITS}, shard_scenes=5, progress=False)
    assert {s: v["scenes"] for s, v in result.splits.items()} == {"train": 16, "val": 4, "test": 4}
    source = get_source("clevr3d")(synth_raw, splits=TINY_SPLITS)
    for split, count in source.splits().items():
        original = list(source.read(split, 0, count))
        stored = [s for p in storage.list_shards(out, split) for s in storage.read_shard(p)]
        assert len(stored) == len(original)
        for a, b in zip(original, stored):
            assert_scenes_equal(a, b)
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == fmt and manifest["skipped"] == []


def test_parallel_equals_serial_and_is_byte_reproducible(synth_raw, tmp_path):
    options = {"splits": TINY_SPLITS}
    convert("clevr3d", synth_raw, tmp_path / "a", options=options, shard_scenes=5, workers=1, progress=False)
    convert("clevr3d", synth_raw, tmp_path / "b", options=options, shard_scenes=5, workers=2, progress=False)
    names = sorted(p.name for p in (tmp_path / "a").glob("*.tar"))
    assert names == sorted(p.name for p in (tmp_path / "b").glob("*.tar")) and len(names) == 6
    for name in names:
        assert storage.sha256_file(tmp_path / "a" / name) == storage.sha256_file(tmp_path / "b" / name)


def test_interrupted_conversion_resumes(synth_raw, tmp_path):
    out = tmp_path / "out"
    options = {"splits": TINY_SPLITS}
    convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    first = {p.name: storage.sha256_file(p) for p in out.glob("*.tar")}
    # Simulate a kill: the manifest is not written yet, one shard is missing, a temp file remains.
    (out / MANIFEST).unlink()
    (out / "train-000001.tar").unlink()
    (out / "val-000000.tar.tmp-1234").write_bytes(b"partial")
    result = convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    assert result.resumed_shards == 0  # parts records were removed with the finished manifest...
    assert {p.name: storage.sha256_file(p) for p in out.glob("*.tar")} == first
    assert not list(out.glob("*.tmp-*"))


def test_resume_skips_finished_shards(synth_raw, tmp_path, monkeypatch):
    from objdisc.data import convert as module

    out = tmp_path / "out"
    options = {"splits": TINY_SPLITS}
    calls = []
    real = module._convert_shard

    def flaky(*args):
        job = args[3]
        calls.append(job)
        if job.split == "test":
            raise KeyboardInterrupt  # the kill arrives while the test shard is being written
        return real(*args)

    monkeypatch.setattr(module, "_convert_shard", flaky)
    with pytest.raises(KeyboardInterrupt):
        convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    assert not (out / MANIFEST).exists()  # an unfinished folder never looks complete
    monkeypatch.setattr(module, "_convert_shard", real)
    result = convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    assert result.resumed_shards == 5  # 4 train + 1 val shards were kept
    assert (out / MANIFEST).exists()


def test_bad_scene_fails_or_is_skipped(synth_raw, tmp_path):
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(synth_raw, raw)
    (raw / "images/img_2_1.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match="img_2_1.png"):
        convert("clevr3d", raw, tmp_path / "strict", options={"splits": TINY_SPLITS}, shard_scenes=5, progress=False)
    assert not (tmp_path / "strict" / MANIFEST).exists()
    result = convert(
        "clevr3d", raw, tmp_path / "lenient", options={"splits": TINY_SPLITS}, shard_scenes=5, skip_bad=True, progress=False
    )
    assert result.splits["train"]["scenes"] == 15
    assert len(result.skipped) == 1 and "img_2_1.png" in result.skipped[0]["error"]
    manifest = json.loads((tmp_path / "lenient" / MANIFEST).read_text())
    assert manifest["skipped"] == result.skipped


def test_unknown_format_and_split(synth_raw, tmp_path):
    with pytest.raises(ValueError, match="unknown storage format"):
        convert("clevr3d", synth_raw, tmp_path / "x", fmt="parquet", options={"splits": TINY_SPLITS})
    with pytest.raises(SourceError, match="unknown split"):
        convert("clevr3d", synth_raw, tmp_path / "x", options={"splits": TINY_SPLITS}, splits=["holdout"])
