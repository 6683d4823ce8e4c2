from pathlib import Path

import pytest
import yaml

from objdisc.config import ConfigError, TrainConfig, build, load_params, parse_params, plain

ROOT = Path(__file__).resolve().parents[1]


def raw_params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_repo_params_parse():
    params = load_params(ROOT / "params.yaml")
    assert params.dataset == "synth"
    assert params.model in params.models
    assert params.train.steps > 0 and params.train.batch_size > 0
    assert params.storage.format == "webdataset"
    assert params.render.scene_ids
    assert params.run_dir() == Path("data/runs/synth") / params.model


def test_overrides_use_the_dvc_grammar(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    params = load_params(path, ["train.steps=7", "render.scene_ids=[3, 4]", "storage.format=zarr"])
    assert params.train.steps == 7
    assert params.render.scene_ids == [3, 4]
    assert params.storage.format == "zarr"


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.stepz=3", "train.stepz"),
        ("train.steps=many", "train.steps: expected an integer"),
        ("storage.format=parquet", "storage.format"),
        ("model=no_such_model", "unknown model 'no_such_model'"),
        ("dataset=nowhere", "unknown dataset 'nowhere'"),
    ],
)
def test_bad_keys_name_the_key(tmp_path, override, message):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text())
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        load_params(path, [override])


def test_unknown_key_inside_a_section_is_reported_with_its_path():
    raw = raw_params()
    raw["train"]["lerning_rate"] = 1.0
    with pytest.raises(ConfigError, match=r"train: unknown key\(s\) lerning_rate"):
        parse_params(raw)
    raw = raw_params()
    raw["datasets"]["synth"]["imag"] = {}
    with pytest.raises(ConfigError, match=r"datasets.synth: unknown key\(s\) imag"):
        parse_params(raw)


def test_malformed_yaml_names_the_file(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="params.yaml: not valid YAML"):
        load_params(path)


def test_numbers_are_coerced_but_not_from_bools():
    cfg = build(TrainConfig, {"lr": 1, "steps": 5}, "train")
    assert isinstance(cfg.lr, float) and cfg.lr == 1.0
    with pytest.raises(ConfigError, match="train.steps"):
        build(TrainConfig, {"steps": True}, "train")


def test_outputs_place_shards_index_and_runs():
    raw = raw_params()
    params = parse_params(raw)
    assert (params.shards_dir(), params.index_path(), params.run_dir(), params.raw_dir()) == (
        Path("data/shards/synth"), Path("data/index/synth.json"), Path("data/runs/synth/slot_attention"),
        Path("data/raw/synth"))
    params = parse_params({**raw, "outputs": "data/my-suite"})
    assert params.shards_dir() == Path("data/my-suite/shards/synth") and params.raw_dir() == Path("data/raw/synth")
    for bad in ("/abs", "../up", "data/raw/x", "", 3):
        with pytest.raises(ConfigError, match="outputs"):
            parse_params({**raw, "outputs": bad})


def test_image_model_resolution_follows_the_dataset():
    """Slot Attention declares its resolution a data input: the dataset's image size fills it."""
    from objdisc.pipeline import config

    raw = raw_params()
    assert "resolution" not in raw["models"]["slot_attention"]
    for dataset in ("synth", "clevrtex", "tetrominoes"):
        params = parse_params({**raw, "dataset": dataset})
        size = params.data.image.size
        assert params.data_inputs["image_size"] == size
        assert config(params).hw == (size, size)
    params = parse_params({**raw, "dataset": "synth", "model": "osrt"})
    assert not hasattr(config(params), "resolution")  # 3D models take any view size
    raw["models"]["slot_attention"]["resolution"] = 64
    with pytest.raises(ConfigError, match=r"models.slot_attention.resolution is 64 but the data's image_size is 32"):
        config(parse_params({**raw, "dataset": "synth"}))
    assert config(parse_params({**raw, "dataset": "multi-dsprites"})).resolution == 64


def test_model_train_overrides_apply_to_that_model_only():
    raw = raw_params()
    raw["models"]["osrt"]["train"] = {"batch_size": 6, "lr": 1e-4}
    params = parse_params({**raw, "model": "osrt"})
    assert params.training.batch_size == 6 and params.training.lr == 1e-4
    assert params.training.steps == params.train.steps
    assert "train" not in params.model_options
    params = parse_params({**raw, "model": "slot_attention"})
    assert params.training.batch_size == params.train.batch_size
    raw["models"]["osrt"]["train"] = {"batchsize": 6}
    with pytest.raises(ConfigError, match="models.osrt.train: unknown key"):
        parse_params({**raw, "model": "slot_attention"})


def test_plain_turns_a_model_config_into_what_a_weights_only_checkpoint_holds(tmp_path):
    import torch

    from objdisc.models.slot_attention import SlotAttentionConfig

    cfg = SlotAttentionConfig(resolution=(32, 48), num_slots=5)
    record = plain(cfg)
    assert record["resolution"] == [32, 48] and record["num_slots"] == 5
    assert plain({"a": (1, (2, 3)), "b": [TrainConfig()]})["a"] == [1, [2, 3]]
    assert plain({"b": [TrainConfig()]})["b"][0]["lr"] == TrainConfig().lr
    torch.save({"config": record}, tmp_path / "c.pt")
    assert torch.load(tmp_path / "c.pt", weights_only=True)["config"] == record
    assert SlotAttentionConfig(**record).hw == (32, 48)  # and it builds the same config again
