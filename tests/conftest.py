"""Shared fixtures: real pretrained models, built once per test session."""

import atexit
import os
import shutil
import tempfile

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# Point torchvision at an empty cache, so weights a developer downloaded earlier do not change which
# catalogue entries the tests see as untrained. Tests that need a cached file write one here.
TORCH_HOME = tempfile.mkdtemp(prefix="pruning-tests-torch-home-")
os.environ["TORCH_HOME"] = TORCH_HOME
atexit.register(shutil.rmtree, TORCH_HOME, ignore_errors=True)

import pytest
import torch

from pruning.catalog import get_model_entry
from pruning.explorer import analyse_entry


@pytest.fixture(scope="session", autouse=True)
def _fixed_threads():
    # Two threads match the smallest machines this runs on and keep timings comparable.
    torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def mobilenet():
    return get_model_entry("mobilenet_v2").build()


@pytest.fixture(scope="session")
def hed():
    return get_model_entry("hed").build()


@pytest.fixture(scope="session")
def base_models(mobilenet, hed):
    return {"mobilenet_v2": mobilenet, "hed": hed}


@pytest.fixture(scope="session")
def mobilenet_l1(mobilenet):
    return analyse_entry(get_model_entry("mobilenet_v2"), mobilenet, "l1")


def state_snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Clone every parameter and buffer, to prove later that nothing changed."""
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def assert_same_state(model: torch.nn.Module, snapshot: dict[str, torch.Tensor]) -> None:
    state = model.state_dict()
    assert state.keys() == snapshot.keys()
    for name, tensor in snapshot.items():
        assert torch.equal(state[name], tensor), f"{name} changed"
