import pytest

from objdisc.train.schedule import lr_factor


def test_warmup_then_exponential_decay():
    assert lr_factor(0, 10, 100, 0.5) == 0.0
    assert lr_factor(5, 10, 100, 0.5) == pytest.approx(0.5 * 0.5 ** 0.05)
    assert lr_factor(100, 10, 100, 0.5) == pytest.approx(0.5)
    assert lr_factor(200, 10, 100, 0.5) == pytest.approx(0.25)
    assert lr_factor(7, 0, 0, 0.5) == 1.0
