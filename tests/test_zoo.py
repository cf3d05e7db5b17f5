"""The whole catalogue: offline weights, torchvision's cache, segmentation, unsupported architectures, user checkpoints."""

import io
import json
import pickle

import pytest
import torch
from test_export import CodePayload

from pruning.catalog import TASK_SEGMENTATION, get_model_entry, list_models
from pruning.cli import main
from pruning.explorer import PruneConfig, prune
from pruning.export import CheckpointError, checkpoint_entry, load_checkpoint
from pruning.media import load_sample_image
from pruning.models import torchvision_models
from pruning.structured import StructuredPruningError
from pruning.tasks import compare_on_image, infer, prepare_input, top_k

OFFLINE_PRETRAINED = ["mobilenet_v2", "hed", "efficientnet_lite0", "digits_cnn"]
TORCHVISION = [name for name in list_models() if name not in OFFLINE_PRETRAINED]


def test_models_json_lists_every_entry(capsys):
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["name"] for row in rows] == list_models()
    for row in rows:
        assert set(row) >= {"name", "task", "pretrained", "weights_source"}
        assert row["task"] in {"classification", "edges", "segmentation"}
        assert row["weights_source"]
    pretrained = {row["name"] for row in rows if row["pretrained"]}
    assert pretrained == set(OFFLINE_PRETRAINED)  # the tests' torchvision cache is empty


@pytest.mark.parametrize("name", OFFLINE_PRETRAINED)
def test_offline_entry_loads(name):
    entry = get_model_entry(name)
    assert entry.pretrained
    model = entry.build()
    assert not model.training
    output = infer(model, entry.example_inputs())
    assert torch.isfinite(output).all()


def test_efficientnet_lite0_recognises_cat():
    entry = get_model_entry("efficientnet_lite0")
    top = top_k(entry, infer(entry.build(), prepare_input(entry, load_sample_image("chelsea"))))
    assert top[0][0] in {"tabby", "tiger cat", "Egyptian cat"}


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_entry_untrained_without_cache(name):
    entry = get_model_entry(name)
    assert not entry.pretrained
    assert entry.untrained_fallback
    assert entry.download is not None
    model = entry.build()  # must not download: the test machine has no internet, and nothing may try
    assert sum(p.numel() for p in model.parameters()) > 0
    assert entry.categories


def test_torchvision_cache_file_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    entry = get_model_entry("resnet18")
    assert not entry.pretrained
    torch.manual_seed(3)
    reference = entry.build_untrained().state_dict()
    path = torchvision_models.cache_path("resnet18")
    assert path.parent == tmp_path / "hub" / "checkpoints"
    path.parent.mkdir(parents=True)
    torch.save(reference, path)
    assert entry.pretrained
    loaded = entry.build().state_dict()
    for key, tensor in reference.items():
        assert torch.equal(loaded[key], tensor), key


@pytest.mark.parametrize("name", ["lraspp_mobilenet_v3_large", "deeplabv3_mobilenet_v3_large"])
def test_segmentation_prunes_and_compares(name):
    entry = get_model_entry(name)
    assert entry.task == TASK_SEGMENTATION
    base = entry.build()
    result = prune(base, PruneConfig(model=name, ratio=0.3))
    photo = load_sample_image("astronaut")
    comparison = compare_on_image(entry, base, result.model, photo)
    # the class map keeps the (capped) input size
    assert comparison.dense_output.shape[-2:] == prepare_input(entry, photo).shape[-2:]
    assert comparison.dense_output.shape[1] == len(entry.categories) == 21
    assert 0.0 <= comparison.fidelity["miou"] <= 1.0
    assert comparison.dense_image.size == comparison.pruned_image.size
    same = compare_on_image(entry, base, base, photo)
    assert same.fidelity["miou"] == 1.0
    assert same.fidelity["pixel_agreement"] == 1.0


def test_segmentation_tiny_input_scaled_up():
    entry = get_model_entry("lraspp_mobilenet_v3_large")
    inputs = prepare_input(entry, load_sample_image("astronaut").resize((5, 3)))
    assert min(inputs.shape[-2:]) >= 64
    assert infer(entry.build(), inputs).shape[-2:] == inputs.shape[-2:]


@pytest.mark.parametrize(("name", "step"), [("shufflenet_v2_x1_0", "trace"), ("regnet_y_400mf", "prune")])
def test_unsupported_architecture_clear_error(name, step):
    base = get_model_entry(name).build()
    with pytest.raises(StructuredPruningError, match=f"could not {step} .*masks mode"):
        prune(base, PruneConfig(model=name, ratio=0.3))
    masked = prune(base, PruneConfig(model=name, ratio=0.3, mode="unstructured"))
    assert masked.weight_sparsity > 0.2


def test_unsupported_architecture_cli_one_line(capsys):
    assert main(["prune", "--model", "shufflenet_v2_x1_0", "--ratio", "0.3", "--json"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "masks" in error


def _state_bytes(state) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def test_resnet18_state_dict_loads_and_prunes():
    from torchvision.models import resnet18

    torch.manual_seed(7)
    state = resnet18().state_dict()
    entry = checkpoint_entry("resnet18", _state_bytes(state), "my-resnet.pt")
    assert entry.name.startswith("resnet18@")
    assert entry.name not in list_models()
    assert entry.name in list_models(checkpoints=True)
    assert entry.pretrained
    model = entry.build()
    assert torch.equal(model.state_dict()["conv1.weight"], state["conv1.weight"])
    result = prune(model, PruneConfig(model=entry.name, ratio=0.3))
    assert sum(p.numel() for p in result.model.parameters()) < sum(p.numel() for p in model.parameters())
    # the same file gives the same entry
    assert checkpoint_entry("resnet18", _state_bytes(state), "again.pt") is entry


def test_checkpoint_shape_mismatch_listed():
    from torchvision.models import resnet18

    state = resnet18(num_classes=10).state_dict()
    with pytest.raises(CheckpointError, match=r"shape mismatch for fc.weight: checkpoint \(10, 512\)"):
        checkpoint_entry("resnet18", _state_bytes(state))


def test_segmentation_checkpoint_ignores_aux_head():
    from torchvision.models.segmentation import fcn_resnet50

    state = fcn_resnet50(weights=None, weights_backbone=None, aux_loss=True).state_dict()
    assert any(key.startswith("aux_classifier.") for key in state)
    model, problems = load_checkpoint("fcn_resnet50", _state_bytes(state))
    assert problems == []


def test_checkpoint_with_code_rejected(tmp_path):
    marker = tmp_path / "payload-ran"
    data = pickle.dumps({"conv1.weight": CodePayload(marker)})
    with pytest.raises(CheckpointError, match="rejected without running anything") as raised:
        checkpoint_entry("resnet18", data, "evil.pt")
    assert not marker.exists()
    assert "weights_only=False" not in str(raised.value)  # never advise loading it unsafely


def _whole_model_bytes() -> bytes:
    from torchvision.models import resnet18

    buffer = io.BytesIO()
    torch.save(resnet18(), buffer)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the file is empty"),
        (b"hello world", "not a PyTorch checkpoint"),
        (bytes(range(256)) * 8, "not a PyTorch checkpoint"),
        (_whole_model_bytes(), "Python objects other than tensors"),
    ],
    ids=["empty", "text", "random", "whole model"],
)
def test_bad_checkpoint_messages(data, message):
    with pytest.raises(CheckpointError, match=message) as raised:
        load_checkpoint("resnet18", data)
    text = str(raised.value)
    assert "\x1b" not in text  # no terminal colour codes from torch's messages
    assert "torch.save(model.state_dict(), path)" in text


def test_checkpoint_non_finite_rejected():
    from torchvision.models import resnet18

    state = resnet18().state_dict()
    state["fc.weight"].fill_(float("nan"))
    with pytest.raises(CheckpointError, match="non-finite values .* in fc.weight"):
        load_checkpoint("resnet18", _state_bytes(state))


def test_cli_prune_with_checkpoint(tmp_path, capsys):
    from torchvision.models import resnet18

    path = tmp_path / "weights.pt"
    torch.save(resnet18().state_dict(), path)
    assert main(["prune", "--model", "resnet18", "--checkpoint", str(path), "--ratio", "0.3", "--latency-budget", "0", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["model"].startswith("resnet18@")
    assert payload["pretrained"] is True
    assert payload["params"]["pruned"] < payload["params"]["dense"]


def test_cli_checkpoint_with_code_exits_2(tmp_path, capsys):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"conv1.weight": CodePayload(marker)}))
    assert main(["prune", "--model", "resnet18", "--checkpoint", str(path), "--ratio", "0.3", "--json"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "rejected" in error
    assert not marker.exists()


def test_cli_digits_labelled_accuracy(capsys):
    assert main(["prune", "--model", "digits_cnn", "--ratio", "0.3", "--latency-budget", "0", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["accuracy"]["images"] == 1000
    assert payload["accuracy"]["dense"] > 0.95
    assert payload["accuracy"]["pruned"] < payload["accuracy"]["dense"]
    assert payload["fidelity"]["images"] == 12  # the held-out digit examples, not the photos


def test_cli_sweep_digits_has_accuracy(capsys):
    assert main(["sweep", "--model", "digits_cnn", "--criteria", "l1", "--ratios", "0,0.5", "--json"]) == 0
    points = json.loads(capsys.readouterr().out)["points"]
    assert [point["ratio"] for point in points] == [0.0, 0.5]
    assert points[0]["accuracy"] > 0.95
    assert points[1]["accuracy"] < points[0]["accuracy"]


def test_untrained_build_is_reproducible():
    entry = get_model_entry("resnet18")
    torch.manual_seed(123)
    first = entry.build().state_dict()
    torch.manual_seed(456)
    second = entry.build().state_dict()
    for key, tensor in first.items():
        assert torch.equal(second[key], tensor), key
    # the caller's random stream is left alone
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    entry.build()
    assert torch.equal(torch.rand(3), expected)


def test_efficientnet_lite0_macs_counted():
    from pruning.metrics import count_macs

    entry = get_model_entry("efficientnet_lite0")
    macs = count_macs(entry.build(), entry.example_inputs())
    # EfficientNet-Lite0 needs about 0.4 G MACs at 224x224; its convs subclass nn.Conv2d
    assert 3.5e8 < macs < 4.5e8
