import av
import numpy as np
import pytest
from PIL import Image

from objdisc.render.video import read_video, save_frames, write_mp4


def smooth_frames(n=30, h=64, w=64):
    """A moving gradient: compressible content whose every frame differs."""
    y, x = np.mgrid[0:h, 0:w]
    return [
        np.stack([(x * 4 + 3 * i) % 256, (y * 4) % 256, np.full_like(x, 8 * i % 256)], -1).astype(np.uint8)
        for i in range(n)
    ]


def test_mp4_round_trip(tmp_path):
    frames = smooth_frames()
    path = write_mp4(tmp_path / "out" / "video.mp4", iter(frames))
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["video.mp4"]  # no temp left
    video = read_video(path)
    assert video.shape == (30, 64, 64, 3) and video.dtype == np.uint8
    err = np.abs(video.astype(np.int16) - np.stack(frames).astype(np.int16))
    assert err.mean() < 3.0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.average_rate == 60
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"


def test_reproducible_bytes_and_quality_settings(tmp_path):
    frames = smooth_frames(10)
    a = write_mp4(tmp_path / "a.mp4", frames).read_bytes()
    assert write_mp4(tmp_path / "b.mp4", frames).read_bytes() == a
    rough = write_mp4(tmp_path / "rough.mp4", frames, crf=45).stat().st_size
    assert rough < len(a)  # crf reaches the encoder
    rated = write_mp4(tmp_path / "rated.mp4", frames, bitrate=1_000_000, fps=30)
    assert read_video(rated).shape == (10, 64, 64, 3)


def test_odd_sizes_are_edge_padded(tmp_path):
    frames = [f[:33, :35] for f in smooth_frames(6)]
    video = read_video(write_mp4(tmp_path / "odd.mp4", frames))
    assert video.shape == (6, 34, 36, 3)
    original = np.stack(frames).astype(np.int16)
    assert np.abs(video[:, :33, :35].astype(np.int16) - original).mean() < 3.0
    # the padding repeats the last row and column
    assert np.abs(video[:, 33, :35].astype(np.int16) - original[:, 32]).mean() < 4.0
    assert np.abs(video[:, :33, 35].astype(np.int16) - original[:, :, 34]).mean() < 4.0


def test_bad_input_leaves_no_file(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        write_mp4(tmp_path / "empty.mp4", [])
    frames = smooth_frames(3)
    with pytest.raises(ValueError, match="frame 1"):
        write_mp4(tmp_path / "mixed.mp4", [frames[0], frames[1][:32]])
    assert list(tmp_path.iterdir()) == []


def test_save_frames_numbering(tmp_path):
    frames = smooth_frames(12, 8, 10)
    assert save_frames(tmp_path / "renders", frames) == 12
    names = sorted(p.name for p in (tmp_path / "renders").iterdir())
    assert names == sorted(f"{i}.png" for i in range(12))
    for i in (0, 7, 11):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "renders" / f"{i}.png")), frames[i])
