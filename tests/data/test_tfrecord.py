"""TF-free TFRecord reading: framing, CRCs, compression, corrupt input (Example parsing: test_tf_example.py).

Most tests need no TensorFlow (records are written by ``write_records`` and TFDS's Example copy);
the ``tf`` tests check both directions against TensorFlow's own reader and writer.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from objdisc.data.tfrecord import (
    TFRecordError,
    _crc32c_python,
    count_records,
    crc32c,
    detect_compression,
    iter_records,
    masked_crc32c,
    read_records,
    write_records,
)
from tests.data.test_tf_example import example_bytes

# Written by tf.io.TFRecordWriter (TF 2.21, no compression): records b"objdisc" and b"".
TF_WRITTEN = bytes.fromhex("0700000000000000bbd79f116f626a646973639d318b8b000000000000000029039807d8ea82a2")


def payloads(n: int = 5) -> list[bytes]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, int(rng.integers(0, 3000)), dtype=np.uint8).tobytes() for _ in range(n)] + [b""]


def test_crc32c_known_values():
    assert crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert _crc32c_python(b"123456789") == 0xE3069283
    data = bytes(range(256)) * 3
    assert _crc32c_python(data) == crc32c(data)


def test_reads_a_file_written_by_tensorflow(tmp_path: Path):
    path = tmp_path / "known.tfrecords"
    path.write_bytes(TF_WRITTEN)
    assert detect_compression(path) is None
    assert list(iter_records(path)) == [b"objdisc", b""]
    assert masked_crc32c(b"objdisc") == int.from_bytes(TF_WRITTEN[19:23], "little")


@pytest.mark.parametrize("compression", [None, "GZIP", "ZLIB"])
def test_round_trip_and_ranges(tmp_path: Path, compression):
    path = tmp_path / "data.tfrecords"
    data = payloads()
    write_records(path, data, compression)
    assert detect_compression(path) == compression
    assert list(iter_records(path, "auto")) == data
    assert list(iter_records(path, compression)) == data
    assert count_records(path) == len(data)
    for start in range(len(data) + 1):
        assert list(iter_records(path, start=start)) == data[start:]
        assert list(iter_records(path, start=start, stop=start + 2)) == data[start : start + 2]
    assert list(iter_records(path, start=3, stop=100)) == data[3:]
    assert list(read_records(path, [1, 2, 4])) == [(1, data[1]), (2, data[2]), (4, data[4])]
    with pytest.raises(TFRecordError, match=rf"{path.name}.*has {len(data)} records, record 9"):
        list(read_records(path, [0, 9]))
    if compression:
        framed = (gzip.decompress if compression == "GZIP" else zlib.decompress)(path.read_bytes())
        plain = tmp_path / "plain.tfrecords"
        write_records(plain, data, None)
        assert framed == plain.read_bytes()


def test_large_record_across_buffer_boundaries(tmp_path: Path):
    """A record larger than the inflate chunks, after many small ones, still reads exactly."""
    rng = np.random.default_rng(1)
    data = [bytes(10)] * 100 + [rng.integers(0, 4, 3_000_000, dtype=np.uint8).tobytes()] + [b"tail"]
    path = tmp_path / "big.tfrecords"
    write_records(path, data, "GZIP")
    assert list(iter_records(path)) == data
    assert list(iter_records(path, start=100)) == data[100:]
    assert list(iter_records(path, start=101)) == [b"tail"]


def test_concatenated_gzip_members(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    write_records(a, [b"one", b"two"], "GZIP")
    write_records(b, [b"three"], "GZIP")
    both = tmp_path / "both.tfrecords"
    both.write_bytes(a.read_bytes() + b.read_bytes())
    assert list(iter_records(both)) == [b"one", b"two", b"three"]


def test_empty_file_has_no_records(tmp_path: Path):
    path = tmp_path / "empty.tfrecords"
    path.write_bytes(b"")
    assert list(iter_records(path)) == []
    assert count_records(path) == 0


def test_payload_crc_mismatch_names_file_and_record(tmp_path: Path):
    path = tmp_path / "flip.tfrecords"
    data = [b"a" * 50, b"b" * 50, b"c" * 50]
    write_records(path, data, None)
    raw = bytearray(path.read_bytes())
    raw[2 * 66 + 12 + 10] ^= 0x01  # a payload byte of record 2 (each record is 12 + 50 + 4 bytes)
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match=r"flip\.tfrecords: record 2: payload CRC mismatch"):
        list(iter_records(path))
    assert list(iter_records(path, stop=2)) == data[:2]
    assert list(iter_records(path, verify=False))[2] != data[2]
    # The same flip inside a GZIP file: our CRC still catches it (gzip's CRC covers the stream).
    gz = tmp_path / "flip.gz.tfrecords"
    gz.write_bytes(gzip.compress(bytes(raw)))
    with pytest.raises(TFRecordError, match="record 2: payload CRC mismatch"):
        list(iter_records(gz))


def test_length_crc_mismatch(tmp_path: Path):
    path = tmp_path / "len.tfrecords"
    write_records(path, [b"x" * 10, b"y" * 10], None)
    raw = bytearray(path.read_bytes())
    raw[26] ^= 0x40  # length field of record 1 (record 0 is 12 + 10 + 4 = 26 bytes)
    path.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match=r"len\.tfrecords: record 1: length CRC mismatch"):
        list(iter_records(path))
    with pytest.raises(TFRecordError, match="record 1: length CRC mismatch"):
        count_records(path)


def test_truncated_record_and_truncated_gzip(tmp_path: Path):
    path = tmp_path / "cut.tfrecords"
    write_records(path, [b"x" * 100] * 3, None)
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(TFRecordError, match=r"cut\.tfrecords: record 2: truncated record"):
        list(iter_records(path))
    with pytest.raises(TFRecordError, match="record 2: truncated record"):
        list(iter_records(path, start=2))

    gz = tmp_path / "cut.gz"
    rng = np.random.default_rng(2)
    write_records(gz, [rng.integers(0, 256, 5000, dtype=np.uint8).tobytes() for _ in range(4)], "GZIP")
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(TFRecordError, match=r"cut\.gz: record \d: truncated compressed stream"):
        list(iter_records(gz))

    bad = tmp_path / "bad.gz"
    write_records(bad, [bytes(1000)] * 3, "GZIP")
    raw = bytearray(bad.read_bytes())
    raw[-6] ^= 0xFF  # inside the gzip trailer's CRC-32
    bad.write_bytes(bytes(raw))
    with pytest.raises(TFRecordError, match="corrupt compressed stream"):
        list(iter_records(bad))


def test_not_a_tfrecord(tmp_path: Path):
    path = tmp_path / "text.txt"
    path.write_bytes(b"hello, this is not a TFRecord file")
    with pytest.raises(TFRecordError, match="not a TFRecord file"):
        list(iter_records(path))


def test_reader_works_with_tensorflow_blocked(tmp_path: Path):
    """Reading and parsing never import TensorFlow (blocked in a fresh interpreter)."""
    path = tmp_path / "blocked.tfrecords"
    raw = example_bytes({"image": [bytes([v]) for v in range(12)], "f": np.arange(3, dtype=np.float32)})
    write_records(path, [raw, raw], "GZIP")
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["tensorflow"] = None  # any `import tensorflow` now raises ImportError
        import numpy as np
        from objdisc.data.tf_example import Fixed, parse_example, parse_fixed
        from objdisc.data.tfrecord import iter_records
        records = list(iter_records({str(path)!r}))
        assert len(records) == 2
        fixed = parse_fixed(records[1], {{"image": Fixed((3, 4), "uint8"), "f": Fixed((3,), "float32")}})
        assert fixed["image"].tolist() == np.arange(12).reshape(3, 4).tolist()
        assert parse_example(records[0])["f"].tolist() == [0.0, 1.0, 2.0]
        assert sys.modules["tensorflow"] is None
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=os.environ.copy())
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("ok")


@pytest.mark.tf
@pytest.mark.parametrize("compression", [None, "GZIP", "ZLIB"])
def test_tensorflow_agrees_both_ways(tmp_path: Path, compression):
    tf = pytest.importorskip("tensorflow")
    data = payloads()
    ours = tmp_path / "ours.tfrecords"
    write_records(ours, data, compression)
    read_by_tf = [r.numpy() for r in tf.data.TFRecordDataset(str(ours), compression_type=compression or "")]
    assert read_by_tf == data
    theirs = tmp_path / "theirs.tfrecords"
    with tf.io.TFRecordWriter(str(theirs), options=compression or "") as writer:
        for payload in data:
            writer.write(payload)
    assert detect_compression(theirs) == compression
    assert list(iter_records(theirs)) == data
    assert list(iter_records(theirs, start=4)) == data[4:]
