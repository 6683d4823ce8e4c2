"""Suite-wide settings: one torch thread per test process (small convolutions on a shared 2-core
machine are far slower with two competing threads), and the `tf` marker's skip when TensorFlow is
missing."""

import importlib.util

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("tensorflow") is not None:
        return
    skip = pytest.mark.skip(reason="needs the tf extra (scripts/setup tf)")
    for item in items:
        if "tf" in item.keywords:
            item.add_marker(skip)
