"""Exports of a pruned model, and safe loading of user checkpoints.

A pruned model no longer fits its architecture's state_dict, so it leaves as one of:
- TorchScript: code and weights in one file, loads with `torch.jit.load`;
- ONNX: for other runtimes, checked with onnxruntime against the torch output;
- state: a zip with the recipe (the configuration, as JSON) and the pruned model's state_dict.
  Loading re-prunes the catalogue model from the recipe, which is deterministic, to get the
  pruned shapes, then loads the saved weights (which may differ after recovery). torch-pruning's
  own `tp.state_dict` is not used because it pickles module objects, so it cannot be read with
  `torch.load(weights_only=True)`, and a file from someone else must never run code on load.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import pickle
import pickletools
import tempfile
import warnings
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .catalog import (
    TASK_SEGMENTATION,
    ModelEntry,
    get_model_entry,
    list_models,
    register_model,
)
from .explorer import PruneConfig, prune

FORMATS = ("torchscript", "onnx", "state")
RECIPE_VERSION = 1


def export_torchscript(model: nn.Module, example_inputs: torch.Tensor, path: str | Path) -> Path:
    """Trace `model` on `example_inputs` and save it as TorchScript."""
    path = Path(path)
    with torch.no_grad():
        traced = torch.jit.trace(copy.deepcopy(model).eval(), example_inputs, check_trace=False)
    traced.save(str(path))
    return path


def export_onnx(model: nn.Module, example_inputs: torch.Tensor, path: str | Path) -> Path:
    """Save `model` as ONNX with a dynamic batch size."""
    path = Path(path)
    # TODO: move to the torch.export-based exporter (dynamo=True) once it handles these models
    # without a long tracing step; the TorchScript-based one is deprecated since torch 2.9.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            copy.deepcopy(model).eval(),
            (example_inputs,),
            str(path),
            input_names=["input"],
            output_names=["output"],
            dynamo=False,
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
    return path


def run_onnx(path: str | Path, inputs: torch.Tensor) -> np.ndarray:
    """Run an exported ONNX file with onnxruntime on the CPU."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: inputs.numpy()})[0]


def recipe(config: PruneConfig) -> dict:
    """JSON-ready description of a pruning run, enough to rebuild the same model from the catalogue."""
    fields = asdict(config)
    fields["overrides"] = [list(pair) for pair in config.overrides]
    return {"format": "pruning-explorer-recipe", "version": RECIPE_VERSION, "config": fields}


def config_from_recipe(data: dict) -> PruneConfig:
    """Read a recipe back, raising ValueError that names what is missing or wrong."""
    if not isinstance(data, dict) or data.get("format") != "pruning-explorer-recipe":
        raise ValueError("not a Pruning Explorer recipe: expected a JSON object with format 'pruning-explorer-recipe'")
    if data.get("version") != RECIPE_VERSION:
        raise ValueError(f"unsupported recipe version {data.get('version')!r}: this build reads version {RECIPE_VERSION}")
    fields = dict(data.get("config") or {})
    try:
        fields["overrides"] = tuple((str(name), float(ratio)) for name, ratio in fields.get("overrides", []))
        config = PruneConfig(**fields)
    except (TypeError, ValueError) as error:
        raise ValueError(f"invalid recipe config: {error}") from None
    return config.validate()


def export_state(model: nn.Module, config: PruneConfig, path: str | Path) -> Path:
    """Save a zip with the recipe (recipe.json) and the pruned model's tensors (state.pt)."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("recipe.json", json.dumps(recipe(config), indent=2))
        archive.writestr("state.pt", buffer.getvalue())
    return path


def load_state(path: str | Path, base_model: nn.Module | None = None) -> tuple[nn.Module, PruneConfig]:
    """Rebuild a model saved by `export_state`: re-prune from the recipe, then load the saved tensors."""
    try:
        with zipfile.ZipFile(path) as archive:
            config = config_from_recipe(json.loads(archive.read("recipe.json")))
            state = torch.load(io.BytesIO(archive.read("state.pt")), map_location="cpu", weights_only=True)
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError) as error:
        raise ValueError(f"not a Pruning Explorer state file: {error}") from None
    model = rebuild(config, base_model)
    model.load_state_dict(state)
    return model.eval(), config


def rebuild(config: PruneConfig, base_model: nn.Module | None = None) -> nn.Module:
    """Prune the catalogue model again from a recipe's configuration (deterministic for a given build)."""
    base = base_model if base_model is not None else get_model_entry(config.model).build()
    return prune(base, config).model


def export(model: nn.Module, config: PruneConfig, fmt: str, path: str | Path) -> Path:
    """Write `model` in format `fmt` (one of FORMATS) to `path`."""
    example = get_model_entry(config.model).example_inputs()
    if fmt == "torchscript":
        return export_torchscript(model, example, path)
    if fmt == "onnx":
        return export_onnx(model, example, path)
    if fmt == "state":
        return export_state(model, config, path)
    raise ValueError(f"invalid export format {fmt!r}: choose one of {', '.join(FORMATS)}")


def _pickle_builds_objects(data: bytes) -> bool:
    """Return whether `data` is a plain pickle that imports or calls something (read with pickletools, never run)."""
    try:
        opcodes = {opcode.name for opcode, _, _ in pickletools.genops(io.BytesIO(data))}
    except Exception:  # pickletools raises ValueError and others for bytes that are not a pickle
        return False
    return bool(opcodes & {"GLOBAL", "STACK_GLOBAL", "REDUCE", "INST", "OBJ", "NEWOBJ", "NEWOBJ_EX"})


SAVE_HINT = "Save the weights with torch.save(model.state_dict(), path) and upload that file."


class CheckpointError(ValueError):
    """Error for an uploaded checkpoint that cannot be loaded; the message gives the reason and the fix."""


def load_checkpoint(model_name: str, source: bytes | str | Path) -> tuple[nn.Module, list[str]]:
    """Load a user's state_dict into a fresh catalogue model without running any code from the file.

    `torch.load(..., weights_only=True)` only unpickles tensors and plain containers, so a
    checkpoint that carries code (a pickled whole model or a crafted payload) is rejected. Returns
    the model and the list of problems found (missing or unexpected keys, shape mismatches); the
    model is returned only when that list is empty.
    """
    data = bytes(source) if isinstance(source, (bytes, bytearray)) else Path(source).read_bytes()
    if not data:
        raise CheckpointError(f"the file is empty. {SAVE_HINT}")
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        # torch's own message suggests weights_only=False, which would run whatever the file contains
        if "Unsupported global" not in str(error) and not _pickle_builds_objects(data):
            raise CheckpointError(f"the file is not a PyTorch checkpoint that torch.load can read. {SAVE_HINT}") from None
        raise CheckpointError(
            "the file contains Python objects other than tensors (a pickled whole model, or code), so it was "
            f"rejected without running anything. {SAVE_HINT}"
        ) from None
    except Exception:  # torch raises RuntimeError, EOFError, ValueError and others for files it cannot read
        raise CheckpointError(f"the file is not a PyTorch checkpoint that torch.load can read. {SAVE_HINT}") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise CheckpointError("the file is not a state_dict (a mapping of names to tensors); save model.state_dict()")

    entry = get_model_entry(model_name)
    model = entry.build_untrained()
    expected = model.state_dict()
    if entry.task == TASK_SEGMENTATION:
        # torchvision's segmentation checkpoints carry an auxiliary training head that inference never runs
        state = {key: value for key, value in state.items() if not key.startswith("aux_classifier.")}
    problems = [f"missing key: {key}" for key in expected if key not in state]
    problems += [f"unexpected key: {key}" for key in state if key not in expected]
    problems += [
        f"shape mismatch for {key}: checkpoint {tuple(state[key].shape)}, model {tuple(tensor.shape)}"
        for key, tensor in expected.items()
        if key in state and state[key].shape != tensor.shape
    ]
    if problems:
        shown = "; ".join(problems[:10])
        if len(problems) > 10:
            shown += f"; and {len(problems) - 10} more"
        raise CheckpointError(
            f"the checkpoint does not fit {model_name}: {shown}. Choose the architecture the weights were trained "
            "with; a model with another number of classes or changed layers is not supported."
        )
    non_finite = [key for key, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if non_finite:
        raise CheckpointError(f"non-finite values (NaN or infinity) in {', '.join(non_finite[:5])}: the weights are broken.")
    model.load_state_dict(state)
    return model.eval(), problems


CHECKPOINT_FOLDER = Path(tempfile.gettempdir()) / "pruning-explorer-checkpoints"


def checkpoint_entry(model_name: str, source: bytes, filename: str = "checkpoint") -> ModelEntry:
    """Check a user's state_dict for catalogue architecture `model_name` and add it to the catalogue.

    The new entry is named `<model_name>@<first 10 hex digits of the file's SHA-256>`, so the same
    file gives the same entry, and `list_models()` leaves it out unless asked. Its weights are
    kept in a file under the system's temporary folder and loaded with `weights_only=True`. Raises
    CheckpointError as `load_checkpoint` does.
    """
    load_checkpoint(model_name, source)  # validates: raises CheckpointError with the reason
    digest = hashlib.sha256(source).hexdigest()
    name = f"{model_name}@{digest[:10]}"
    if name in list_models(checkpoints=True):
        return get_model_entry(name)
    # NOTE: uploaded files and their catalogue entries stay until the process ends (no eviction), so a
    # long-running server gathers one file per distinct upload under the temporary folder.
    CHECKPOINT_FOLDER.mkdir(parents=True, exist_ok=True)
    path = CHECKPOINT_FOLDER / f"{name}.pt"
    path.write_bytes(source)

    base = get_model_entry(model_name)
    entry = dataclasses.replace(
        base,
        name=name,
        label=f"{base.label} · your weights ({filename})",
        weights_source=f"uploaded file {filename} (SHA-256 {digest[:12]}…)",
        weights_license="as set by the checkpoint's owner",
        weights_path=lambda: path,
        builder=lambda file: load_checkpoint(model_name, file)[0],
        untrained_fallback=False,
        download=None,
        checkpoint_of=model_name,
    )
    return register_model(entry)
