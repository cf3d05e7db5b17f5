"""Per-task inference and rendering: class scores for classifiers, edge maps for HED, class maps for segmentation."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image
from torch import nn

from .catalog import TASK_CLASSIFICATION, TASK_EDGES, TASK_SEGMENTATION, ModelEntry
from .metrics import classification_fidelity, edge_map_fidelity, segmentation_fidelity


def fit_to_side(image: Image.Image, max_side: int | None) -> Image.Image:
    """Shrink `image` so its longer side is at most `max_side` pixels (returns a new image or the same one)."""
    if max_side is None or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR)


def prepare_input(entry: ModelEntry, image: Image.Image) -> torch.Tensor:
    """Turn an RGB image into the model's input batch of one, capped to the entry's input size."""
    return entry.preprocess(fit_to_side(image.convert("RGB"), entry.max_input_side))


def blank_input(entry: ModelEntry, image: Image.Image) -> bool:
    """Return whether preprocessing turns `image` into a constant input, as the digits model does with an empty page."""
    inputs = prepare_input(entry, image)
    return bool(torch.all(inputs == inputs.flatten()[0]))


def infer(model: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model(inputs)


def mirrored_output(entry: ModelEntry, model: nn.Module, inputs: torch.Tensor) -> torch.Tensor | None:
    """Return `model`'s output on left-right mirrored `inputs`, with output maps mirrored back.

    The dense model's agreement with itself on mirrored images is a yardstick for the pruned
    model's agreement, because a mirror alone flips the top class where the top classes are nearly tied.
    Returns None for models whose inputs change meaning when mirrored (digits).
    """
    if not entry.mirror_invariant:
        return None
    output = infer(model, inputs.flip(-1))
    return output.flip(-1) if output.dim() == 4 else output


def top_k(entry: ModelEntry, logits: torch.Tensor, k: int = 5) -> list[tuple[str, float]]:
    """Top-k (class name, probability) of the first item of a batch of logits."""
    probabilities = logits[0].float().softmax(0)
    values, indices = probabilities.topk(k)
    return [(entry.categories[i], float(v)) for v, i in zip(values.tolist(), indices.tolist())]


def output_fidelity(entry: ModelEntry, dense_output: torch.Tensor, pruned_output: torch.Tensor) -> dict[str, float]:
    """Fidelity of the pruned output to the dense one, in the task's own terms."""
    if entry.task == TASK_CLASSIFICATION:
        return classification_fidelity(dense_output, pruned_output)
    if entry.task == TASK_EDGES:
        return edge_map_fidelity(dense_output, pruned_output)
    if entry.task == TASK_SEGMENTATION:
        return segmentation_fidelity(dense_output, pruned_output)
    raise ValueError(f"no fidelity measure for task {entry.task!r}")


def edge_map_image(edges: torch.Tensor) -> Image.Image:
    """Greyscale image of an edge map (1, 1, H, W) in [0, 1]: black background, white edges."""
    array = (edges[0, 0].float().clamp(0, 1).numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(array, mode="L")


def edge_difference_image(dense: torch.Tensor, pruned: torch.Tensor) -> Image.Image:
    """Colour map of pruned minus dense edges: red where edges were lost, blue where new ones appeared."""
    delta = (pruned[0, 0] - dense[0, 0]).float().clamp(-1, 1).numpy()
    rgb = np.zeros((*delta.shape, 3), dtype=np.float32)
    rgb[..., 0] = np.clip(-delta, 0, 1)  # lost edges
    rgb[..., 2] = np.clip(delta, 0, 1)  # new edges
    return Image.fromarray((rgb * 255.0).round().astype(np.uint8), mode="RGB")


def segmentation_palette(classes: int) -> np.ndarray:
    """Return one RGB colour per class (classes, 3) uint8; class 0, the background, is black.

    The colours follow the PASCAL VOC bit pattern, so neighbouring class ids get distinct colours.
    """
    palette = np.zeros((classes, 3), dtype=np.uint8)
    for cls in range(classes):
        value, bit = cls, 7
        while value:
            for channel in range(3):
                palette[cls, channel] |= ((value >> channel) & 1) << bit
            value >>= 3
            bit -= 1
    return palette


def class_map(scores: torch.Tensor) -> np.ndarray:
    """Return the class id of every pixel (H, W) from segmentation scores (1, C, H, W)."""
    return scores[0].argmax(0).numpy()


def segmentation_overlay(image: Image.Image, scores: torch.Tensor, alpha: float = 0.55) -> Image.Image:
    """Blend the class colours of `scores` over `image` (resized to the map); background stays as it is."""
    classes = class_map(scores)
    colours = segmentation_palette(scores.shape[1])[classes]
    picture = np.asarray(image.convert("RGB").resize((classes.shape[1], classes.shape[0]), Image.Resampling.BILINEAR), dtype=np.float32)
    foreground = (classes > 0)[..., None]
    blended = np.where(foreground, (1 - alpha) * picture + alpha * colours, picture)
    return Image.fromarray(blended.round().astype(np.uint8), mode="RGB")


def segmentation_difference_image(dense: torch.Tensor, pruned: torch.Tensor) -> Image.Image:
    """Return a mask image: white where the two class maps disagree, black where they agree."""
    differs = class_map(dense) != class_map(pruned)
    return Image.fromarray((differs * 255).astype(np.uint8), mode="L")


def class_areas(entry: ModelEntry, scores: torch.Tensor, top: int = 6) -> list[tuple[str, float]]:
    """Return the largest classes of a segmentation output as (class name, share of pixels)."""
    counts = np.bincount(class_map(scores).ravel(), minlength=scores.shape[1])
    shares = counts / counts.sum()
    order = np.argsort(-shares)[:top]
    return [(entry.categories[i], float(shares[i])) for i in order if shares[i] > 0]


def side_by_side(left: Image.Image, right: Image.Image, gap: int = 4) -> Image.Image:
    """Both images next to each other on a black canvas, the right one scaled to the left's height."""
    if right.height != left.height:
        width = max(1, round(right.width * left.height / right.height))
        right = right.resize((width, left.height), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (left.width + gap + right.width, left.height))
    canvas.paste(left.convert("RGB"), (0, 0))
    canvas.paste(right.convert("RGB"), (left.width + gap, 0))
    return canvas


@dataclass
class ImageComparison:
    """Dense and pruned outputs for one image, with their fidelity and pictures to show."""

    dense_output: torch.Tensor
    pruned_output: torch.Tensor
    fidelity: dict[str, float]
    dense_top: list[tuple[str, float]] = field(default_factory=list)  # classifiers only
    pruned_top: list[tuple[str, float]] = field(default_factory=list)
    dense_image: Image.Image | None = None  # edge maps and segmentation overlays
    pruned_image: Image.Image | None = None
    difference_image: Image.Image | None = None
    dense_areas: list[tuple[str, float]] = field(default_factory=list)  # segmentation only
    pruned_areas: list[tuple[str, float]] = field(default_factory=list)


def compare_on_image(entry: ModelEntry, dense: nn.Module, pruned: nn.Module, image: Image.Image) -> ImageComparison:
    """Run both models on `image` and collect what the task's view shows."""
    image = fit_to_side(image.convert("RGB"), entry.max_input_side)
    inputs = entry.preprocess(image)
    dense_output = infer(dense, inputs)
    pruned_output = infer(pruned, inputs)
    comparison = ImageComparison(dense_output, pruned_output, output_fidelity(entry, dense_output, pruned_output))
    if entry.task == TASK_CLASSIFICATION:
        comparison.dense_top = top_k(entry, dense_output)
        comparison.pruned_top = top_k(entry, pruned_output)
    elif entry.task == TASK_EDGES:
        comparison.dense_image = edge_map_image(dense_output)
        comparison.pruned_image = edge_map_image(pruned_output)
        comparison.difference_image = edge_difference_image(dense_output, pruned_output)
    elif entry.task == TASK_SEGMENTATION:
        comparison.dense_image = segmentation_overlay(image, dense_output)
        comparison.pruned_image = segmentation_overlay(image, pruned_output)
        comparison.difference_image = segmentation_difference_image(dense_output, pruned_output)
        comparison.dense_areas = class_areas(entry, dense_output)
        comparison.pruned_areas = class_areas(entry, pruned_output)
    return comparison


def distillation_loss(entry: ModelEntry, student_output: torch.Tensor, teacher_output: torch.Tensor) -> torch.Tensor:
    """Label-free loss of a student against the dense teacher's own predictions.

    Hard targets (the teacher's top-1 class per image or per pixel, or its edges thresholded at 0.5) keep the gradient
    non-zero even while the student still equals the teacher, where a soft KL gradient is zero.
    """
    if entry.task == TASK_CLASSIFICATION:
        return torch.nn.functional.cross_entropy(student_output, teacher_output.argmax(1))
    if entry.task == TASK_EDGES:
        target = (teacher_output >= 0.5).float()
        return torch.nn.functional.binary_cross_entropy(student_output.clamp(1e-6, 1 - 1e-6), target)
    if entry.task == TASK_SEGMENTATION:
        return torch.nn.functional.cross_entropy(student_output, teacher_output.argmax(1))
    raise ValueError(f"no distillation loss for task {entry.task!r}")


# Captions of the dense map, the pruned map and their difference, for tasks whose output is an image.
OUTPUT_MAP_CAPTIONS = {
    TASK_EDGES: ("dense edges", "pruned edges", "difference: red lost, blue new"),
    TASK_SEGMENTATION: ("dense classes", "pruned classes", "difference: white where the classes differ"),
}

PRIMARY_FIDELITY = {
    TASK_CLASSIFICATION: ("top1_agreement", "top-1 agreement with dense"),
    TASK_EDGES: ("edge_f1", "edge F1 vs dense"),
    TASK_SEGMENTATION: ("miou", "mIoU vs dense"),
}


def primary_fidelity(entry: ModelEntry, fidelity: dict[str, float]) -> float:
    """Return the one fidelity number in [0, 1] that charts and budgets use: top-1 agreement, edge F1 or mIoU."""
    return fidelity[PRIMARY_FIDELITY[entry.task][0]]


def primary_fidelity_label(entry: ModelEntry) -> str:
    return PRIMARY_FIDELITY[entry.task][1]


def recovery_row(entry: ModelEntry, label: str, dense_output: torch.Tensor, pruned_output: torch.Tensor) -> dict[str, float | str]:
    """Build one table row of fidelity measures: on all images and, for classifiers, on confident ones."""
    fidelity = output_fidelity(entry, dense_output, pruned_output)
    row: dict[str, float | str] = {"model": label}
    if entry.task == TASK_CLASSIFICATION:
        confident = dense_output.float().softmax(1).max(1).values >= 0.5
        row["top-1 agreement"] = round(fidelity["top1_agreement"], 3)
        row["top-5 overlap"] = round(fidelity["top5_overlap"], 3)
        row["KL divergence"] = round(fidelity["kl_divergence"], 3)
        if confident.any():
            subset = classification_fidelity(dense_output[confident], pruned_output[confident])
            row[f"top-1 agreement, confident ({int(confident.sum())} images)"] = round(subset["top1_agreement"], 3)
    elif entry.task == TASK_SEGMENTATION:
        row["mIoU vs dense"] = round(fidelity["miou"], 3)
        row["pixel agreement"] = round(fidelity["pixel_agreement"], 3)
    else:
        row["edge F1"] = round(fidelity["edge_f1"], 3)
        row["PSNR (dB)"] = round(fidelity["psnr_db"], 2)
    return row
