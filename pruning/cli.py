"""Command line: `python -m pruning models|prune|video`.

Bad input exits with status 2 and one line on stderr, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from .calibration import (
    calibration_images,
    example_names,
    holdout_images,
    load_example,
    to_batch,
)
from .catalog import DEFAULT_MODEL, get_model_entry, list_models
from .explorer import MODES, PruneConfig, analyse_entry, model_stats, prune
from .export import (
    FORMATS,
    CheckpointError,
    checkpoint_entry,
    export,
    load_state,
    recipe,
    run_onnx,
)
from .importance import DEFAULT_CRITERION, get_criterion, list_criteria
from .media import (
    MIN_SIDE,
    MediaError,
    load_image,
    probe_video,
)
from .metrics import compare_latency, labelled_accuracy
from .sensitivity import ratios_for_budget, scan
from .structured import ALLOCATIONS, MAX_RATIO, StructuredPruningError
from .sweep import DEFAULT_RATIOS as SWEEP_RATIOS
from .sweep import run_sweep
from .tasks import infer, output_fidelity, prepare_input

EXIT_USAGE = 2


class UsageError(Exception):
    """A user error: reported as one line on stderr with exit status 2."""


class _Parser(argparse.ArgumentParser):
    """Argument parser that reports a usage error in one line instead of the whole usage block."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _argument_type(convert, is_valid, message: str):
    """Build an argparse type that converts text and rejects invalid values with `message` (filled with the text)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(message.format(text=repr(text))) from None
        if not is_valid(value):
            raise argparse.ArgumentTypeError(message.format(text=repr(text)))
        return value

    return parse


_ratio = _argument_type(float, lambda value: 0.0 <= value <= MAX_RATIO, "invalid ratio {text}: use a number from 0 to " + str(MAX_RATIO))
_positive_int = _argument_type(int, lambda value: value >= 1, "invalid count {text}: use a whole number of at least 1")
_positive_seconds = _argument_type(float, lambda value: 0 < value < float("inf"), "invalid duration {text}: use a number of seconds above 0")
_max_side = _argument_type(int, lambda value: value >= MIN_SIDE, "invalid size {text}: use a whole number of pixels, at least " + str(MIN_SIDE))


_non_negative_seconds = _argument_type(float, lambda value: 0 <= value < float("inf"), "invalid duration {text}: use a number of seconds, 0 or more")
_share = _argument_type(float, lambda value: 0.0 < value < 1.0, "invalid share {text}: use a number between 0 and 1")


def _ratios(text: str) -> tuple[float, ...]:
    values = tuple(_ratio(part) for part in text.split(",") if part.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"invalid ratios {text!r}: give comma-separated numbers from 0 to {MAX_RATIO}")
    return values


def _criteria(text: str) -> tuple[str, ...]:
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    unknown = [name for name in names if name not in list_criteria()]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"invalid criteria {text!r}: choose from {', '.join(list_criteria())}")
    return names


def _progress(label: str):
    """Progress callback that redraws one line on stderr, only when stderr is a terminal."""

    def report(done: int, total: int | None) -> None:
        if sys.stderr.isatty():
            print(f"\r{label} {done}/{total or '?'}", end="" if done != total else "\n", file=sys.stderr, flush=True)

    return report


def _add_pruning_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=DEFAULT_MODEL, choices=list_models(), help="catalogue name (default: %(default)s)")
    parser.add_argument(
        "--ratio", type=_ratio, required=True, help=f"share of channels (or weights, in unstructured mode) to remove, 0 to {MAX_RATIO}"
    )
    parser.add_argument("--criterion", default=DEFAULT_CRITERION, choices=list_criteria(), help="importance criterion (default: %(default)s)")
    parser.add_argument("--mode", default="structured", choices=MODES, help="remove channels or zero weights (default: %(default)s)")
    parser.add_argument(
        "--allocation", default="uniform", choices=ALLOCATIONS, help="same ratio per layer, or one ranking across layers (default: %(default)s)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m pruning", description="Prune image and video models and measure the effect.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    models = commands.add_parser("models", help="list the model catalogue")
    models.add_argument("--json", action="store_true", help="print a JSON list")
    models.add_argument(
        "--download", metavar="NAME", choices=[n for n in list_models() if get_model_entry(n).download is not None],
        help="download the pretrained weights of a torchvision entry into torchvision's cache (needs internet access)",
    )

    prune_parser = commands.add_parser("prune", help="prune a model and compare it with the dense one")
    _add_pruning_options(prune_parser)
    prune_parser.add_argument(
        "--image", action="append", type=Path, metavar="PATH", help="image for fidelity (repeatable; default: the model's example images)"
    )
    prune_parser.add_argument(
        "--checkpoint", type=Path, metavar="PATH",
        help="a state_dict for the --model architecture, loaded with weights_only=True, used instead of the catalogue weights",
    )
    prune_parser.add_argument(
        "--latency-budget",
        type=_non_negative_seconds,
        default=3.0,
        help="seconds of timed runs after the first 5 of each model (default: %(default)s; 0 for a quick estimate)",
    )

    video = commands.add_parser("video", help="run dense and pruned models on a clip and write a side-by-side H.264 mp4")
    _add_pruning_options(video)
    video.add_argument("input", type=Path, help="input video file (mp4, mov, webm, avi, ...)")
    video.add_argument("-o", "--output", type=Path, required=True, help="output .mp4 path")
    video.add_argument("--max-frames", type=_positive_int, default=None, help="process at most this many frames (default: all)")
    video.add_argument("--stride", type=_positive_int, default=1, help="run the models on every n-th frame (default: %(default)s)")
    video.add_argument("--max-seconds", type=_positive_seconds, default=None, help="process the clip up to this time, in seconds (default: all)")
    video.add_argument(
        "--max-side", type=_max_side, default=None, help="shrink frames to at most this many pixels on the longer side before the models (default: no cap)"
    )
    sweep = commands.add_parser("sweep", help="prune at a range of ratios and measure fidelity, size and latency")
    sweep.add_argument("--model", default=DEFAULT_MODEL, choices=list_models(), help="catalogue name (default: %(default)s)")
    sweep.add_argument("--criteria", type=_criteria, default=("l1", "random"), help="comma-separated criteria (default: l1,random)")
    sweep.add_argument("--ratios", type=_ratios, default=SWEEP_RATIOS, help="comma-separated channel ratios, 0 to 0.9 (default: 0,0.1,...,0.9)")
    sweep.add_argument(
        "--allocation", default="uniform", choices=ALLOCATIONS, help="same ratio per layer, or one ranking across layers (default: %(default)s)"
    )
    sweep.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    sensitivity = commands.add_parser("sensitivity", help="prune each layer alone and measure the fidelity drop")
    sensitivity.add_argument("--model", default=DEFAULT_MODEL, choices=list_models(), help="catalogue name (default: %(default)s)")
    sensitivity.add_argument("--criterion", default=DEFAULT_CRITERION, choices=list_criteria(), help="importance criterion (default: %(default)s)")
    sensitivity.add_argument("--ratios", type=_ratios, default=(0.25, 0.5, 0.75), help="comma-separated ratios per layer (default: 0.25,0.5,0.75)")
    sensitivity.add_argument("--images", type=_positive_int, default=16, help="calibration images per measurement (default: %(default)s)")
    sensitivity.add_argument(
        "--mac-reduction", type=_share, default=None, help="also print per-layer ratios that remove this share of MACs, e.g. 0.33 for 1.5x"
    )
    sensitivity.add_argument("--json", action="store_true", help="print one JSON object instead of a table")

    export_parser = commands.add_parser("export", help="prune a model and save it as TorchScript, ONNX or a state file")
    _add_pruning_options(export_parser)
    export_parser.add_argument("--format", required=True, choices=FORMATS, help="torchscript (.pt), onnx (.onnx) or state (.zip: recipe + weights)")
    export_parser.add_argument("-o", "--output", type=Path, required=True, help="output file path")
    return parser


def _export(args: argparse.Namespace) -> dict[str, Any]:
    if not args.output.parent.is_dir():
        raise UsageError(f"output directory not found: {args.output.parent}; create it first")
    if args.output.is_dir():
        raise UsageError(f"invalid output {args.output}: it is a directory; give a file path")
    entry, base = _build_base(args.model)
    config = PruneConfig(args.model, args.ratio, args.criterion, args.mode, args.allocation)
    model = prune(base, config).model
    path = export(model, config, args.format, args.output)

    # reload what was written and compare it with the model in memory
    inputs = torch.randn(entry.example_input_shape, generator=torch.Generator().manual_seed(0))
    expected = infer(model, inputs)
    if args.format == "torchscript":
        reloaded = torch.jit.load(str(path))(inputs)
    elif args.format == "onnx":
        reloaded = torch.from_numpy(run_onnx(path, inputs))
    else:
        reloaded = infer(load_state(path, base)[0], inputs)
    return {
        "model": args.model,
        "ratio": args.ratio,
        "format": args.format,
        "path": str(path),
        "bytes": path.stat().st_size,
        "max_abs_difference": float((reloaded - expected).abs().max()),
        "recipe": recipe(config),
    }


def _sweep(args: argparse.Namespace) -> dict[str, Any]:
    entry, base = _build_base(args.model)
    for criterion in args.criteria:
        get_criterion(criterion).check_applies(base)
    inputs = to_batch(entry, holdout_images(entry))
    points = run_sweep(args.model, base, inputs, criteria=args.criteria, ratios=args.ratios, allocation=args.allocation, progress=_progress("sweep"))
    return {
        "model": args.model,
        "allocation": args.allocation,
        "holdout_images": len(inputs),
        "points": [_sweep_point(point) for point in points],
    }


def _sweep_point(point) -> dict[str, Any]:
    row = {
        "criterion": point.criterion,
        "ratio": point.ratio,
        "params": point.params,
        "macs": point.macs,
        "latency_ms": round(point.latency_ms, 3),
        "fidelity": point.fidelity,
    }
    if point.accuracy is not None:
        row["accuracy"] = point.accuracy  # labelled held-out accuracy, for models with labels
    return row


def _sensitivity(args: argparse.Namespace) -> dict[str, Any]:
    entry, base = _build_base(args.model)
    analysis = analyse_entry(entry, base, args.criterion)
    inputs = to_batch(entry, calibration_images(entry)[: args.images])
    result = scan(entry, base, analysis, inputs, ratios=args.ratios, progress=_progress("layers"))
    payload: dict[str, Any] = {
        "model": args.model,
        "criterion": args.criterion,
        "ratios": list(result.ratios),
        "dense_macs": result.dense_macs,
        "layers": [
            {"name": name, "fidelity": result.fidelity[g].tolist(), "macs_saved": result.macs_saved[g].astype(int).tolist()}
            for g, name in enumerate(result.groups)
        ],
    }
    if args.mac_reduction is not None:
        payload["overrides"] = ratios_for_budget(result, args.mac_reduction)
    return payload


def _models(args: argparse.Namespace) -> dict[str, Any] | list[dict[str, Any]]:
    if args.download:
        entry = get_model_entry(args.download)

        def report(done: int, total: int | None) -> None:
            print(f"\r{entry.name}: {done / 1e6:.0f} of {(total or 0) / 1e6:.0f} MB", end="", file=sys.stderr, flush=True)

        try:
            path = entry.download(report)
        except OSError as error:
            raise UsageError(f"download of {entry.name} failed: {error}; check the internet connection") from None
        print(file=sys.stderr)
        return {"name": entry.name, "downloaded": str(path)}
    rows = []
    for name in list_models():
        entry = get_model_entry(name)
        rows.append({"name": name, "task": entry.task, "pretrained": entry.pretrained, "weights_source": entry.weights_source})
    return rows


def _build_base(name: str):
    entry = get_model_entry(name)
    try:
        return entry, entry.build()
    except FileNotFoundError as error:
        raise UsageError(str(error)) from None


def _load_images(paths: list[Path] | None, entry) -> list:
    if not paths:
        return [load_example(entry, name) for name in example_names(entry)]
    images = []
    for path in paths:
        if not path.is_file():
            raise UsageError(f"image not found: {path}")
        images.append(load_image(path))
    return images


def _mean_fidelity(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: sum(row[key] for row in rows) / len(rows) for key in rows[0]}


def _prune(args: argparse.Namespace) -> dict[str, Any]:
    model_name = args.model
    if args.checkpoint is not None:
        if not args.checkpoint.is_file():
            raise UsageError(f"checkpoint not found: {args.checkpoint}")
        try:
            model_name = checkpoint_entry(args.model, args.checkpoint.read_bytes(), args.checkpoint.name).name
        except CheckpointError as error:
            raise UsageError(f"checkpoint {args.checkpoint} rejected: {error}") from None
    images = _load_images(args.image, get_model_entry(model_name))  # check the inputs before any slow work
    entry, base = _build_base(model_name)
    config = PruneConfig(model_name, args.ratio, args.criterion, args.mode, args.allocation)
    result = prune(base, config)

    example = entry.example_inputs()
    dense_stats = model_stats(base, example)
    pruned_stats = model_stats(result.model, example)
    timing_input = torch.randn(example.shape, generator=torch.Generator().manual_seed(0))
    dense_latency, pruned_latency = compare_latency(base, result.model, timing_input, budget_s=args.latency_budget)

    fidelity_rows = []
    output_shape = {}
    for image in images:
        inputs = prepare_input(entry, image)
        dense_output = infer(base, inputs)
        pruned_output = infer(result.model, inputs)
        output_shape = {"dense": list(dense_output.shape), "pruned": list(pruned_output.shape)}
        fidelity_rows.append(output_fidelity(entry, dense_output, pruned_output))

    return {
        "model": model_name,
        "ratio": args.ratio,
        "criterion": args.criterion,
        "mode": args.mode,
        "allocation": args.allocation,
        "params": {"dense": dense_stats.params, "pruned": pruned_stats.params},
        "nonzero_params": {"dense": dense_stats.nonzero_params, "pruned": pruned_stats.nonzero_params},
        "macs": {"dense": dense_stats.macs, "pruned": pruned_stats.macs},
        "size_bytes": {"dense": dense_stats.size_bytes, "pruned": pruned_stats.size_bytes},
        "latency_ms": {"dense": round(dense_latency.median_ms, 3), "pruned": round(pruned_latency.median_ms, 3)},
        "latency_spread_ms": {"dense": round(dense_latency.spread_ms, 3), "pruned": round(pruned_latency.spread_ms, 3)},
        "threads": dense_latency.threads,
        "latency_preparation": dense_latency.preparation,
        "input_shape": list(example.shape),
        "output_shape": output_shape,
        "channel_reduction": result.channel_reduction,
        "weight_sparsity": result.weight_sparsity,
        "fidelity": {**_mean_fidelity(fidelity_rows), "images": len(fidelity_rows)},
        **_labelled_accuracy(entry, base, result.model),
        "pretrained": entry.pretrained,
        "layers": [
            {"name": layer.name, "channels_dense": layer.channels_dense, "channels_pruned": layer.channels_pruned, "sparsity": layer.sparsity}
            for layer in result.layers
        ],
    }


def _labelled_accuracy(entry, dense, pruned) -> dict[str, Any]:
    """Return {"accuracy": {"dense", "pruned", "images"}} on the entry's labelled held-out data, or {} without it."""
    if entry.labelled_holdout is None:
        return {}
    inputs, labels = entry.labelled_holdout()
    return {
        "accuracy": {
            "dense": labelled_accuracy(dense, inputs, labels),
            "pruned": labelled_accuracy(pruned, inputs, labels),
            "images": len(labels),
        }
    }


def _video(args: argparse.Namespace) -> dict[str, Any]:
    from .video import compare_on_video

    if not args.input.is_file():
        raise UsageError(f"video not found: {args.input}")
    if args.output.suffix.lower() != ".mp4":
        raise UsageError(f"invalid output {args.output}: the output must be an .mp4 file")
    if args.output.is_dir():
        raise UsageError(f"invalid output {args.output}: it is a directory; give a file path ending in .mp4")
    if not args.output.parent.is_dir():
        raise UsageError(f"output directory not found: {args.output.parent}; create it first")
    if args.output.exists() and args.output.resolve() == args.input.resolve():
        raise UsageError(f"invalid output {args.output}: it is the input clip; choose another file name")
    probe_video(args.input)  # reject unreadable clips before loading any model
    entry, base = _build_base(args.model)
    result = prune(base, PruneConfig(args.model, args.ratio, args.criterion, args.mode, args.allocation))

    def report(done: int, total: int | None) -> None:
        if not args.json:
            print(f"\rframe {done}/{total or '?'}", end="", file=sys.stderr, flush=True)

    comparison = compare_on_video(
        entry,
        base,
        result.model,
        args.input,
        args.output,
        stride=args.stride,
        max_frames=args.max_frames,
        max_seconds=args.max_seconds,
        max_side=args.max_side,
        progress=report,
    )
    if not args.json:
        print(file=sys.stderr)
    return {
        "model": args.model,
        "ratio": args.ratio,
        "frames_in": comparison.frames_in,
        "frames_out": comparison.frames_out,
        "fps": {"dense": round(comparison.dense_fps, 3), "pruned": round(comparison.pruned_fps, 3)},
        "agreement": comparison.mean_agreement,
        "pretrained": entry.pretrained,
        "duration_s": round(comparison.duration_s, 3),
        "output_fps": round(comparison.output_fps, 3),
        "pipeline": {"fps": round(comparison.pipeline_fps, 3), "overhead_share": round(comparison.overhead_share, 3)},
        "output": {"path": comparison.output_path, "codec": comparison.codec, "width": comparison.width, "height": comparison.height},
    }


def _print_table(payload: Any) -> None:
    if isinstance(payload, list):
        for row in payload:
            print("  ".join(f"{key}={value}" for key, value in row.items()))
        return
    for key, value in payload.items():
        if key == "layers":
            print(f"layers: {len(value)} (use --json for the per-layer table)")
        else:
            print(f"{key}: {value}")


def main(argv: list[str] | None = None) -> int:
    # load_image reports oversized images itself, in one line; Pillow's warning would add two more
    warnings.simplefilter("ignore", Image.DecompressionBombWarning)
    args = build_parser().parse_args(argv)
    handlers = {
        "models": _models,
        "prune": _prune,
        "video": _video,
        "export": _export,
        "sweep": _sweep,
        "sensitivity": _sensitivity,
    }
    try:
        payload = handlers[args.command](args)
    except (UsageError, MediaError, ValueError, KeyError, StructuredPruningError) as error:
        message = error.args[0] if isinstance(error, KeyError) and error.args else str(error)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    if args.json:
        print(json.dumps(payload, indent=2))
    else:
        _print_table(payload)
    return 0
