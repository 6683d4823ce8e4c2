import pytest

from objdisc.train.schedule import lr_factor


def test_warmup_then_exponential_decay():
    assert lr_factor(0, 10, 100, 0.5) == 0.0
    assert lr_factor(5, 10, 100, 0.5) == pytest.approx(0.5 * 0.5 ** 0.05)
    assert lr_factor(100, 10, 100, 0.5) == pytest.approx(0.5)
    assert lr_factor(200, 10, 100, 0.5) == pytest.approx(0.25)
    assert lr_factor(7, 0, 0, 0.5) == 1.0


def test_anneal_kinds_at_given_steps():
    from objdisc.train.schedule import Anneal, at

    lin = Anneal.linear(1.0, 0.5, 1000, 20000)  # GNM's τ_pres
    assert [lin(s) for s in (0, 1000, 10500, 20000, 50000)] == pytest.approx([1.0, 1.0, 0.75, 0.5, 0.5])
    itr_lin = Anneal.linear(1e-4, 0.99, 0, 10000)  # the ClevrTex benchmark's itr_lin(10000, 1e-4, .99)
    assert itr_lin(5000) == pytest.approx((1e-4 + 0.99) / 2)
    cos = Anneal.cosine(1.0, 0.1, 0, 30000)  # SLATE's Gumbel temperature
    assert [cos(0), cos(15000), cos(30000)] == pytest.approx([1.0, 0.55, 0.1])
    exp = Anneal.exp(0.1, 0.001, 0, 4000)
    assert exp(2000) == pytest.approx(0.01)
    steps = Anneal.steps(1.0, (250, 400), 0.1)  # DTI-Sprites' step-downs
    assert [steps(249), steps(250), steps(400)] == pytest.approx([1.0, 0.1, 0.01])
    assert at(0.3, 123) == 0.3 and at(Anneal.constant(2.0), 5) == 2.0


def test_anneal_from_params_and_bad_values():
    from objdisc.config import ConfigError, build
    from objdisc.train.schedule import Anneal

    from dataclasses import dataclass

    @dataclass
    class Cfg:
        tau: float | Anneal = 1.0

    assert build(Cfg, {"tau": 0.5}, "m").tau == 0.5
    got = build(Cfg, {"tau": {"kind": "linear", "start": 1.0, "end": 0.5, "begin": 0, "until": 10}}, "m").tau
    assert got == Anneal.linear(1.0, 0.5, 0, 10) and got(5) == pytest.approx(0.75)
    with pytest.raises(ConfigError, match="m.tau"):
        build(Cfg, {"tau": {"kind": "wobble"}}, "m")
    with pytest.raises(ValueError, match="until"):
        Anneal.linear(1.0, 0.0, 10, 5)
