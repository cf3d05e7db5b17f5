"""Preparation of a model for CPU inference, applied alike to the dense and the pruned model before timing.

A speed-up is only meaningful when both models run the same way. `prepare_for_inference` works on a
deep copy and applies, in order:

1. unstructured masks made permanent (zeros stay zeros, the mask hooks go);
2. eval-mode BatchNorm folded into the preceding convolution (torch.fx);
3. optionally the channels-last (NHWC) memory layout;
4. TorchScript trace, freeze and `optimize_for_inference`, which runs oneDNN convolution kernels
   with fused activations on CPU.

A step that cannot handle the model (fx tracing fails on data-dependent control flow, the
TorchScript output differs from the eager one) is skipped with a logged warning, and the
remaining steps still apply. The prepared model is for inference at the example input's shape:
tracing records one shape, so other shapes may run a stale graph.
"""

from __future__ import annotations

import copy
import logging
import statistics
import time
import warnings
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import prune as torch_prune

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InferenceOptions:
    """Preparation steps to apply. The defaults gave the fastest CPU runs recorded in docs/BENCHMARKS.md."""

    fold_batchnorm: bool = True  # exact up to float rounding, and saves one pass over every activation
    channels_last: bool = False  # helps eager runs with 2 threads, but not TorchScript's oneDNN kernels
    torchscript: bool = True  # 1.5-2x faster than eager for MobileNetV2 and ResNet-18 at batch 1


DEFAULT_OPTIONS = InferenceOptions()
EAGER_OPTIONS = InferenceOptions(fold_batchnorm=False, channels_last=False, torchscript=False)

# Outputs of a prepared model may differ from the eager model by float rounding (folded BatchNorm,
# other kernels). Larger differences mean a step changed the function, so it is dropped.
_RELATIVE_TOLERANCE = 1e-3


class PreparedModel(nn.Module):
    """A model prepared for inference, with the list of steps that were applied to it."""

    def __init__(self, inner: nn.Module, steps: tuple[str, ...], channels_last: bool):
        super().__init__()
        self.inner = inner
        self.steps = steps
        self.channels_last = channels_last

    @property
    def description(self) -> str:
        return "+".join(self.steps) if self.steps else "eager"

    def forward(self, inputs: torch.Tensor):
        if self.channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        return self.inner(inputs)


def make_masks_permanent(model: nn.Module) -> nn.Module:
    """Replace torch.nn.utils.prune's weight_orig * weight_mask by a plain weight, in place."""
    for module in model.modules():
        for hook in list(module._forward_pre_hooks.values()):
            if isinstance(hook, torch_prune.BasePruningMethod):
                torch_prune.remove(module, hook._tensor_name)
    return model


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Return a copy of `model` with every eval-mode BatchNorm folded into the conv before it.

    Raises torch.fx's errors when the model cannot be traced symbolically (for example a forward
    with control flow that depends on tensor values).
    """
    from torch.fx.experimental.optimization import fuse

    return fuse(model.eval(), inplace=False)


def _to_torchscript(model: nn.Module, example_inputs: torch.Tensor) -> torch.jit.ScriptModule:
    # TorchScript is deprecated in recent torch releases and warns on every call. It is still the
    # only ahead-of-time CPU path here that prepares a model in about a second: torch.compile
    # needed 30-60 s per ResNet-18 (docs/BENCHMARKS.md), too long for a slider.
    # TODO: switch to torch.export with an AOT-compiled CPU backend once TorchScript is removed.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit.*deprecated")
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        with torch.no_grad():
            traced = torch.jit.trace(model, example_inputs, check_trace=False)
            frozen = torch.jit.freeze(traced.eval())
            return torch.jit.optimize_for_inference(frozen)


def _outputs_match(expected, actual) -> bool:
    if isinstance(expected, torch.Tensor):
        if not isinstance(actual, torch.Tensor) or expected.shape != actual.shape:
            return False
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        return bool(torch.allclose(expected, actual, rtol=_RELATIVE_TOLERANCE, atol=_RELATIVE_TOLERANCE * max(scale, 1e-6)))
    if isinstance(expected, (tuple, list)):
        return isinstance(actual, (tuple, list)) and len(expected) == len(actual) and all(
            _outputs_match(e, a) for e, a in zip(expected, actual)
        )
    return True  # other outputs (dicts, None) are not compared


def prepare_for_inference(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    options: InferenceOptions = DEFAULT_OPTIONS,
) -> PreparedModel:
    """Prepare a deep copy of `model` for batch inference at the shape of `example_inputs`.

    `model` itself is not modified. Every step is checked against the eager output on
    `example_inputs` and dropped, with a warning, if it fails or changes the result.
    """
    work = copy.deepcopy(model).eval()
    work.requires_grad_(False)
    make_masks_permanent(work)
    with torch.no_grad():
        reference = work(example_inputs)

    steps: list[str] = []
    if options.fold_batchnorm and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in work.modules()):
        try:
            work = fold_batchnorm(work)
            steps.append("fold-bn")
        except Exception as error:  # torch.fx raises several error types for untraceable code
            logger.warning("BatchNorm folding skipped for %s: %s; the model keeps its BatchNorm layers", type(model).__name__, error)

    inputs = example_inputs
    if options.channels_last:
        work = work.to(memory_format=torch.channels_last)
        inputs = example_inputs.contiguous(memory_format=torch.channels_last)
        steps.append("channels-last")

    if options.torchscript:
        try:
            scripted = _to_torchscript(work, inputs)
            with torch.no_grad():
                matches = _outputs_match(reference, scripted(inputs))
        except Exception as error:  # tracing can fail in many ways on custom Python code
            logger.warning("TorchScript skipped for %s: %s; timing the eager model", type(model).__name__, error)
        else:
            if matches:
                work = scripted
                steps.append("torchscript")
            else:
                logger.warning("TorchScript skipped for %s: its output differs from the eager model's", type(model).__name__)

    prepared = PreparedModel(work, tuple(steps), channels_last=options.channels_last)
    with torch.no_grad():
        if not _outputs_match(reference, prepared(example_inputs)):
            # folding or the layout changed the function: time the plain model instead
            logger.warning("prepared %s differs from the eager model; timing the eager model", type(model).__name__)
            plain = make_masks_permanent(copy.deepcopy(model).eval())
            prepared = PreparedModel(plain.requires_grad_(False), (), channels_last=False)
    return prepared


def time_interleaved(
    models: dict[str, nn.Module],
    inputs: torch.Tensor,
    *,
    warmup: int = 3,
    runs: int = 30,
) -> dict[str, list[float]]:
    """Time one forward pass of each model in turn, `runs` times, and return milliseconds per model.

    Alternating the models spreads background load on a shared machine evenly over all of them,
    so their ratio is steadier than from two separate measurements.
    """
    timings: dict[str, list[float]] = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for model in models.values():
                model(inputs)
        for _ in range(runs):
            for name, model in models.items():
                begin = time.perf_counter()
                model(inputs)
                timings[name].append((time.perf_counter() - begin) * 1000.0)
    return timings


def median_and_quartiles(values: list[float]) -> tuple[float, float, float]:
    """Median, 25th and 75th percentile of `values` (all three equal for a single value)."""
    if len(values) == 1:
        return values[0], values[0], values[0]
    q1, median, q3 = statistics.quantiles(values, n=4)
    return statistics.median(values), q1, q3
