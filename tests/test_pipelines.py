"""pipelines/<suite>/: the paper reproductions and the table suites. Each suite's params parse with
the root schema and hold the papers' settings, its dvc.yaml mirrors the root pipeline (less synth)
with every declared parameter present (table suites: as matrix stages per training set, then the
table), the table suites list every 2D model, no two pipelines declare the same output, and DVC
loads them all."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from objdisc.config import build, load_params
from objdisc.data.sources import SOURCES
from objdisc.data.views import PRESETS as VIEW_PRESETS
from objdisc.data.views import ViewsConfig
from objdisc.models import MODELS, model_config
from objdisc.models.family import VIEWS
from objdisc.train.schedule import lr_factor

from .conftest import ROOT

PIPELINES = ROOT / "pipelines"
# Suites whose dvc.yaml mirrors the root pipeline (one run), and table suites (matrix stages,
# objdisc/benchmark.py). clevr-benchmark is a part of clevrtex-benchmark (its CLEVR rows).
SINGLE = ["slot-attention-clevr6", "srt-nmr", "srt-msn", "osrt-msn-hard", "obsurf-clevr3d"]
TABLES = ["clevrtex-benchmark", "zoo-sprites", "zoo-synth"]
SUITES = SINGLE + TABLES
PARTS = {"clevr-benchmark": "clevrtex-benchmark"}
# The params files that hold a paper's settings (each parses at its paper preset).
PAPERS = ["slot-attention-clevr6", "clevrtex-benchmark", "clevr-benchmark", "srt-nmr", "srt-msn", "osrt-msn-hard", "obsurf-clevr3d"]
ZOO = {"zoo-sprites": "sprites", "zoo-synth": "synth"}
# suite → (model, preset, dataset, the reference loader's views preset or None for 2D)
EXPECTED = {
    "slot-attention-clevr6": ("slot_attention", "clevr6", "clevr-with-masks", None),
    "clevrtex-benchmark": ("slot_attention", "benchmark", "clevrtex", None),
    "clevr-benchmark": ("slot_attention", "benchmark", "clevr-with-masks", None),
    "srt-nmr": ("srt", "nmr", "nmr", "nmr"),
    "srt-msn": ("srt", "msn", "msn", "msn"),
    "osrt-msn-hard": ("osrt", "msn-hard", "msn-hard", "msn-hard"),
    "obsurf-clevr3d": ("obsurf", "clevr3d", "clevr3d", "clevr3d-obsurf"),
}
# The reference optimisation (SA paper; srt/osrt/obsurf configs; clevrtex experiments/slota.py).
SCHEDULES = {
    "slot-attention-clevr6": dict(steps=500_000, batch_size=64, lr=4e-4, warmup_steps=10_000, decay_steps=100_000, decay_rate=0.5, grad_clip=0.0),
    "clevrtex-benchmark": dict(steps=500_000, batch_size=32, lr=4e-4, warmup_steps=10_000, decay_steps=100_000, decay_rate=0.5, grad_clip=0.0),
    "clevr-benchmark": dict(steps=500_000, batch_size=32, lr=4e-4, warmup_steps=10_000, decay_steps=100_000, decay_rate=0.5, grad_clip=0.0),
    "srt-nmr": dict(steps=3_000_000, batch_size=256, lr=1e-4, warmup_steps=2500, decay_steps=4_000_000, decay_rate=0.16, grad_clip=0.0),
    "srt-msn": dict(steps=4_000_000, batch_size=256, lr=1e-4, warmup_steps=2500, decay_steps=4_000_000, decay_rate=0.16, grad_clip=0.0),
    "osrt-msn-hard": dict(steps=750_000, batch_size=256, lr=1e-4, warmup_steps=10_000, decay_steps=4_000_000, decay_rate=0.16, grad_clip=0.0),
    "obsurf-clevr3d": dict(steps=1_000_000, batch_size=64, lr=4e-4, warmup_steps=0, decay_steps=100_000, decay_rate=0.5, grad_clip=1.0),
}
ROOT_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def make():
    """pipelines/make.py as a module (it is a script, not part of the package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("make", PIPELINES / "make.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def suite_files(suite: str) -> tuple[dict, dict]:
    """The suite's dvc.yaml as pipelines/make.py makes it, and its params."""
    return (
        yaml.safe_load(make().render(suite)),
        yaml.safe_load((PIPELINES / suite / "params.yaml").read_text()),
    )


def resolve(value, params: dict):
    """DVC's ${key} interpolation, for the keys the pipelines use."""
    if isinstance(value, str):
        return re.sub(r"\$\{(\w+)\}", lambda m: str(params[m.group(1)]), value)
    if isinstance(value, list):
        return [resolve(v, params) for v in value]
    if isinstance(value, dict):
        return {resolve(k, params): resolve(v, params) for k, v in value.items()}
    return value


def lookup(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"no key {dotted}"
        node = node[part]
    return node


def expand(stages: dict) -> dict:
    """DVC's ``foreach`` stages as one stage per item (``generate@synth``, ...)."""
    out = {}
    for name, stage in stages.items():
        if "foreach" not in stage:
            out[name] = stage
            continue
        for item in stage["foreach"]:
            text = yaml.safe_dump(stage["do"]).replace("${item}", item)
            out[f"{name}@{item}"] = yaml.safe_load(text)
    return out


def out_paths(stages: dict) -> list[str]:
    return [next(iter(o)) if isinstance(o, dict) else o for stage in stages.values() for o in stage.get("outs", [])]


def test_every_suite_is_listed():
    found = sorted(p.parent.name for p in PIPELINES.glob("*/params.yaml"))
    assert found == sorted(SUITES + list(PARTS))
    assert make().suites() == sorted(SUITES) and make().parts() == PARTS
    for suite in found:
        assert (PIPELINES / suite / "params.yaml").is_file() and (PIPELINES / suite / "README.md").is_file()


@pytest.mark.parametrize("suite", PAPERS)
def test_params_parse_at_the_paper_preset(suite):
    params = load_params(PIPELINES / suite / "params.yaml")
    model, preset, dataset, _ = EXPECTED[suite]
    assert (params.model, params.dataset) == (model, dataset)
    assert params.data.source == dataset and dataset in SOURCES  # dataset keys are source names
    assert params.model_options == {"preset": preset}
    assert preset in MODELS[model].presets
    cfg = model_config(model, params.model_options, params.data_inputs)
    assert cfg == MODELS[model].presets[preset]
    # The benchmark evaluates its ClevrTex runs on OOD and CAMO too (evaluation-only datasets).
    extra = {"clevrtex-outd", "clevrtex-camo"} if suite == "clevrtex-benchmark" else set()
    assert set(params.datasets) == {dataset} | extra and model in params.models
    # The benchmark suites hold every model's benchmark preset (the row is chosen with -S model=...).
    for other, block in params.models.items():
        assert block.get("preset") in MODELS[other].presets, (other, block)


@pytest.mark.parametrize("suite", PAPERS)
def test_views_and_crops_follow_the_reference_loaders(suite):
    params = load_params(PIPELINES / suite / "params.yaml")
    model, _, _, views_preset = EXPECTED[suite]
    if MODELS[model].model.family is VIEWS:
        assert views_preset is not None and not params.raw["datasets"][params.dataset].get("image")
        assert build(ViewsConfig, params.data.views, "views") == VIEW_PRESETS[views_preset]
    else:
        assert views_preset is None and not params.data.views
        cfg = model_config(model, params.model_options, params.data_inputs)
        assert params.data.image.size == cfg.resolution == 128
        if suite == "slot-attention-clevr6":  # the SA / IODINE off-centre crop, CLEVR6 split
            assert params.data.image.crop == [29, 221, 64, 256] and params.data.image.center_crop is None
            assert params.data.options == {"split_convention": "slot_attention", "max_objects": 6}
        else:  # the ClevrTex benchmark's centre crop, 11 slots
            assert params.data.image.center_crop == 0.8 and params.data.image.crop is None
            expected = {"split_convention": "clevrtex"} if suite == "clevr-benchmark" else {"variant": "full"}
            assert params.data.options == expected and cfg.num_slots == 11
        if suite == "clevrtex-benchmark":  # OOD and CAMO: the same crop and size, their own variant
            for name, variant in (("clevrtex-outd", "outd"), ("clevrtex-camo", "camo")):
                data = params.datasets[name]
                assert data.source == "clevrtex" and data.options == {"variant": variant}
                assert data.image == params.data.image


@pytest.mark.parametrize("suite", PAPERS)
def test_paper_optimisation(suite):
    train = load_params(PIPELINES / suite / "params.yaml").train
    for key, value in SCHEDULES[suite].items():
        assert getattr(train, key) == pytest.approx(value), key
    assert train.ema_decay == 0.0 and train.weight_decay == 0.0  # no EMA, no weight decay in the papers
    assert train.precision == "fp32"  # no mixed precision in the references


@pytest.mark.parametrize("suite", ["srt-nmr", "srt-msn", "osrt-msn-hard"])
def test_srt_schedule_differs_from_the_reference_by_a_constant_after_warmup(suite):
    """The reference: 1e-4·it/W during warm-up, then 1e-4·0.16^((it − W)/4M). Ours has the exponent
    counted from 0, so after warm-up the ratio is the constant 0.16^(W/4M) (> 0.995) quoted in params."""
    t = load_params(PIPELINES / suite / "params.yaml").train
    for step in (0, t.warmup_steps // 2, t.warmup_steps - 1):
        assert lr_factor(step, t.warmup_steps, t.decay_steps, t.decay_rate) == pytest.approx(
            step / t.warmup_steps * t.decay_rate ** (step / t.decay_steps)
        )
    ratio = t.decay_rate ** (t.warmup_steps / t.decay_steps)
    for step in (t.warmup_steps, 1_000_000, 4_000_000):
        ours = lr_factor(step, t.warmup_steps, t.decay_steps, t.decay_rate)
        reference = t.decay_rate ** ((step - t.warmup_steps) / t.decay_steps)
        assert ours / reference == pytest.approx(ratio, rel=1e-9)
    assert 0.995 < ratio < 1.0
    assert f"{ratio:.5f}" in (PIPELINES / suite / "params.yaml").read_text()


def test_ema_decay_zero_means_the_weights_themselves():
    """The suites set ema_decay 0 for 'no EMA': torch-ema then tracks the raw weights exactly."""
    from torch_ema import ExponentialMovingAverage

    layer = torch.nn.Linear(3, 2)
    ema = ExponentialMovingAverage(layer.parameters(), decay=0.0)
    for _ in range(3):
        with torch.no_grad():
            layer.weight.add_(torch.randn_like(layer.weight))
        ema.update()
    current = layer.weight.detach().clone()
    with ema.average_parameters():
        assert torch.equal(layer.weight, current)


def test_suites_are_made_on_demand(tmp_path):
    """No suite's dvc.yaml is committed (never-run suites would break a bare `dvc pull`); make.py
    writes one on request, and --check flags a made one that the root pipeline has moved past."""
    tracked = subprocess.run(["git", "ls-files", "pipelines"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert not [f for f in tracked if f.endswith("dvc.yaml")]
    copy = tmp_path / "repo"
    (copy / "pipelines" / "srt-nmr").mkdir(parents=True)
    shutil.copy(ROOT / "dvc.yaml", copy / "dvc.yaml")
    shutil.copy(PIPELINES / "make.py", copy / "pipelines" / "make.py")
    shutil.copy(PIPELINES / "srt-nmr" / "params.yaml", copy / "pipelines" / "srt-nmr" / "params.yaml")
    run = lambda *a: subprocess.run([sys.executable, str(copy / "pipelines" / "make.py"), *a], capture_output=True, text=True)  # noqa: E731
    assert run("srt-nmr").returncode == 0 and (copy / "pipelines/srt-nmr/dvc.yaml").exists()
    assert run("--check").returncode == 0
    root = (copy / "dvc.yaml").read_text()
    (copy / "dvc.yaml").write_text(root.replace("      - objdisc/train\n", "      - objdisc/train\n      - objdisc/new.py\n", 1))
    assert run("--check").returncode == 1
    assert run("nope").returncode == 2


@pytest.mark.parametrize("suite", SINGLE)
def test_dvc_yaml_mirrors_the_root_pipeline(suite):
    stages, params = suite_files(suite)
    params_file = f"pipelines/{suite}/params.yaml"
    assert list(stages["stages"]) == [name for name in ROOT_STAGES if name != "generate"]
    for name, stage in stages["stages"].items():
        root = ROOT_STAGES[name]
        assert stage["wdir"] == "../.."
        assert stage["cmd"] == f"{root['cmd']} {params_file}"
        assert stage["deps"] == root["deps"]
        assert stage["outs"] == root["outs"]
        # One params entry, this suite's file; every key it declares exists there.
        [entry] = stage["params"]
        [(path, keys)] = entry.items()
        assert path == params_file
        for key in resolve(keys, params):
            lookup(params, key)
    for section in ("metrics", "plots"):  # top level: relative to this folder, not to wdir
        assert yaml.safe_dump(stages[section]).count("../../${outputs}/runs/${dataset}/${model}/") >= 2


@pytest.mark.parametrize("suite", SINGLE)
def test_stages_declare_what_they_read(suite):
    """train/evaluate/render read the dataset's whole block (image or views, splits, num_slots);
    a change to any of it must re-run them."""
    stages, params = suite_files(suite)
    declared = {name: set(next(iter(s["params"][0].values()))) for name, s in stages["stages"].items()}
    assert {"dataset", "datasets.${dataset}.source", "datasets.${dataset}.options", "storage"} <= declared["convert"]
    assert {"seed", "model", "models.${model}", "train", "datasets.${dataset}"} <= declared["train"]
    for name in ("evaluate", "render"):
        assert {"dataset", "model", "datasets.${dataset}", "evaluate" if name == "evaluate" else "evaluate.split",
                "train.device"} <= declared[name]
    assert "render" in declared["render"]


def expand_matrix(stages: dict, params: dict) -> dict:
    """A table suite's matrix stages as one stage per item (``train-clevrtex@gnm-0``, ...), with
    ``${table.models}`` and ``${seeds}`` taken from the suite's params, as DVC names them."""
    import itertools

    out = {}
    for name, stage in stages.items():
        if "matrix" not in stage:
            out[name] = stage
            continue
        axes = {}
        for key, values in stage["matrix"].items():
            if isinstance(values, str):
                values = lookup(params, values[2:-1])
            axes[key] = values
        body = {k: v for k, v in stage.items() if k != "matrix"}
        for combo in itertools.product(*axes.values()):
            text = yaml.safe_dump(body)
            for key, value in zip(axes, combo):
                text = text.replace("${item.%s}" % key, str(value))
            out[f"{name}@{'-'.join(str(v) for v in combo)}"] = yaml.safe_load(text)
    return out


def suite_outputs(suite: str) -> list[str]:
    stages, params = suite_files(suite)
    return out_paths(resolve(expand_matrix(stages["stages"], params), params))


def test_no_two_pipelines_declare_the_same_output():
    """DVC refuses a repository where two stages share an output or one output holds another, so
    this must hold for the default pipeline at every dataset and model it can be switched to
    (`dvc exp run -S dataset=clevrtex` beside pipelines/clevrtex-benchmark), and for every row of
    the table suites."""
    root_params = yaml.safe_load((ROOT / "params.yaml").read_text())
    suites: dict[str, str] = {}
    for suite in SUITES:
        _, params = suite_files(suite)
        assert params["outputs"] == f"data/{suite}"
        outs = suite_outputs(suite)
        assert len(outs) == len(set(outs)), suite
        for out in outs:
            for other, owner in suites.items():
                assert not (out == other or out.startswith(other + "/") or other.startswith(out + "/")), (
                    f"{suite}: {out} overlaps {other} of {owner}"
                )
        for out in outs:
            suites[out] = suite
    for dataset in root_params["datasets"]:
        for model in root_params["models"]:
            for out in out_paths(resolve(expand(ROOT_STAGES), {**root_params, "dataset": dataset, "model": model})):
                for other, owner in suites.items():
                    assert not (out == other or out.startswith(other + "/") or other.startswith(out + "/")), (
                        f"dvc.yaml at dataset={dataset} model={model}: {out} overlaps {other} of {owner}"
                    )


@pytest.mark.parametrize("suite", SINGLE)
def test_readme_names_layout_command_and_number(suite):
    text = (PIPELINES / suite / "README.md").read_text()
    params = load_params(PIPELINES / suite / "params.yaml")
    assert f"dvc repro pipelines/{suite}/dvc.yaml" in text
    assert f"data/raw/{params.dataset}/" in text
    assert f"{params.run_dir().as_posix()}/eval/metrics.json" in text
    assert params.run_dir() == Path(f"data/{suite}/runs/{params.dataset}/{params.model}")
    assert "Hardware" in text and "Compare" in text


# ----------------------------------------------------------------------------- table suites

IMAGE_MODELS = sorted(name for name, entry in MODELS.items() if entry.model.family.name == "image")


@pytest.mark.parametrize("suite", TABLES)
def test_table_suites_list_every_2d_model(suite):
    """Every 2D model of the registry is a row of every table suite."""
    from objdisc.benchmark import table_config

    table, seeds = table_config(load_params(PIPELINES / suite / "params.yaml"))
    assert sorted(table.models) == IMAGE_MODELS
    assert seeds == ([0, 1, 2] if suite == "clevrtex-benchmark" else [0])


@pytest.mark.parametrize("suite", TABLES)
def test_every_row_has_its_block_in_each_training_set(suite):
    """Each row's model has a block (at a known preset) in the params file of every training set
    of the suite: clevrtex-benchmark's for ClevrTex, clevr-benchmark's for the CLEVR rows."""
    from objdisc.benchmark import table_config, training_params

    params = load_params(PIPELINES / suite / "params.yaml")
    table, _ = table_config(params)
    missing = {}
    for train in table.training_sets():
        file = table.params.get(train, f"pipelines/{suite}/params.yaml")
        models = yaml.safe_load((ROOT / file).read_text())["models"]
        missing.update({f"{file}: models.{m}": "missing" for m in table.models if m not in models})
    assert not missing, sorted(missing)
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        bases = training_params(params, table)
    finally:
        os.chdir(cwd)
    for train, base in bases.items():
        for model in table.models:
            block = {k: v for k, v in base.models[model].items() if k != "train"}
            assert block.get("preset") is None or block["preset"] in MODELS[model].presets, (train, model)
            model_config(model, block, base.data_inputs)
        assert "{seed}" in base.run_folder and base.outputs == f"data/{suite}"
        assert base.raw["evaluate"]["dataset"] is None  # the key the evaluate stages override


def test_clevrtex_benchmark_is_table_2():
    from objdisc.benchmark import PUBLISHED, table_config

    params = load_params(PIPELINES / "clevrtex-benchmark" / "params.yaml")
    table, _ = table_config(params)
    assert [(c.name, c.train, c.evaluate) for c in table.columns] == [
        ("CLEVR", "clevr-with-masks", "clevr-with-masks"), ("ClevrTex", "clevrtex", "clevrtex"),
        ("OOD", "clevrtex", "clevrtex-outd"), ("CAMO", "clevrtex", "clevrtex-camo")]
    assert table.params == {"clevr-with-masks": "pipelines/clevr-benchmark/params.yaml"}
    assert table.metrics == ["miou", "fg_ari", "mse_sum"] and table.published == "clevrtex-table2"
    assert "UNVERIFIED" in PUBLISHED["clevrtex-table2"]["source"]
    # The paper's ten models have published CLEVR and ClevrTex values; SLATE (not in the paper) none.
    for column in ("CLEVR", "ClevrTex"):
        assert sorted(PUBLISHED["clevrtex-table2"]["values"][column]) == sorted(set(IMAGE_MODELS) - {"slate"})


@pytest.mark.parametrize("suite", sorted(ZOO))
def test_zoo_suites_run_the_models_as_params_yaml_does(suite):
    """The CPU table trains every model exactly as the default pipeline and benchmarks/zoo.py do:
    params.yaml's models blocks (where it has one: the zoo engineers add theirs there first), its
    train block and its dataset block."""
    root = yaml.safe_load((ROOT / "params.yaml").read_text())
    own = yaml.safe_load((PIPELINES / suite / "params.yaml").read_text())
    dataset = ZOO[suite]
    assert own["dataset"] == dataset and own["datasets"] == {dataset: root["datasets"][dataset]}
    assert own["train"] == root["train"]
    for model in IMAGE_MODELS:
        if model in root["models"]:
            assert own["models"][model] == root["models"][model], (
                f"pipelines/{suite}/params.yaml: models.{model} differs from params.yaml's; copy it"
            )
        else:
            assert own["models"][model].get("preset") == "cpu"


@pytest.mark.parametrize("suite", TABLES)
def test_table_suite_dvc_yaml_is_a_matrix_per_training_set(suite):
    """Per dataset convert and index; per training set train and evaluate matrix stages whose rows
    pass dataset/model/seed on the command line and declare only their model's block; evaluations
    in eval-<set>/ of runs with the seed in their folder; the table from the runs."""
    stages, params = suite_files(suite)
    stages = stages["stages"]
    table = params["table"]
    trains = list(dict.fromkeys(c["train"] for c in table["columns"]))
    sets = list(dict.fromkeys(d for c in table["columns"] for d in (c["train"], c["evaluate"])))
    assert list(stages) == [f"convert-{d}" for d in sets] + [f"index-{d}" for d in sets] + [
        f"{step}-{t}" for t in trains for step in ("train", "evaluate")] + ["aggregate"]
    for t in trains:
        file = table.get("params", {}).get(t, f"pipelines/{suite}/params.yaml")
        own = yaml.safe_load((ROOT / file).read_text())
        run = f"{own['outputs']}/runs/{t}/${{item.model}}/seed${{item.seed}}"
        train, ev = stages[f"train-{t}"], stages[f"evaluate-{t}"]
        assert train["matrix"] == {"model": "${table.models}", "seed": "${seeds}"}
        assert ev["matrix"] == {"model": "${table.models}", "seed": "${seeds}",
                                "data": [c["evaluate"] for c in table["columns"] if c["train"] == t]}
        assert train["cmd"] == f"python stages/train.py {file} dataset={t} model=${{item.model}} seed=${{item.seed}}"
        assert ev["cmd"].endswith("evaluate.dataset=${item.data}")
        assert train["params"] == [{file: ["models.${item.model}", f"datasets.{t}", "train"]}]
        assert ev["params"] == [{file: ["datasets.${item.data}", "evaluate", "train.device"]}]
        assert [next(iter(o)) for o in train["outs"]] == [f"{run}/checkpoints", f"{run}/live", f"{run}/model.pt"]
        assert all(o.startswith(f"{run}/eval-${{item.data}}/") for o in ev["outs"])
        assert f"{run}/model.pt" in ev["deps"] and f"{own['outputs']}/index/${{item.data}}.json" in ev["deps"]
        for key in ("models.slot_attention", f"datasets.{t}", "train", "evaluate", "train.device"):
            lookup(own, key)
        for d in [t, *ev["matrix"]["data"]]:
            assert f"datasets.{d}.source" in stages[f"convert-{d}"]["params"][0][file]
            lookup(own, f"datasets.{d}.options")
    aggregate = stages["aggregate"]
    assert aggregate["params"] == [{f"pipelines/{suite}/params.yaml": ["seeds", "table"]}]
    assert f"data/{suite}/runs" in aggregate["deps"]
    assert f"data/{suite}/table/table.md" in aggregate["outs"]


def test_table_suite_rows_expand_as_dvc_names_them():
    stages, params = suite_files("clevrtex-benchmark")
    names = set(expand_matrix(stages["stages"], params))
    assert "train-clevrtex@gnm-2" in names and "train-clevr-with-masks@slot_attention-0" in names
    assert "evaluate-clevrtex@monet-1-clevrtex-outd" in names and "evaluate-clevr-with-masks@spair-0-clevr-with-masks" in names
    assert len([n for n in names if n.startswith("evaluate-")]) == 11 * 3 * 4
    assert len([n for n in names if n.startswith("train-")]) == 11 * 3 * 2


def test_a_part_is_made_with_its_suite(tmp_path):
    result = subprocess.run([sys.executable, str(PIPELINES / "make.py"), "clevr-benchmark"], capture_output=True, text=True)
    assert result.returncode == 2 and "part of the table suite clevrtex-benchmark" in result.stderr


@pytest.mark.parametrize("suite", TABLES)
def test_table_readme_names_command_layout_and_table(suite):
    text = (PIPELINES / suite / "README.md").read_text()
    params = load_params(PIPELINES / suite / "params.yaml")
    assert f"python pipelines/make.py {suite}" in text and f"dvc repro pipelines/{suite}/dvc.yaml" in text
    assert f"data/{suite}/table/table.md" in text and f"-S 'pipelines/{suite}/params.yaml:seeds=[" in text
    assert params.run_dir() == Path(f"data/{suite}/runs/{params.dataset}/{params.model}/seed0")
    assert f"{params.run_dir().as_posix()}/eval-{params.dataset}/metrics.json" in text
    for dataset in params.datasets:
        assert f"data/raw/{dataset}" in text


@pytest.mark.slow
def test_dvc_loads_every_pipeline(tmp_path):
    """With every suite made, `dvc stage list --all --fail` parses and interpolates every dvc.yaml;
    `dvc dag` builds the repository's graph, which fails on an output declared twice."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True).stdout.split()
    repo = tmp_path / "repo"
    for name in files:
        if (ROOT / name).is_file() and not name.startswith(("tests/", "benchmarks/")):
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, repo / name)
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([sys.executable, "pipelines/make.py", *SUITES], cwd=repo, check=True, capture_output=True)

    def dvc(*args: str) -> str:
        result = subprocess.run(["dvc", *args], cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"dvc {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result.stdout

    listed = set(dvc("stage", "list", "--all", "--fail", "--name-only").split())
    for suite in SINGLE:
        for name in ("convert", "index", "train", "evaluate", "render"):
            assert f"pipelines/{suite}/dvc.yaml:{name}" in listed
    for suite in TABLES:
        stages, params = suite_files(suite)
        for name in expand_matrix(stages["stages"], params):
            assert f"pipelines/{suite}/dvc.yaml:{name}" in listed, (suite, name)
    dag = dvc("dag", "--md")
    for suite in SINGLE:
        assert f"pipelines/{suite}/dvc.yaml:train" in dag, suite
    for suite in TABLES:
        assert f"pipelines/{suite}/dvc.yaml:aggregate" in dag, suite
