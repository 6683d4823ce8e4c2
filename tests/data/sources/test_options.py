"""The shared ``splits`` option (objdisc.data.sources.options): fractions, and a user range past the
end of the data is an error in every source that takes the option (fault-injection item 3)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from objdisc.data.sources import SourceError, get_source
from objdisc.data.sources.multi_object import CLEVR, TETROMINOES
from objdisc.data.sources.options import SplitRange, parse_splits
from tests.data.sources.fixtures_deepmind import random_scene, write_py
from tests.data.sources.test_clevr3d import write_clevr3d
from tests.data.sources.test_clevr_npz import write_npz_dataset
from tests.data.sources.test_multi_object_hdf5 import write_h5
from tests.data.sources.test_shapes3d import write_shapes

N = 6  # records in every fixture below


def _tetrominoes(root: Path) -> Path:
    rng = np.random.default_rng(0)
    write_py(root / TETROMINOES.file, TETROMINOES, [random_scene(TETROMINOES, rng) for _ in range(N)])
    return root


def _hdf5(root: Path) -> Path:
    rng = np.random.default_rng(1)
    write_h5(root / "tetrominoes.h5", TETROMINOES, [random_scene(TETROMINOES, rng) for _ in range(N)])
    return root


def _npz(root: Path) -> Path:
    rng = np.random.default_rng(2)
    write_npz_dataset(root, [random_scene(CLEVR, rng, 3) for _ in range(N)])
    return root


def _shapes(root: Path) -> Path:
    write_shapes(root / "3dshapes.h5", N, size=64)
    return root


def _clevr3d(root: Path) -> Path:
    write_clevr3d(root, n=N)
    return root


# Every source that takes the `splits` option.
WRITERS = {
    "clevr3d": _clevr3d,
    "tetrominoes": _tetrominoes,
    "multi-object-hdf5": _hdf5,
    "clevr-npz": _npz,
    "shapes3d": _shapes,
}


@pytest.mark.parametrize("name", sorted(WRITERS))
def test_user_range_past_the_end_is_an_error(name, tmp_path):
    """Item 3: a configured split range beyond the data stops with one line naming the option key,
    the range and the scenes available (the old code cut it silently: val 0, test 0)."""
    root = WRITERS[name](tmp_path)
    source_cls = get_source(name)
    splits = {"train": [0, 4], "val": [4, 1000]}
    with pytest.raises(SourceError, match=rf"{name}: option splits\.val = \[4, 1000\] is past the end of the data: {N} scenes"):
        source_cls(root, splits=splits).splits()
    # The same ranges as fractions follow the data's size; a range up to the end is fine.
    fractions = source_cls(root, splits={"train": [0.0, 0.5], "val": [0.5, 0.84], "test": [0.84, 1.0]})
    assert fractions.splits() == {"train": 3, "val": 2, "test": 1}
    assert source_cls(root, splits={"all": [0, N], "rest": [2, None]}).splits() == {"all": N, "rest": N - 2}


def test_fractions_partition_the_records():
    table = parse_splits({"train": [0, 0.8333], "val": [0.8333, 0.9167], "test": [0.9167, 1.0]}, "x")
    assert all(split.fraction for split in table.values())
    for total in (0, 1, 7, 24, 64, 1200, 100_001):
        ranges = [table[s].members(total, None, None) for s in ("train", "val", "test")]
        assert [i for r in ranges for i in r] == list(range(total))  # no gap, no overlap
    assert [len(table[s].members(1200, None, None)) for s in ("train", "val", "test")] == [1000, 100, 100]
    assert [len(table[s].members(24, None, None)) for s in ("train", "val", "test")] == [20, 2, 2]
    # A limit and the object filter apply inside the fraction's records.
    limited = parse_splits({"a": [0.5, 1.0, 2]}, "x")["a"]
    assert list(limited.members(10, np.array([9] * 6 + [1] * 4), 3)) == [6, 7]


@pytest.mark.parametrize(
    "spec,message",
    [
        ([0.5, 1.5], r"option splits\.s = \[0\.5, 1\.5\]: a fraction must lie in \[0, 1\]"),
        ([1000.0, 1100.0], r"a fraction must lie in \[0, 1\]"),
        ([0.8, 0.2], r"option splits\.s: split 's' has a bad range"),
        (["a", 3], r"option splits\.s: expected \[start, stop\]"),
        ([1, 2, 0.5], r"option splits\.s: expected"),
    ],
)
def test_bad_split_specs_name_the_key(spec, message):
    with pytest.raises(SourceError, match=message):
        parse_splits({"s": spec}, "src")


def test_built_in_tables_are_still_cut_and_damaged_files_count_as_a_lower_bound():
    assert SplitRange(0, 70_000).members(50, None, None) == range(0, 50)  # documented default tables
    user = parse_splits({"train": [0, 70_000]}, "src")["train"]
    with pytest.raises(SourceError, match=r"src: option splits\.train = \[0, 70000\] is past the end of the data: 50 scenes"):
        user.members(50, None, None)
    assert user.members(50, None, None, exact=False) == range(0, 50)
    assert SplitRange(0, 10) == parse_splits({"t": [0, 10]}, "src")["t"]  # where it came from does not compare
