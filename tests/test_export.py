"""Exports reload to the same outputs, and checkpoints never run code."""

import io
import json
import pickle

import numpy as np
import pytest
import torch

from pruning.catalog import get_model_entry
from pruning.explorer import PruneConfig, prune
from pruning.export import (
    CheckpointError,
    config_from_recipe,
    export,
    load_checkpoint,
    load_state,
    rebuild,
    recipe,
    run_onnx,
)
from pruning.tasks import infer

CONFIG = PruneConfig("mobilenet_v2", 0.4, criterion="l2", allocation="global", round_to=8)


@pytest.fixture(scope="module")
def pruned(mobilenet):
    return prune(mobilenet, CONFIG).model


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))


def test_torchscript_reloads_same_outputs(pruned, inputs, tmp_path):
    path = export(pruned, CONFIG, "torchscript", tmp_path / "model.pt")
    loaded = torch.jit.load(str(path))
    assert torch.allclose(loaded(inputs), infer(pruned, inputs), atol=1e-5)


def test_onnx_matches_torch(pruned, inputs, tmp_path):
    path = export(pruned, CONFIG, "onnx", tmp_path / "model.onnx")
    result = run_onnx(path, inputs)
    assert result.shape == (2, 1000)
    np.testing.assert_allclose(result, infer(pruned, inputs).numpy(), rtol=1e-3, atol=1e-4)


def test_state_reloads_same_outputs(pruned, inputs, tmp_path):
    path = export(pruned, CONFIG, "state", tmp_path / "model.zip")
    loaded, config = load_state(path)
    assert config == CONFIG
    assert torch.equal(infer(loaded, inputs), infer(pruned, inputs))


def test_recipe_rebuilds_identical_model(mobilenet, pruned, inputs):
    data = json.loads(json.dumps(recipe(CONFIG)))
    config = config_from_recipe(data)
    assert config == CONFIG
    assert torch.equal(infer(rebuild(config, mobilenet), inputs), infer(pruned, inputs))


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"format": "other"}, "not a Pruning Explorer recipe"),
        ({"format": "pruning-explorer-recipe", "version": 99}, "unsupported recipe version"),
        ({"format": "pruning-explorer-recipe", "version": 1, "config": {"model": "mobilenet_v2", "ratio": 2}}, "invalid ratio"),
        ({"format": "pruning-explorer-recipe", "version": 1, "config": {"model": "mobilenet_v2", "colour": 1}}, "invalid recipe config"),
    ],
)
def test_bad_recipe_rejected(data, message):
    with pytest.raises((ValueError, KeyError), match=message):
        config_from_recipe(data)


def test_valid_state_dict_loads_and_prunes(mobilenet):
    buffer = io.BytesIO()
    torch.save(mobilenet.state_dict(), buffer)
    model, problems = load_checkpoint("mobilenet_v2", buffer.getvalue())
    assert problems == []
    inputs = torch.randn(1, 3, 224, 224)
    assert torch.equal(infer(model, inputs), infer(mobilenet, inputs))
    assert prune(model, PruneConfig("mobilenet_v2", 0.3)).channel_reduction > 0.2


class CodePayload:
    """Pickling this object makes the unpickler call open() on a marker path."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_malicious_pickle_not_executed(tmp_path):
    marker = tmp_path / "pwned.txt"
    data = pickle.dumps({"features.0.0.weight": CodePayload(marker)})
    with pytest.raises(CheckpointError, match="rejected without running anything"):
        load_checkpoint("mobilenet_v2", data)
    assert not marker.exists()
    # the same bytes do run code under a plain unpickler: the test payload is real
    pickle.loads(data)
    assert marker.exists()


def test_whole_model_pickle_rejected(tmp_path):
    buffer = io.BytesIO()
    torch.save(torch.nn.Linear(2, 2), buffer)
    with pytest.raises(CheckpointError, match="objects other than tensors"):
        load_checkpoint("mobilenet_v2", buffer.getvalue())


def test_mismatched_checkpoint_lists_keys():
    entry = get_model_entry("mobilenet_v2")
    state = entry.build_untrained().state_dict()
    state.pop("classifier.1.bias")
    state["classifier.1.weight"] = torch.zeros(10, 1280)
    state["extra.weight"] = torch.zeros(1)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint("mobilenet_v2", buffer.getvalue())
    text = str(error.value)
    assert "missing key: classifier.1.bias" in text
    assert "unexpected key: extra.weight" in text
    assert "shape mismatch for classifier.1.weight: checkpoint (10, 1280), model (1000, 1280)" in text
