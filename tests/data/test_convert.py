"""The converter: every format round-trips the source exactly; parallel == serial; resumable;
``skip_bad`` lists bad scenes instead of failing."""

import json

import numpy as np
import pytest
from PIL import Image

from objdisc.data import storage
from objdisc.data.convert import MANIFEST, ShardJob, convert, plan, runs
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


def test_runs_are_consecutive_shards_about_workers_per_split():
    jobs = plan({"train": 40, "test": 3}, 4)  # train shards 0..9, test shard 0
    spans = lambda work: sorted((r.split, r.jobs[0].shard, r.jobs[-1].shard) for r in work)  # noqa: E731
    assert spans(runs(jobs, 1)) == [("test", 0, 0), ("train", 0, 9)]
    assert spans(runs(jobs, 2)) == [("test", 0, 0), ("train", 0, 4), ("train", 5, 9)]
    assert spans(runs(jobs, 3)) == [("test", 0, 0), ("train", 0, 3), ("train", 4, 6), ("train", 7, 9)]
    assert [r.scenes for r in runs(jobs, 2)] == [20, 20, 3]  # longest first
    # Resumed: finished shards 3 and 4 split train into blocks that no run spans.
    todo = [j for j in jobs if not (j.split == "train" and j.shard in (3, 4))]
    assert spans(runs(todo, 1)) == [("test", 0, 0), ("train", 0, 2), ("train", 5, 9)]
    for work in (runs(jobs, 2), runs(todo, 3)):
        for run in work:
            assert all(b.shard == a.shard + 1 and b.start == a.stop for a, b in zip(run.jobs, run.jobs[1:]))
    assert {j for r in runs(todo, 3) for j in r.jobs} == set(todo)
    assert ShardJob("train", 0, 0, 4) in {j for r in runs(jobs, 4) for j in r.jobs}


def test_sequential_file_is_read_once_per_run(tmp_path, monkeypatch):
    """A gzip TFRecord converts in one pass per run, not one skip-from-the-start per shard (which
    made conversion time quadratic in the file length)."""
    from objdisc.data import tfrecord
    from objdisc.data.sources.multi_object import TETROMINOES
    from tests.data.sources.fixtures_deepmind import random_scene, write_py

    rng = np.random.default_rng(0)
    write_py(tmp_path / TETROMINOES.file, TETROMINOES, [random_scene(TETROMINOES, rng) for _ in range(24)])
    walked = []
    real = tfrecord._records

    def counting(*args, **kwargs):
        for index, payload in real(*args, **kwargs):
            walked.append(index)
            yield index, payload

    monkeypatch.setattr(tfrecord, "_records", counting)
    options = {"splits": {"train": [0, 18], "val": [18, 24]}}
    result = convert("tetrominoes", tmp_path, tmp_path / "out", options=options, shard_scenes=3, progress=False)
    assert {s: v["scenes"] for s, v in result.splits.items()} == {"train": 18, "val": 6}
    # one counting pass (24) + the train run (records 0..17) + the val run (skips 0..17, reads 18..23);
    # a reader per shard would walk 3+6+...+18 + 21+24 = 108 records after counting.
    assert len(walked) == 24 + 18 + 24
    monkeypatch.setattr(tfrecord, "_records", real)
    serial = {p.name: storage.sha256_file(p) for p in (tmp_path / "out").glob("*.tar")}
    convert("tetrominoes", tmp_path, tmp_path / "par", options=options, shard_scenes=3, workers=2, progress=False)
    assert {p.name: storage.sha256_file(p) for p in (tmp_path / "par").glob("*.tar")} == serial


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
    out = tmp_path / "out"
    options = {"splits": TINY_SPLITS}
    real = storage.write_shard

    def killed_at_test(path, scenes, fmt):
        if path.name.startswith("test-"):
            raise KeyboardInterrupt  # the kill arrives while the test shard is being written
        return real(path, scenes, fmt)

    monkeypatch.setattr(storage, "write_shard", killed_at_test)
    with pytest.raises(KeyboardInterrupt):
        convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    assert not (out / MANIFEST).exists()  # an unfinished folder never looks complete
    monkeypatch.setattr(storage, "write_shard", real)
    result = convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    assert result.resumed_shards == 5  # 4 train + 1 val shards were kept
    assert (out / MANIFEST).exists()


def test_worker_failure_stops_the_pool_and_keeps_finished_shards(synth_raw, tmp_path):
    import shutil

    raw = tmp_path / "raw"
    shutil.copytree(synth_raw, raw)
    (raw / "images/img_13_0.png").write_bytes(b"not a png")  # train scene 13: the second train run
    options = {"splits": TINY_SPLITS}
    with pytest.raises(SourceError, match="img_13_0.png"):
        convert("clevr3d", raw, tmp_path / "out", options=options, shard_scenes=5, workers=2, progress=False)
    assert not (tmp_path / "out" / MANIFEST).exists()
    assert not (tmp_path / "out" / ".parts" / "train-000002.json").exists()
    assert not (tmp_path / "out" / "train-000002.tar").exists()
    shutil.copy(synth_raw / "images/img_13_0.png", raw / "images/img_13_0.png")  # fixed: resume
    convert("clevr3d", raw, tmp_path / "out", options=options, shard_scenes=5, workers=2, progress=False)
    clean = convert("clevr3d", synth_raw, tmp_path / "clean", options=options, shard_scenes=5, progress=False)
    for name in clean.splits["train"]["shards"]:
        assert storage.sha256_file(tmp_path / "out" / name) == storage.sha256_file(tmp_path / "clean" / name)


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
