"""Decoding ``tf.train.Example`` without TensorFlow: ``parse_fixed`` agrees with the protobuf
library (TFDS's Example copy) and names the record and feature on bad input."""

from __future__ import annotations

import numpy as np
import pytest

from objdisc.data.tf_example import Fixed, encode_example, parse_example, parse_fixed
from objdisc.data.tfrecord import TFRecordError


def example_bytes(features: dict) -> bytes:
    """Serialize {name: list of bytes | float32 array | int64 array} with TFDS's Example copy."""
    from tensorflow_datasets.proto import tf_example_pb2

    example = tf_example_pb2.Example()
    for name, value in features.items():
        feature = example.features.feature[name]
        if isinstance(value, list):
            feature.bytes_list.value.extend(value)
        elif np.asarray(value).dtype == np.float32:
            feature.float_list.value.extend(np.asarray(value).tolist())
        else:
            feature.int64_list.value.extend(np.asarray(value).tolist())
    return example.SerializeToString()



def test_parse_fixed_matches_parse_example():
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (5, 4, 3), dtype=np.uint8)
    floats = rng.normal(size=(3, 2)).astype(np.float32)
    ints = np.array([0, 1, -1, 2**40, -(2**62)], np.int64)
    raw = example_bytes(
        {"image": [bytes([v]) for v in image.reshape(-1)], "f": floats.reshape(-1), "i": ints, "name": [b"hello"]}
    )
    spec = {"image": Fixed((5, 4, 3), "uint8"), "f": Fixed((3, 2), "float32"), "i": Fixed((5,), "int64")}
    fixed = parse_fixed(raw, spec)
    np.testing.assert_array_equal(fixed["image"], image)
    np.testing.assert_array_equal(fixed["f"], floats)
    np.testing.assert_array_equal(fixed["i"], ints)
    assert fixed["image"].dtype == np.uint8 and fixed["f"].dtype == np.float32
    parsed = parse_example(raw)
    assert parsed["name"] == [b"hello"]
    np.testing.assert_array_equal(np.frombuffer(b"".join(parsed["image"]), np.uint8).reshape(5, 4, 3), image)
    np.testing.assert_array_equal(parsed["f"].reshape(3, 2), floats)
    np.testing.assert_array_equal(parsed["i"], ints)


def test_parse_fixed_unpacked_floats_and_merged_lists():
    """Valid but unusual encodings: unpacked floats, a Feature's list split in two messages."""
    floats = np.array([1.5, -2.0, 3.25], np.float32)
    unpacked = b"".join(b"\x0d" + v.tobytes() for v in floats)  # FloatList, field 1, fixed32 each
    bytes_a = b"\x0a\x01\x07\x0a\x01\x08"  # BytesList with b"\x07", b"\x08"
    bytes_b = b"\x0a\x01\x09"

    def entry(name: bytes, feature: bytes) -> bytes:
        body = b"\x0a" + bytes([len(name)]) + name + b"\x12" + bytes([len(feature)]) + feature
        return b"\x0a" + bytes([len(body)]) + body

    f_feature = b"\x12" + bytes([len(unpacked)]) + unpacked
    b_feature = b"\x0a" + bytes([len(bytes_a)]) + bytes_a + b"\x0a" + bytes([len(bytes_b)]) + bytes_b
    features = entry(b"f", f_feature) + entry(b"b", b_feature)
    raw = b"\x0a" + bytes([len(features)]) + features
    out = parse_fixed(raw, {"f": Fixed((3,), "float32"), "b": Fixed((3,), "uint8")})
    np.testing.assert_array_equal(out["f"], floats)
    np.testing.assert_array_equal(out["b"], [7, 8, 9])
    parsed = parse_example(raw)  # the protobuf library agrees
    np.testing.assert_array_equal(parsed["f"], floats)
    assert parsed["b"] == [b"\x07", b"\x08", b"\x09"]


def test_parse_fixed_errors():
    raw = example_bytes({"image": [b"\x01", b"\x02", b"\x03\x04"], "f": np.zeros(4, np.float32)})
    where = "some.tfrecords: record 7"
    with pytest.raises(TFRecordError, match=r"some\.tfrecords: record 7: feature 'image': element 2 is 2 bytes"):
        parse_fixed(raw, {"image": Fixed((3,), "uint8")}, where)
    with pytest.raises(TFRecordError, match="record 7: feature 'f' has 4 values, expected 6"):
        parse_fixed(raw, {"f": Fixed((2, 3), "float32")}, where)
    with pytest.raises(TFRecordError, match="feature 'mask' is missing"):
        parse_fixed(raw, {"mask": Fixed((3,), "uint8")}, where)
    with pytest.raises(TFRecordError, match="feature 'f' is a float_list, expected a bytes_list"):
        parse_fixed(raw, {"f": Fixed((4,), "uint8")}, where)
    ok = example_bytes({"image": [b"\x01"] * 4})
    with pytest.raises(TFRecordError, match="feature 'image' has 4 values, expected 5"):
        parse_fixed(ok, {"image": Fixed((5,), "uint8")}, where)
    with pytest.raises(TFRecordError, match="record 7: not a serialized tf.train.Example"):
        parse_fixed(ok[:-3], {"image": Fixed((4,), "uint8")}, where)
    with pytest.raises(TFRecordError, match="not a serialized tf.train.Example"):
        parse_example(b"\x0a\xff\xff", where)


# --------------------------------------------------------------------------------------------
# encode_example: the writer's side


def dsprites_arrays(seed: int = 0) -> tuple[dict, dict]:
    """Random arrays for every feature of the colored-on-grayscale Multi-dSprites layout, and its spec."""
    from objdisc.data.sources.multi_object import MULTI_DSPRITES

    spec = MULTI_DSPRITES["colored_on_grayscale"].features()
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, fixed in spec.items():
        if fixed.dtype == "uint8":
            arrays[name] = rng.integers(0, 256, fixed.shape, dtype=np.uint8)
        else:
            arrays[name] = rng.normal(size=fixed.shape).astype(np.float32)
    return arrays, spec


def test_encode_example_matches_protobuf_and_parse_fixed():
    from tensorflow_datasets.proto import tf_example_pb2

    image = np.arange(24, dtype=np.uint8).reshape(2, 4, 3)
    floats = np.array([[1.5, -2.0], [0.0, 3.25e-9]], np.float32)
    ints = np.array([0, 1, -1, 2**40, -(2**63), 2**63 - 1], np.int64)
    features = {"image": image, "f": floats, "i": ints, "s": [b"hello", b"", b"x" * 300],
                "empty": np.zeros(0, np.float32)}
    raw = encode_example(features)
    assert encode_example(dict(reversed(list(features.items())))) == raw  # key order does not matter
    expected = example_bytes({"image": [bytes([v]) for v in range(24)], "f": floats.reshape(-1), "i": ints,
                              "s": [b"hello", b"", b"x" * 300], "empty": np.zeros(0, np.float32)})
    assert tf_example_pb2.Example.FromString(raw) == tf_example_pb2.Example.FromString(expected)
    for name, value in features.items():  # feature by feature, the very bytes protobuf writes
        message = tf_example_pb2.Example.FromString(encode_example({name: value}))
        assert encode_example({name: value}) == message.SerializeToString(deterministic=True), name
    out = parse_fixed(raw, {"image": Fixed((2, 4, 3), "uint8"), "f": Fixed((2, 2), "float32"), "i": Fixed((6,), "int64"),
                            "empty": Fixed((0,), "float32")})
    np.testing.assert_array_equal(out["image"], image)
    np.testing.assert_array_equal(out["f"], floats)
    np.testing.assert_array_equal(out["i"], ints)
    assert out["empty"].shape == (0,)
    assert parse_example(raw)["s"] == [b"hello", b"", b"x" * 300]

    arrays, spec = dsprites_arrays()
    decoded = parse_fixed(encode_example(arrays), spec)
    for name in spec:
        np.testing.assert_array_equal(decoded[name], arrays[name])
        assert decoded[name].dtype == arrays[name].dtype


def test_encode_example_rejects_other_types():
    with pytest.raises(TypeError, match="feature 'x': unsupported dtype float64"):
        encode_example({"x": np.zeros(3)})
    with pytest.raises(TypeError, match="feature 'y': expected a list of bytes"):
        encode_example({"y": ["text"]})


@pytest.mark.tf
def test_encode_example_read_by_tensorflow():
    """TensorFlow parses the encoder's bytes with the DeepMind reader's feature spec."""
    tf = pytest.importorskip("tensorflow")
    arrays, spec = dsprites_arrays(1)
    raw = encode_example(arrays)
    example = tf.train.Example.FromString(raw)
    assert sorted(example.features.feature) == sorted(spec)
    image = example.features.feature["image"].bytes_list.value
    assert len(image) == 64 * 64 * 3 and all(len(v) == 1 for v in image)

    tf_spec = {
        name: tf.io.FixedLenFeature(fixed.shape, tf.string if fixed.dtype == "uint8" else tf.float32)
        for name, fixed in spec.items()
    }
    parsed = tf.io.parse_single_example(raw, tf_spec)
    for name, fixed in spec.items():
        value = parsed[name]
        if fixed.dtype == "uint8":  # as the DeepMind readers decode image and mask
            value = tf.squeeze(tf.io.decode_raw(value, tf.uint8), -1)
        np.testing.assert_array_equal(value.numpy(), arrays[name])
