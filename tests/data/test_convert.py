"""The converter: every format round-trips the source exactly; parallel == serial; resumable;
``skip_bad`` lists bad scenes instead of failing."""

import json

import numpy as np
import pytest

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
    raw = tmp_path / "raw"  # the output may not lie inside the input folder
    raw.mkdir()
    write_py(raw / TETROMINOES.file, TETROMINOES, [random_scene(TETROMINOES, rng) for _ in range(24)])
    walked = []
    real = tfrecord._records

    def counting(*args, **kwargs):
        for index, payload in real(*args, **kwargs):
            walked.append(index)
            yield index, payload

    monkeypatch.setattr(tfrecord, "_records", counting)
    options = {"splits": {"train": [0, 18], "val": [18, 24]}}
    result = convert("tetrominoes", raw, tmp_path / "out", options=options, shard_scenes=3, progress=False)
    assert {s: v["scenes"] for s, v in result.splits.items()} == {"train": 18, "val": 6}
    # one counting pass (24) + the train run (records 0..17) + the val run (skips 0..17, reads 18..23);
    # a reader per shard would walk 3+6+...+18 + 21+24 = 108 records after counting.
    assert len(walked) == 24 + 18 + 24
    monkeypatch.setattr(tfrecord, "_records", real)
    serial = {p.name: storage.sha256_file(p) for p in (tmp_path / "out").glob("*.tar")}
    convert("tetrominoes", raw, tmp_path / "par", options=options, shard_scenes=3, workers=2, progress=False)
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


DEAD_PID = 99_999_999  # above any pid_max: no process has it


def test_interrupted_conversion_resumes(synth_raw, tmp_path):
    out = tmp_path / "out"
    options = {"splits": TINY_SPLITS}
    convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    first = {p.name: storage.sha256_file(p) for p in out.glob("*.tar")}
    # Simulate a kill: one shard is missing and a killed writer's temp file remains.
    (out / "train-000001.tar").unlink()
    (out / f"val-000000.tar.tmp-{DEAD_PID}").write_bytes(b"partial")
    result = convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    assert result.resumed_shards == 5 and not result.up_to_date  # only the missing shard is redone
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


# --- fault-injection items 1-4 ------------------------------------------------------------------


def test_unrelated_output_folder_is_refused_and_kept(synth_raw, tmp_path):
    """Item 1: --output pointing at an existing unrelated folder deleted it; now it is refused."""
    from objdisc.data.convert import ConvertError

    other = tmp_path / "thesis"
    other.mkdir()
    (other / "chapter1.tex").write_text("precious")
    (other / "train-000000.tar").write_bytes(b"someone else's shard")
    with pytest.raises(ConvertError, match=r"thesis: the output folder is not empty and is not an objdisc conversion"):
        convert("clevr3d", synth_raw, other, options={"splits": TINY_SPLITS}, progress=False)
    assert sorted(p.name for p in other.iterdir()) == ["chapter1.tex", "train-000000.tar"]
    assert (other / "chapter1.tex").read_text() == "precious"
    with pytest.raises(ConvertError, match="not a folder"):
        convert("clevr3d", synth_raw, other / "chapter1.tex", options={"splits": TINY_SPLITS}, progress=False)


def test_output_that_is_or_holds_the_input_is_refused(synth_raw, tmp_path):
    """Item 1: --output equal to --input deleted the raw dataset; inside it / around it too."""
    import shutil

    from objdisc.data.convert import ConvertError

    raw = tmp_path / "raw" / "synth"
    shutil.copytree(synth_raw, raw)
    before = sorted(p.relative_to(raw) for p in raw.rglob("*"))
    options = {"splits": TINY_SPLITS}
    with pytest.raises(ConvertError, match=r"is the input .* or lies inside it"):
        convert("clevr3d", raw, raw, options=options, progress=False)
    with pytest.raises(ConvertError, match=r"is the input .* or lies inside it"):
        convert("clevr3d", raw, raw / "shards", options=options, progress=False)
    with pytest.raises(ConvertError, match=r"raw: the output folder contains the input"):
        convert("clevr3d", raw, tmp_path / "raw", options=options, progress=False)
    assert sorted(p.relative_to(raw) for p in raw.rglob("*")) == before


def test_changed_settings_remove_only_what_the_converter_made(synth_raw, tmp_path):
    """Item 1: with other settings, only shards, .parts, the manifest and dead writers' temporaries
    go; other files (an index, notes) and a live writer's temporary stay."""
    import subprocess

    out = tmp_path / "out"
    convert("clevr3d", synth_raw, out, options={"splits": TINY_SPLITS}, shard_scenes=5, progress=False)
    (out / "notes.txt").write_text("mine")
    (out / "index.json").write_text("{}")
    (out / "train-000099.tar").write_bytes(b"an old shard")  # shard-named: the converter's
    (out / f"train-000001.tar.tmp-{DEAD_PID}").write_bytes(b"killed writer")
    live = subprocess.Popen(["sleep", "60"])
    try:
        (out / f"val-000000.tar.tmp-{live.pid}").write_bytes(b"live writer")
        convert("clevr3d", synth_raw, out, options={"splits": TINY_SPLITS}, shard_scenes=8, progress=False)
        names = sorted(p.name for p in out.iterdir())
    finally:
        live.kill()
        live.wait()
    assert names == sorted(
        ["convert.json", "index.json", "notes.txt", f"val-000000.tar.tmp-{live.pid}",
         "train-000000.tar", "train-000001.tar", "val-000000.tar", "test-000000.tar"]
    )
    assert json.loads((out / MANIFEST).read_text())["shard_scenes"] == 8


def test_finished_conversion_is_kept_as_is(synth_raw, tmp_path, monkeypatch):
    """Item 2: re-running a finished conversion with the same settings reconverted everything
    (resumed_shards 0); now it returns at once, counts every shard as resumed and writes nothing."""
    out = tmp_path / "out"
    options = {"splits": TINY_SPLITS}
    first = convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    stamps = {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.iterdir()}

    def no_writes(*args, **kwargs):
        raise AssertionError("a finished conversion was written again")

    monkeypatch.setattr(storage, "write_shard", no_writes)
    again = convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    assert again.up_to_date and again.resumed_shards == 6
    assert again.splits == first.splits and again.skipped == first.skipped == []
    assert {p.name: (p.stat().st_mtime_ns, p.stat().st_ino) for p in out.iterdir()} == stamps
    # A shard whose size no longer matches the manifest is redone, and only that one.
    monkeypatch.undo()
    good = (out / "val-000000.tar").read_bytes()
    (out / "val-000000.tar").write_bytes(good[:-512])
    redone = convert("clevr3d", synth_raw, out, options=options, shard_scenes=5, progress=False)
    assert not redone.up_to_date and redone.resumed_shards == 5
    assert (out / "val-000000.tar").read_bytes() == good


def test_split_range_past_the_data_stops_convert(synth_raw, tmp_path):
    """Item 3: train [0,1000] / val [1000,1100] / test [1100,1200] on 24 scenes converted
    train 24, val 0, test 0 with exit 0; now convert stops naming splits.<name>. Fractions follow
    the data's size."""
    splits = {"train": [0, 1000], "val": [1000, 1100], "test": [1100, 1200]}
    with pytest.raises(SourceError, match=r"clevr3d: option splits\.train = \[0, 1000\] is past the end of the data: 24 scenes available"):
        convert("clevr3d", synth_raw, tmp_path / "a", options={"splits": splits}, progress=False)
    assert not (tmp_path / "a").exists()
    fractions = {"train": [0, 0.8333], "val": [0.8333, 0.9167], "test": [0.9167, 1.0]}
    result = convert("clevr3d", synth_raw, tmp_path / "b", options={"splits": fractions}, shard_scenes=8, progress=False)
    assert {s: v["scenes"] for s, v in result.splits.items()} == {"train": 20, "val": 2, "test": 2}


def test_empty_input_is_an_error(tmp_path):
    """Item 4: a zero-byte TFRecord converted to an empty dataset with exit 0."""
    from objdisc.data.sources.multi_object import TETROMINOES

    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / TETROMINOES.file).write_bytes(b"")
    with pytest.raises(SourceError, match=rf"tetrominoes: {raw} yields no scene for split\(s\) train, val, test"):
        convert("tetrominoes", raw, tmp_path / "out", progress=False)
    with pytest.raises(SourceError, match=r"option splits\.train = \[0, 8\] is past the end of the data: 0 scenes"):
        convert("tetrominoes", raw, tmp_path / "out", options={"splits": {"train": [0, 8]}}, progress=False)
    with pytest.raises(SourceError, match=rf"tetrominoes: {raw} yields no scene for split\(s\) train:"):
        convert("tetrominoes", raw, tmp_path / "out", options={"splits": {"train": [0.0, 1.0]}}, progress=False)
    assert not (tmp_path / "out").exists()


def test_empty_split_asked_for_is_an_error_and_empty_default_split_a_warning(tmp_path):
    """Item 4: a split that is asked for but holds no scene (here: all filtered out) is an error;
    an empty split of the source's own table is left out with a warning."""
    from objdisc.data.sources.multi_object import TETROMINOES
    from tests.data.sources.fixtures_deepmind import random_scene, write_py

    raw = tmp_path / "raw"
    raw.mkdir()
    rng = np.random.default_rng(0)
    write_py(raw / TETROMINOES.file, TETROMINOES, [random_scene(TETROMINOES, rng, n) for n in (3, 3, 1, 1)])
    options = {"splits": {"train": [0, 2], "val": [2, 4]}, "max_objects": 1}
    with pytest.raises(SourceError, match=rf"tetrominoes: split 'train' has no scene in {raw}"):
        convert("tetrominoes", raw, tmp_path / "out", options=options, progress=False)
    with pytest.warns(UserWarning, match="of the source's default table has no scene"):
        result = convert("tetrominoes", raw, tmp_path / "out", progress=False)
    assert {s: v["scenes"] for s, v in result.splits.items()} == {"train": 4}
