"""MSN / MSN-hard sources on tiny TFDS folders written by TensorFlow + tensorflow-datasets, in the
published sunds frame layout (K + extrinsics per camera) and in the stacked-rays layout.

Cameras are checked against independent implementations: sunds' ray formula for the frame layout,
the stored rays themselves for the stacked layout, always through ``pixel_rays``."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from objdisc.data.schema import validate_scene
from objdisc.data.sources.base import SourceError
from objdisc.data.sources.kubric_msn import KubricMSN, KubricMSNHard, fit_pinhole
from objdisc.geometry import pixel_rays

H = W = 16
V = 10
SPLITS = {"train": 3, "val": 1, "test": 2}


def kubric_intrinsics(height: int, width: int) -> np.ndarray:
    """Kubric's camera: 35 mm focal length on a 32 mm sensor, principal point at the centre."""
    f = 35.0 / 32.0 * width
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float32)


def random_world_from_camera(rng: np.random.Generator) -> np.ndarray:
    """An OpenCV camera on a shell around the origin, looking roughly at it."""
    eye = rng.normal(size=3)
    eye = eye / np.linalg.norm(eye) * rng.uniform(6, 10)
    eye[2] = abs(eye[2]) + 1
    forward = -eye / np.linalg.norm(eye) + rng.normal(scale=0.05, size=3)
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, [0, 0, 1.0])
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    m = np.eye(4)
    m[:3, :3] = np.stack([right, down, forward], axis=1)
    m[:3, 3] = eye
    return m


def sunds_rays(k: np.ndarray, world_from_camera: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """sunds' rays_from_image_grid in float32: unproject pixel centres with K⁻¹, normalise, rotate."""
    u, v = np.meshgrid(np.arange(W, dtype=np.float32) + 0.5, np.arange(H, dtype=np.float32) + 0.5)
    points = np.stack([u, v, np.ones_like(u)], -1) @ np.linalg.inv(k).T.astype(np.float32)
    points /= np.linalg.norm(points, axis=-1, keepdims=True)
    rot = world_from_camera[:3, :3].astype(np.float32)
    dirs = points @ rot.T
    dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
    origins = np.broadcast_to(world_from_camera[:3, 3].astype(np.float32), dirs.shape)
    return np.ascontiguousarray(origins), dirs.astype(np.float32)


def make_scenes(seed: int, n: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    scenes = []
    for s in range(n):
        pose = np.eye(4)  # frame → scene; not the identity, to check the composition
        angle = rng.uniform(0, np.pi)
        pose[:3, :3] = [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
        pose[:3, 3] = rng.normal(size=3)
        world_from_camera = [random_world_from_camera(rng) for _ in range(V)]
        # extrinsics = camera ← frame, so that pose ∘ extrinsics⁻¹ = world_from_camera
        extrinsics = [np.linalg.inv(m) @ pose for m in world_from_camera]
        scenes.append({
            "name": f"scene_{100 + seed * 10 + s}",
            "pose": pose,
            "world_from_camera": np.stack(world_from_camera),
            "extrinsics": np.stack(extrinsics),
            "image": rng.integers(0, 256, size=(V, H, W, 3), dtype=np.uint8),
            "instance": rng.integers(0, 40, size=(V, H, W, 1), dtype=np.uint8),
            "depth": rng.uniform(1, 20, size=(V, H, W, 1)).astype(np.float32),
        })
    return scenes


def build_tfds(data_dir, layout: str, hard: bool, file_format: str = "tfrecord") -> dict[str, list[dict]]:
    """Write a TFDS folder like the published ones (builder name, config and version included)."""
    tf = pytest.importorskip("tensorflow")
    tfds = pytest.importorskip("tensorflow_datasets")
    del tf
    truth = {split: make_scenes(seed, n) for seed, (split, n) in enumerate(SPLITS.items())}
    k = kubric_intrinsics(H, W)
    f32 = np.float32

    def tensor(*shape):
        return tfds.features.Tensor(shape=shape, dtype=f32)

    def frame_features():
        camera = {
            "intrinsics": {"image_width": np.int32, "image_height": np.int32, "K": tensor(3, 3),
                           "type": tfds.features.Text(),
                           "distortion": {"radial": tensor(3), "tangential": tensor(2)}},
            "extrinsics": {"R": tensor(3, 3), "t": tensor(3)},
            "color_image": tfds.features.Image(shape=(H, W, 3)),
            "instance_image": tfds.features.LabeledImage(labels=None, shape=(H, W, 1)),
        }
        if hard:
            camera["depth_image"] = tfds.features.Image(shape=(H, W, 1), dtype=f32)
        return {"scene_name": tfds.features.Text(), "frame_name": tfds.features.Text(),
                "pose": {"R": tensor(3, 3), "t": tensor(3)},
                "cameras": {f"camera_{i}": camera for i in range(V)}}

    def stacked_features():
        feats = {"scene_name": tfds.features.Text(),
                 "color_image": tfds.features.Sequence(tfds.features.Image(shape=(H, W, 3)), length=V),
                 "ray_origins": tensor(V, H, W, 3), "ray_directions": tensor(V, H, W, 3)}
        if hard:
            feats["instance_image"] = tfds.features.Tensor(shape=(V, H, W, 1), dtype=np.uint8)
        return feats

    def frame_example(scene):
        cams = {}
        for i in range(V):
            cams[f"camera_{i}"] = {
                "intrinsics": {"image_width": W, "image_height": H, "K": k, "type": "PERSPECTIVE",
                               "distortion": {"radial": np.zeros(3, f32), "tangential": np.zeros(2, f32)}},
                "extrinsics": {"R": scene["extrinsics"][i, :3, :3].astype(f32),
                               "t": scene["extrinsics"][i, :3, 3].astype(f32)},
                "color_image": scene["image"][i],
                "instance_image": scene["instance"][i],
            }
            if hard:
                cams[f"camera_{i}"]["depth_image"] = scene["depth"][i]
        return {"scene_name": scene["name"], "frame_name": scene["name"],
                "pose": {"R": scene["pose"][:3, :3].astype(f32), "t": scene["pose"][:3, 3].astype(f32)},
                "cameras": cams}

    def stacked_example(scene):
        rays = [sunds_rays(k, m) for m in scene["world_from_camera"]]
        ex = {"scene_name": scene["name"], "color_image": list(scene["image"]),
              "ray_origins": np.stack([r[0] for r in rays]), "ray_directions": np.stack([r[1] for r in rays])}
        if hard:
            ex["instance_image"] = scene["instance"]
        return ex

    features, example = (frame_features, frame_example) if layout == "frames" else (stacked_features,
                                                                                     stacked_example)

    class Base(tfds.core.GeneratorBasedBuilder, skip_registration=True):
        # A one-part module name: tfds then does not look for the builder's code as a package
        # resource (which needs importlib_resources for test packages).
        __module__ = "fixture"

        def _info(self):
            return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features()))

        def _split_generators(self, dl_manager):
            return {split: self._generate_examples(split) for split in SPLITS}

        def _generate_examples(self, split):
            for scene in truth[split]:
                yield scene["name"], example(scene)

    if hard:
        class KubricFrames(Base, skip_registration=True):
            __module__ = "fixture"
            VERSION = tfds.core.Version("2.8.0")
            BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="multi_shapenet_conditional")]

        builder = KubricFrames(data_dir=str(data_dir), config="multi_shapenet_conditional", file_format=file_format)
    else:
        class MultiShapenetFrames(Base, skip_registration=True):
            __module__ = "fixture"
            VERSION = tfds.core.Version("2.3.3")

        builder = MultiShapenetFrames(data_dir=str(data_dir), file_format=file_format)
    builder.download_and_prepare(download_config=tfds.download.DownloadConfig(verify_ssl=False))
    return {split: {s["name"]: s for s in scenes} for split, scenes in truth.items()}


def check_cameras(scene: dict, truth: dict, layout: str) -> None:
    c2w = torch.from_numpy(scene["cam2world"])
    origins, dirs = pixel_rays(c2w, torch.from_numpy(scene["intrinsics"]), H, W)
    k = kubric_intrinsics(H, W)
    assert torch.all(torch.linalg.det(c2w[:, :3, :3]) > 0)
    for v in range(V):
        ref_origins, ref_dirs = sunds_rays(k, truth["world_from_camera"][v])
        assert np.abs(dirs[v].numpy() - ref_dirs).max() < 1e-5
        assert np.abs(origins[v].numpy() - ref_origins).max() < 1e-5
        np.testing.assert_allclose(scene["intrinsics"][v], k, rtol=1e-4, atol=1e-4)
    if layout == "stacked":
        assert scene["meta"]["ray_fit_error"] < 1e-6


@pytest.mark.tf
@pytest.mark.parametrize("layout,file_format", [("frames", "tfrecord"), ("stacked", "tfrecord"),
                                                ("frames", "array_record")])
def test_msn(tmp_path, layout, file_format):
    truth = build_tfds(tmp_path, layout, hard=False, file_format=file_format)
    source = KubricMSN(tmp_path)
    assert file_format in source.file_format
    assert source.builder_dir == tmp_path / "multi_shapenet_frames" / "2.3.3"
    assert source.splits() == SPLITS
    seen = {}
    for split, n in SPLITS.items():
        scenes = list(source.read(split, 0, n))
        assert [s["meta"]["index"] for s in scenes] == list(range(n))
        seen[split] = {s["meta"]["scene_name"] for s in scenes}
        for scene in scenes:
            validate_scene(scene)
            t = truth[split][scene["meta"]["scene_name"]]
            assert scene["meta"]["sceneid"] == int(t["name"][6:])
            np.testing.assert_array_equal(scene["image"], t["image"])
            assert "mask" not in scene and "depth" not in scene
            check_cameras(scene, t, layout)
        assert [s["__key__"] for s in source.read(split, n - 1, n + 5)] == [f"{n - 1:08d}"]
    assert {split: set(t) for split, t in truth.items()} == seen  # split membership
    clone = pickle.loads(pickle.dumps(source))  # what the converter's worker processes receive
    np.testing.assert_array_equal(next(clone.read("train", 1, 2))["image"], next(source.read("train", 1, 2))["image"])


@pytest.mark.tf
@pytest.mark.parametrize("layout", ["frames", "stacked"])
def test_msn_hard(tmp_path, layout):
    truth = build_tfds(tmp_path, layout, hard=True)
    source = KubricMSNHard(tmp_path)
    assert source.builder_dir == tmp_path / "kubric_frames" / "multi_shapenet_conditional" / "2.8.0"
    assert source.splits() == SPLITS
    scenes = list(source.read("train", 1, 3))
    assert [s["meta"]["index"] for s in scenes] == [1, 2]
    for scene in scenes:
        validate_scene(scene)
        t = truth["train"][scene["meta"]["scene_name"]]
        np.testing.assert_array_equal(scene["image"], t["image"])
        expected = np.clip(t["instance"][..., 0].astype(int), 1, 34) - 1
        np.testing.assert_array_equal(scene["mask"], expected)
        assert scene["mask"].max() == 33 and scene["mask"].min() == 0  # raw ≥ 34 → 33, raw 0 and 1 → 0
        assert [o["id"] for o in scene["objects"]] == sorted(set(np.unique(expected)) - {0})
        if layout == "frames":
            assert scene["meta"]["cameras"][:3] == ["camera_0", "camera_1", "camera_2"]
            np.testing.assert_array_equal(scene["depth"], t["depth"][..., 0])
        check_cameras(scene, t, layout)


@pytest.mark.tf
def test_msn_hard_needs_instance_images(tmp_path):
    build_tfds(tmp_path, "frames", hard=False)
    (tmp_path / "multi_shapenet_frames" / "2.3.3").rename(tmp_path / "elsewhere")
    source = KubricMSNHard(tmp_path)  # the only TFDS folder under the root is found
    assert source.builder_dir == tmp_path / "elsewhere"
    scene = next(source.read("val", 0, 1))  # the 2.3.3-style fixture also has instance images
    assert scene["mask"].shape == (V, H, W)
    empty = tmp_path / "elsewhere" / "empty"
    empty.mkdir()
    with pytest.raises(SourceError, match="no TFDS dataset"):
        KubricMSN(empty)


def test_fit_pinhole_recovers_a_camera_and_refuses_non_pinhole_rays():
    rng = np.random.default_rng(0)
    k = kubric_intrinsics(H, W)
    m = random_world_from_camera(rng)
    origins, dirs = sunds_rays(k, m)
    c2w, k_fit, err = fit_pinhole(origins, dirs, "view", 1e-4)
    assert err < 1e-6
    np.testing.assert_allclose(c2w, m, atol=1e-5)
    np.testing.assert_allclose(k_fit, k, rtol=1e-5, atol=1e-4)
    # Barrel distortion: no single pinhole matches, and the message gives the size of the mismatch.
    u = (np.arange(W) + 0.5 - W / 2) / W
    r2 = u[None, :] ** 2 + u[:, None] ** 2
    bent = dirs + 0.05 * r2[..., None] * np.cross(dirs, m[:3, 2])
    bent /= np.linalg.norm(bent, axis=-1, keepdims=True)
    with pytest.raises(SourceError, match="not one pinhole camera .direction error"):
        fit_pinhole(origins, bent, "view 3", 1e-4)


HIDE_TENSORFLOW = '''
import sys
class Hide:
    """Wraps a meta-path finder so that TensorFlow looks not installed."""
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return self.inner.find_spec(name, path, target)
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
from objdisc.data.sources.kubric_msn import KubricMSNHard
scene = next(KubricMSNHard(sys.argv[1]).read("test", 1, 2))
assert "tensorflow" not in sys.modules
print(scene["__key__"], scene["image"].shape, scene["mask"].shape, scene["depth"].shape)
'''


@pytest.mark.tf
def test_reading_needs_no_tensorflow(tmp_path):
    import subprocess
    import sys

    build_tfds(tmp_path, "frames", hard=True)
    out = subprocess.run([sys.executable, "-c", HIDE_TENSORFLOW, str(tmp_path)], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["00000001", "(10,", "16,", "16,", "3)", "(10,", "16,", "16)", "(10,", "16,", "16)"]
