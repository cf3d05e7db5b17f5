"""Recovery after structured pruning: BatchNorm recalibration and label-free knowledge distillation.

Both work on a deep copy of the pruned model; the dense teacher is only run, never trained.
"""

from __future__ import annotations

import copy
import random
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image
from torch import nn
from torchvision.transforms import v2

from .catalog import TASK_CLASSIFICATION, ModelEntry
from .tasks import distillation_loss

_BATCHNORM = nn.modules.batchnorm._BatchNorm


def _forward_with_pre_hooks(model: nn.Module, inputs: torch.Tensor, hooks: dict[nn.Module, Callable]) -> None:
    """Run `model` once on `inputs` with forward pre-hooks registered only for that pass."""
    handles = [module.register_forward_pre_hook(hook) for module, hook in hooks.items()]
    try:
        with torch.inference_mode():
            model(inputs)
    finally:
        for handle in handles:
            handle.remove()


def _input_statistics(model: nn.Module, inputs: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and variance of the input of every BatchNorm layer on `inputs`."""
    stats: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def record(args, name):
        x = args[0].detach().transpose(0, 1).flatten(1)  # (channels, N*H*W)
        stats[name] = (x.mean(1), x.var(1, unbiased=False))

    hooks = {
        module: (lambda module, args, name=name: record(args, name))
        for name, module in model.named_modules()
        if isinstance(module, _BATCHNORM)
    }
    _forward_with_pre_hooks(model, inputs, hooks)
    return stats


def _kept_channels(dense_values: torch.Tensor, pruned_values: torch.Tensor) -> list[int]:
    """Indices of the dense channels that a pruned layer kept, matched on an unchanged per-channel buffer.

    Pruning deletes channels but keeps the order of the rest, so the pruned values are a
    subsequence of the dense ones: walk both in order and match equal entries.
    """
    kept = []
    d = 0
    for value in pruned_values.tolist():
        while d < len(dense_values) and dense_values[d].item() != value:
            d += 1
        if d == len(dense_values):
            raise ValueError("pruned BatchNorm channels are not a subsequence of the dense ones")
        kept.append(d)
        d += 1
    return kept


def recalibrate_batchnorm(pruned: nn.Module, dense: nn.Module, inputs: torch.Tensor) -> nn.Module:
    """Return a copy of `pruned` whose BatchNorm layers reproduce the dense model's output statistics.

    Plain recalibration (running stats re-estimated on calibration images) also re-tunes layers
    that were never pruned to those images, so even an unpruned model drifts from itself. Here each
    BatchNorm gets the running mean m' and std s' that make the pruned pre-BN statistics (mp, sp)
    normalise to what the dense layer outputs on the same images:
    (mp - m') / s' = (md - m) / s  and  sp / s' = sd / s, with the dense layer's (m, s).
    An unpruned layer (mp = md, sp = sd) keeps m' = m and s' = s exactly.
    """
    model = copy.deepcopy(pruned).eval()
    dense_stats = _input_statistics(dense, inputs)
    dense_layers = dict(dense.named_modules())
    targets = {}
    for name, module in model.named_modules():
        if isinstance(module, _BATCHNORM) and name in dense_stats:
            kept = _kept_channels(dense_layers[name].running_mean, module.running_mean)
            targets[name] = kept

    hooks = {}
    for name, module in model.named_modules():
        if name not in targets:
            continue

        # One pass in network order, so each hook gets inputs already changed by the earlier fixes.
        def update(module, args, name=name):
            kept = targets[name]
            dense_layer = dense_layers[name]
            dense_mean, dense_var = (tensor[kept] for tensor in dense_stats[name])
            x = args[0].detach().transpose(0, 1).flatten(1)
            pruned_mean, pruned_var = x.mean(1), x.var(1, unbiased=False)
            eps = module.eps
            running_mean = dense_layer.running_mean[kept]
            running_std = (dense_layer.running_var[kept] + eps).sqrt()
            scale = (pruned_var + eps).sqrt() * running_std / (dense_var + eps).sqrt()
            module.running_mean.copy_(pruned_mean - scale * (dense_mean - running_mean) / running_std)
            module.running_var.copy_((scale**2 - eps).clamp_min(0.0))

        hooks[module] = update
    _forward_with_pre_hooks(model, inputs, hooks)
    return model


@dataclass
class DistillationReport:
    """Record of a distillation run: steps, time and the loss after each step."""

    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)


def _augment(entry: ModelEntry) -> Callable[[Image.Image], torch.Tensor]:
    height, width = entry.example_input_shape[-2:]
    augment = v2.Compose(
        [
            v2.RandomResizedCrop((height, width), scale=(0.35, 1.0), antialias=True),
            v2.RandomHorizontalFlip(),
            v2.ColorJitter(0.2, 0.2, 0.2),
        ]
    )

    def make(image: Image.Image) -> torch.Tensor:
        return entry.preprocess(augment(image))

    return make


def distill(
    entry: ModelEntry,
    pruned: nn.Module,
    dense: nn.Module,
    images: list[Image.Image] | tuple[Image.Image, ...],
    *,
    budget_s: float,
    batch_size: int = 8,
    learning_rate: float = 1e-4,
    seed: int = 0,
    progress: Callable[[float, int, float], None] | None = None,
) -> tuple[nn.Module, DistillationReport]:
    """Fine-tune a copy of `pruned` to match `dense` on augmented `images` for about `budget_s` seconds.

    Classifiers learn the teacher's softened class distribution (temperature 2); edge models learn
    its edge map. BatchNorm statistics stay frozen, because batches this small would only add noise
    to them. `progress(elapsed_s, step, loss)` is called after every step.
    """
    if budget_s <= 0:
        raise ValueError(f"invalid time budget {budget_s!r}: use a number of seconds above 0")
    student = copy.deepcopy(pruned).eval()
    student.requires_grad_(True)
    optimizer = torch.optim.Adam(student.parameters(), lr=learning_rate)
    make = _augment(entry)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    report = DistillationReport()
    started = time.perf_counter()

    while time.perf_counter() - started < budget_s:
        batch = torch.cat([make(rng.choice(images)) for _ in range(batch_size)])
        with torch.inference_mode():
            teacher = dense(batch)
        teacher = teacher.clone()
        output = student(batch)
        if entry.task == TASK_CLASSIFICATION:
            temperature = 2.0
            loss = nn.functional.kl_div(
                (output / temperature).log_softmax(1),
                (teacher / temperature).log_softmax(1),
                log_target=True,
                reduction="batchmean",
            ) * temperature**2
        else:
            loss = distillation_loss(entry, output, teacher) + nn.functional.mse_loss(output, teacher)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

        report.steps += 1
        report.losses.append(loss.item())
        report.seconds = time.perf_counter() - started
        if progress:
            progress(report.seconds, report.steps, report.losses[-1])

    student.requires_grad_(False)
    return student.eval(), report


def _refit_targets(model: nn.Module) -> list[str]:
    """Names of the layers that least squares can refit exactly: 1x1 stride-1 convs and linear layers."""
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear):
            names.append(name)
        elif (
            isinstance(module, nn.Conv2d)
            and module.kernel_size == (1, 1)
            and module.stride == (1, 1)
            and module.padding in ((0, 0), "valid")
            and module.groups == 1
        ):
            names.append(name)
    return names


def _following_batchnorm(model: nn.Module, name: str) -> nn.Module | None:
    """Return the BatchNorm that directly follows layer `name` in module order, or None."""
    ordered = list(model.named_modules())
    for index, (current, module) in enumerate(ordered):
        if current == name:
            for _, candidate in ordered[index + 1 :]:
                if isinstance(candidate, _BATCHNORM) and candidate.num_features == module.out_channels:
                    return candidate
                if isinstance(candidate, (nn.Conv2d, nn.Linear)):
                    return None
    return None


def _sample_rows(tensor: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
    """(N, C, H, W) at the sampled spatial `positions` (N, S) -> (N*S, C); (N, F) stays as it is."""
    if tensor.dim() == 2:
        return tensor
    flat = tensor.flatten(2)  # (N, C, H*W)
    picked = torch.gather(flat, 2, positions.unsqueeze(1).expand(-1, flat.shape[1], -1))  # (N, C, S)
    return picked.transpose(1, 2).reshape(-1, flat.shape[1])


def reconstruct(
    pruned: nn.Module,
    dense: nn.Module,
    inputs: torch.Tensor,
    kept_outputs: dict[str, list[int]],
    *,
    samples: int = 24_000,
    ridge: float = 1e-2,
    seed: int = 0,
) -> nn.Module:
    """Return a copy of `pruned` whose 1x1 convs and linear layers are refit by ridge regression.

    Layer by layer in network order, each refit layer maps the pruned model's own input
    activations to the dense layer's output on the same images (pre-BatchNorm for convs). So the
    error of earlier layers is corrected instead of compounded. The idea follows ThiNet (Luo et
    al., ICCV 2017) and channel pruning by reconstruction (He et al., ICCV 2017). In residual blocks
    the last conv targets the dense block output instead, so the skip path's error is corrected too.
    `kept_outputs` maps a layer to the dense output channels it kept; layers missing from it kept
    all of them. `ridge` pulls each refit towards the layer's current weights: with a few dozen
    calibration images, 1e-2 generalised better to held-out images than 1e-3 (MobileNetV2 at 1.5x
    fewer MACs: KL divergence 0.53 instead of 0.79, benchmarks/recovery.py).
    """
    model = copy.deepcopy(pruned).eval()
    names = [name for name in _refit_targets(model) if name in dict(dense.named_modules())]
    residual = {conv: block for block, conv in _residual_projections(model).items() if conv in names}
    generator = torch.Generator().manual_seed(seed)
    positions: dict[str, torch.Tensor] = {}
    targets: dict[str, torch.Tensor] = {}
    block_outputs: dict[str, torch.Tensor] = {}  # conv name -> dense block output at its positions
    block_inputs: dict[str, torch.Tensor] = {}  # conv name -> pruned block input at its positions

    # dense pass: the output of every target layer at random positions, the same ones used below
    def capture(output, name):
        if output.dim() == 4:
            per_image = max(1, -(-samples // output.shape[0]))
            positions[name] = torch.randint(output.shape[2] * output.shape[3], (output.shape[0], per_image), generator=generator)
        targets[name] = _sample_rows(output.detach(), positions.get(name)).double()

    def capture_block(output, conv):
        block_outputs[conv] = _sample_rows(output.detach(), positions[conv]).double()

    dense_layers = dict(dense.named_modules())
    handles = [dense_layers[name].register_forward_hook(lambda m, a, o, name=name: capture(o, name)) for name in names]
    handles += [dense_layers[block].register_forward_hook(lambda m, a, o, conv=conv: capture_block(o, conv)) for conv, block in residual.items()]
    try:
        with torch.inference_mode():
            dense(inputs)
    finally:
        for handle in handles:
            handle.remove()

    # pruned pass: refit each layer from the activations that reach it after the earlier refits
    def refit(module, args, name):
        features = _sample_rows(args[0].detach(), positions.get(name)).double()
        kept = kept_outputs.get(name)
        if name in residual:
            # Target the dense block output: skip input + BN(conv). Solving for the conv output that
            # makes the pruned block reproduce it also corrects the error carried by the skip path.
            batchnorm = _following_batchnorm(model, name)
            scale = (batchnorm.weight / (batchnorm.running_var + batchnorm.eps).sqrt()).double()
            shift = batchnorm.bias.double() - scale * batchnorm.running_mean.double()
            dense_block = block_outputs[name] if kept is None else block_outputs[name][:, kept]
            target = (dense_block - block_inputs[name] - shift) / scale
        else:
            target = targets[name] if kept is None else targets[name][:, kept]
        weight, bias = _ridge_towards(features, target, module, ridge)
        _write_refit(model, name, module, weight, bias)

    def remember_input(args, conv):
        block_inputs[conv] = _sample_rows(args[0].detach(), positions[conv]).double()

    layers = dict(model.named_modules())
    hooks = {layers[name]: (lambda m, a, name=name: refit(m, a, name)) for name in names}
    hooks.update({layers[block]: (lambda m, a, conv=conv: remember_input(a, conv)) for conv, block in residual.items()})
    _forward_with_pre_hooks(model, inputs, hooks)
    return model


def _ridge_towards(features: torch.Tensor, target: torch.Tensor, module: nn.Module, ridge: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve min |[X 1] W - Y|^2 + penalty |W - W_current|^2 for a layer's weight and bias."""
    design = torch.cat([features, torch.ones(len(features), 1, dtype=torch.float64)], 1)
    gram = design.T @ design
    penalty = ridge * torch.trace(gram) / gram.shape[0]
    regulariser = torch.eye(gram.shape[0], dtype=torch.float64) * penalty
    regulariser[-1, -1] = 0.0  # leave the bias free

    # Ridge towards the current weights, not towards zero: with fewer images than inputs (the
    # classifier), the unconstrained directions keep what the layer already knew.
    current_bias = module.bias.detach() if module.bias is not None else torch.zeros(module.weight.shape[0])
    current = torch.cat([module.weight.detach().flatten(1).T, current_bias[None]], 0).double()  # (in + 1, out)
    solution = torch.linalg.solve(gram + regulariser, design.T @ target + regulariser @ current)
    return solution[:-1].T.float(), solution[-1].float()


def _write_refit(model: nn.Module, name: str, module: nn.Module, weight: torch.Tensor, bias: torch.Tensor) -> None:
    """Store a refit weight and bias; a bias-free conv followed by BatchNorm moves the bias into it."""
    module.weight.copy_(weight.reshape(module.weight.shape))
    if module.bias is not None:
        module.bias.copy_(bias)
        return
    batchnorm = _following_batchnorm(model, name)
    if batchnorm is None:
        module.bias = nn.Parameter(bias, requires_grad=False)
    else:
        # BN(y + b) with running mean m equals BN(y) with running mean m - b
        batchnorm.running_mean.sub_(bias)


def _residual_projections(model: nn.Module) -> dict[str, str]:
    """Map each residual block (torchvision's InvertedResidual with a skip) to its last 1x1 conv."""
    from torchvision.models.mobilenetv2 import InvertedResidual

    found = {}
    for name, module in model.named_modules():
        if isinstance(module, InvertedResidual) and module.use_res_connect:
            convs = [child for child, layer in module.conv.named_modules() if isinstance(layer, nn.Conv2d)]
            found[name] = f"{name}.conv.{convs[-1]}"
    return found


def kept_output_channels(analysis, plan) -> dict[str, list[int]]:
    """Dense output channels each layer kept, from the plan's removed indices of its group."""
    kept = {}
    for group in analysis.groups:
        removed = set(plan.remove.get(group.name, ()))
        indices = [c for c in range(group.channels) if c not in removed]
        for member in group.members:
            if member.endswith(" (out)"):
                kept[member[: -len(" (out)")]] = indices
    return kept
