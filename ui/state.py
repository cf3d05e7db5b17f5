"""Streamlit-side helpers: cached loaders and the shared sidebar.

Cached resources are shared by every browser session, so they are read-only: pruning always works
on a deep copy inside `pruning.explorer.prune`, and the cached pruned models are only run.
"""

from __future__ import annotations

import copy
import io
import json
import os
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import pandas as pd
import streamlit as st
import torch
from PIL import Image

from pruning.calibration import (
    calibration_images,
    holdout_images,
    load_example,
    to_batch,
)
from pruning.catalog import ModelEntry, get_model_entry, list_models
from pruning.explain import cam_overlay, default_cam_layer, grad_cam, model_view
from pruning.explorer import (
    MODES,
    PruneConfig,
    PruneResult,
    analyse_entry,
    model_stats,
    prune,
)
from pruning.export import CheckpointError, checkpoint_entry, config_from_recipe, export
from pruning.gallery import (
    feature_map_grid,
    feature_maps,
    filter_grid,
    first_conv,
    pruned_feature_maps_in_dense_order,
    removed_channels,
)
from pruning.importance import DEFAULT_CRITERION, applicable_criteria, get_criterion
from pruning.media import load_image, load_sample_image, sample_image_names
from pruning.metrics import LatencyStats, compare_latency, labelled_accuracy
from pruning.models.torchvision_models import weights_size_mb
from pruning.recovery import (
    distill,
    kept_output_channels,
    recalibrate_batchnorm,
    reconstruct,
)
from pruning.sensitivity import SensitivityScan, scan
from pruning.structured import (
    ALLOCATIONS,
    MAX_GROUP_RATIO,
    MAX_RATIO,
    ROUNDINGS,
    Analysis,
    StructuredPruningError,
)
from pruning.sweep import SweepPoint, run_sweep
from pruning.tasks import (
    ImageComparison,
    compare_on_image,
    fit_to_side,
    infer,
    mirrored_output,
    prepare_input,
    recovery_row,
)
from pruning.video import JobProgress, VideoJob
from ui.navigation import ensure_routed

CONFIG_KEY = "prune_config"
DEFAULT_RATIO = 0.3
OVERRIDES_KEY = "layer_overrides"  # {group root layer: ratio}, set on the Sensitivity page


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def load_base_model(name: str) -> torch.nn.Module:
    """Build the catalogue model once per process; callers must never modify it."""
    model = get_model_entry(name).build()
    model.requires_grad_(False)
    return model


@st.cache_resource(max_entries=8, show_spinner="Scoring every channel…")
def load_analysis(name: str, criterion: str) -> Analysis:
    return analyse_entry(get_model_entry(name), load_base_model(name), criterion)


@st.cache_resource(max_entries=6, show_spinner="Pruning a copy of the model…")
def load_pruned(config: PruneConfig) -> PruneResult:
    """Prune a deep copy of the cached base model; the result is shared and only ever run."""
    analysis = load_analysis(config.model, config.criterion) if config.mode == "structured" else None
    return prune(load_base_model(config.model), config, analysis=analysis)


@st.cache_data(max_entries=16, show_spinner=False)
def dense_stats(name: str) -> dict:
    entry = get_model_entry(name)
    return asdict(model_stats(load_base_model(name), entry.example_inputs()))


@st.cache_data(max_entries=32, show_spinner=False)
def pruned_stats(config: PruneConfig) -> dict:
    entry = get_model_entry(config.model)
    return asdict(model_stats(load_pruned(config).model, entry.example_inputs()))


@st.cache_data(max_entries=32, show_spinner="Measuring CPU latency…")
def latency_pair(config: PruneConfig) -> tuple[LatencyStats, LatencyStats]:
    """Median latency of the dense and the pruned model for `config`, timed in alternation."""
    entry = get_model_entry(config.model)
    inputs = torch.randn(entry.example_input_shape, generator=torch.Generator().manual_seed(0))
    return compare_latency(load_base_model(config.model), load_pruned(config).model, inputs)


# URL query parameter -> (session state key of the widget, parser). A link with these
# parameters opens the same view; the sidebar keeps them in step with the widgets.
SHARED_PARAMETERS = {
    "model": ("sidebar_model", str),
    "mode": ("sidebar_mode", str),
    "criterion": ("sidebar_criterion", str),
    "allocation": ("sidebar_allocation", str),
    "ratio": ("sidebar_ratio", float),
    "round_to": ("sidebar_round_to", int),
    "max_layer": ("sidebar_max_layer_ratio", float),
    "sample": ("images_sample", str),
}
LINK_READ_KEY = "link_read"


def _read_link() -> list[str]:
    """Copy valid query parameters into widget state once per session; return the names of invalid ones."""
    if st.session_state.get(LINK_READ_KEY):
        return []
    st.session_state[LINK_READ_KEY] = True
    params = st.query_params
    values = {}
    rejected = []
    for parameter, (key, parse) in SHARED_PARAMETERS.items():
        if parameter in params:
            try:
                values[key] = parse(params[parameter])
            except ValueError:
                rejected.append(parameter)
    overrides = {}
    for item in filter(None, params.get("overrides", "").split(",")):
        layer, _, ratio = item.rpartition(":")
        try:
            overrides[layer] = float(ratio)
        except ValueError:
            rejected.append("overrides")

    model = values.get("sidebar_model")
    if model is not None and "@" in model and model not in model_choices():
        # uploaded weights belong to the session that uploaded them
        rejected.append(f"model {model} (weights uploaded in another session; upload them under Your own weights)")
        values.pop("sidebar_model")

    # validate the whole configuration the link describes before applying any of it
    try:
        PruneConfig(
            model=values.get("sidebar_model", list_models()[0]),
            ratio=values.get("sidebar_ratio", DEFAULT_RATIO),
            criterion=values.get("sidebar_criterion", DEFAULT_CRITERION),
            mode=values.get("sidebar_mode", MODES[0]),
            allocation=values.get("sidebar_allocation", ALLOCATIONS[0]),
            round_to=values.get("sidebar_round_to", 1),
            max_layer_ratio=values.get("sidebar_max_layer_ratio", MAX_GROUP_RATIO),
        ).validate()
    except (ValueError, KeyError) as error:
        return rejected + [str(error.args[0] if error.args else error)]
    if "images_sample" in values and values["images_sample"] not in sample_image_names():
        rejected.append("sample")
        values.pop("images_sample")
    st.session_state.update(values)
    if overrides:
        st.session_state[OVERRIDES_KEY] = overrides
    return rejected


def _write_link(config: PruneConfig) -> None:
    """Keep the URL's query string equal to the current configuration, so the address bar is a shareable link."""
    expected = {
        "model": config.model,
        "mode": config.mode,
        "criterion": config.criterion,
        "allocation": config.allocation,
        "ratio": f"{config.ratio:g}",
        "round_to": str(config.round_to),
        "max_layer": f"{config.max_layer_ratio:g}",
    }
    if config.overrides:
        expected["overrides"] = ",".join(f"{layer}:{ratio:g}" for layer, ratio in config.overrides)
    if "images_sample" in st.session_state:
        expected["sample"] = st.session_state["images_sample"]
    if st.query_params.to_dict() != expected:
        st.query_params.from_dict(expected)


def sidebar() -> PruneConfig:
    """Draw the shared sidebar and return the configuration it selects."""
    rejected = _read_link()
    with st.sidebar:
        st.header("Pruning setup")
        if rejected:
            st.warning("Ignored from the link: " + "; ".join(rejected) + ". The defaults are used instead.")
        choices = model_choices()
        if st.session_state.get("sidebar_model") not in choices:
            st.session_state.pop("sidebar_model", None)  # an upload that the server no longer has
        name = st.selectbox(
            "Model",
            choices,
            format_func=lambda n: get_model_entry(n).label,
            key="sidebar_model",
        )
        entry = get_model_entry(name)
        st.caption(entry.summary)
        if not entry.pretrained:
            st.warning("Untrained: the pretrained weights are not on this machine, so only structure, size and speed are real.")
            if entry.download is not None:
                _download_button(entry)
        modes = MODES
        problem = structured_problem(name)
        if problem is not None:
            st.error(problem)
            modes = tuple(mode for mode in MODES if mode != "structured")
            st.session_state["sidebar_mode"] = modes[0]

        mode = st.radio(
            "Mode",
            modes,
            format_func=lambda m: "Remove channels (structured)" if m == "structured" else "Zero weights (masks)",
            key="sidebar_mode",
            help="Structured pruning removes whole channels, so the model gets smaller and faster. "
            "Masks zero single weights: the shapes stay, so a dense kernel runs just as long.",
        )
        criteria = applicable_criteria(load_base_model(name))
        criterion = st.selectbox(
            "Importance criterion",
            criteria,
            index=criteria.index(DEFAULT_CRITERION),
            format_func=lambda c: get_criterion(c).label,
            key="sidebar_criterion",
            disabled=mode != "structured",
            help="Unstructured masks always rank single weights by magnitude.",
        )
        st.caption(get_criterion(criterion).summary)
        allocation = st.radio(
            "Allocation",
            ALLOCATIONS,
            format_func=lambda a: "Same ratio in every layer" if a == "uniform" else "One ranking across layers",
            key="sidebar_allocation",
            horizontal=True,
        )
        # The widget's own default matters even when session state contains a value (from a link,
        # a recipe or the Sensitivity page). After a run cut short by an early page click, the
        # browser can send the widget's default back, which would otherwise be min_value.
        ratio = st.slider(
            "Pruning ratio" if mode == "structured" else "Weight sparsity",
            min_value=0.0,
            max_value=MAX_RATIO,
            value=DEFAULT_RATIO,
            step=0.05,
            key="sidebar_ratio",
            help="Structured: share of output channels removed from each prunable group. "
            "Removed parameters grow roughly like 1-(1-r)², because each layer also loses input channels.",
        )
        round_to, max_layer_ratio, overrides = 1, MAX_GROUP_RATIO, {}
        if mode == "structured":
            round_to = st.selectbox(
                "Channel rounding",
                ROUNDINGS,
                key="sidebar_round_to",
                help="Keep a multiple of this many channels in every layer: CPU and GPU kernels often run "
                "faster on aligned widths. Compare the latency with 1 on the Overview.",
            )
            max_layer_ratio = st.slider(
                "Per-layer maximum",
                min_value=0.1,
                max_value=MAX_GROUP_RATIO,
                value=MAX_GROUP_RATIO,
                step=0.05,
                key="sidebar_max_layer_ratio",
                help="No layer loses more than this share of its channels, whatever the ratio or allocation.",
            )
            overrides = _overrides_editor(name, criterion)
        _checkpoint_uploader()
    config = PruneConfig(
        model=name,
        ratio=float(ratio),
        criterion=criterion,
        mode=mode,
        allocation=allocation,
        round_to=int(round_to),
        overrides=tuple(sorted(overrides.items())),
        max_layer_ratio=float(max_layer_ratio),
    )
    st.session_state[CONFIG_KEY] = config
    _write_link(config)
    return config


CHECKPOINTS_KEY = "user_checkpoints"  # catalogue names of the weights this session uploaded
CHECKPOINT_MESSAGE_KEY = "checkpoint_message"


def model_choices() -> list[str]:
    """Return the catalogue names for the model picker: every catalogue entry plus this session's uploads."""
    known = set(list_models(checkpoints=True))
    return list_models() + [name for name in st.session_state.get(CHECKPOINTS_KEY, []) if name in known]


@st.cache_data(max_entries=32, show_spinner="Checking that channels can be removed…")
def structured_problem(name: str) -> str | None:
    """Return why `name` cannot lose channels, or None when it can (by pruning it at the default settings)."""
    try:
        load_pruned(PruneConfig(model=name, ratio=DEFAULT_RATIO, criterion=DEFAULT_CRITERION))
    except StructuredPruningError as error:
        return str(error)
    return None


def _download_button(entry: ModelEntry) -> None:
    """Offer to fetch the weights into torchvision's cache, with a progress bar; nothing downloads without the click."""
    if not st.button(f"Download the pretrained weights ({weights_size_mb(entry.name):.0f} MB)", key=f"download_{entry.name}"):
        return
    bar = st.progress(0.0, text="Connecting…")

    def report(done: int, total: int | None) -> None:
        share = done / total if total else 0.0
        bar.progress(min(share, 1.0), text=f"{done / 1e6:.0f} of {total / 1e6:.0f} MB" if total else f"{done / 1e6:.0f} MB")

    try:
        entry.download(report)
    except OSError as error:
        bar.empty()
        st.error(f"The download failed ({error}). This machine may have no internet access; the model stays untrained.")
        return
    # every cached model, analysis and measurement of the untrained build is now stale
    st.cache_resource.clear()
    st.cache_data.clear()
    st.rerun()


def _load_uploaded_checkpoint() -> None:
    """Button callback: check the uploaded state_dict, add it to the catalogue and select it."""
    upload = st.session_state.get("checkpoint_upload")
    architecture = st.session_state.get("checkpoint_architecture")
    if upload is None or architecture is None:
        return
    try:
        entry = checkpoint_entry(architecture, upload.getvalue(), upload.name)
    except CheckpointError as error:
        st.session_state[CHECKPOINT_MESSAGE_KEY] = ("error", f"{upload.name} was not loaded: {error}")
        return
    names = st.session_state.setdefault(CHECKPOINTS_KEY, [])
    if entry.name not in names:
        names.append(entry.name)
    st.session_state["sidebar_model"] = entry.name
    st.session_state[CHECKPOINT_MESSAGE_KEY] = ("success", f"Loaded {upload.name} into {get_model_entry(architecture).label}.")


def _checkpoint_uploader() -> None:
    with st.expander("Your own weights", expanded=CHECKPOINT_MESSAGE_KEY in st.session_state):
        st.caption(
            "Upload a state_dict (torch.save(model.state_dict(), path)) for one of the catalogue's architectures. "
            "It is read with weights_only=True, so a file that would run code is rejected."
        )
        st.selectbox("Architecture", list_models(), format_func=lambda n: get_model_entry(n).label, key="checkpoint_architecture")
        upload = st.file_uploader("state_dict file", type=["pt", "pth", "bin"], key="checkpoint_upload")
        st.button("Load these weights", on_click=_load_uploaded_checkpoint, disabled=upload is None, key="checkpoint_load")
        message = st.session_state.pop(CHECKPOINT_MESSAGE_KEY, None)
        if message is not None:
            kind, text = message
            (st.error if kind == "error" else st.success)(text)


def _overrides_editor(name: str, criterion: str) -> dict[str, float]:
    """Editable table of per-layer ratios; an empty cell follows the slider."""
    analysis = load_analysis(name, criterion)
    stored = {layer: ratio for layer, ratio in st.session_state.get(OVERRIDES_KEY, {}).items()}
    with st.expander(f"Per-layer overrides ({len(stored)})", expanded=False):
        table = pd.DataFrame(
            {
                "layer": [group.name for group in analysis.groups],
                "channels": [group.channels for group in analysis.groups],
                "ratio": [stored.get(group.name) for group in analysis.groups],
            }
        )
        edited = st.data_editor(
            table,
            key=f"sidebar_overrides_{name}_{criterion}_{hash(tuple(sorted(stored.items())))}",
            disabled=["layer", "channels"],
            hide_index=True,
            column_config={"ratio": st.column_config.NumberColumn(min_value=0.0, max_value=MAX_RATIO, step=0.05)},
        )
        if st.button("Clear overrides", key="sidebar_clear_overrides", disabled=not stored):
            st.session_state[OVERRIDES_KEY] = {}
            st.rerun()
    overrides = {row.layer: float(row.ratio) for row in edited.itertuples() if pd.notna(row.ratio)}
    st.session_state[OVERRIDES_KEY] = overrides
    return overrides


def current_config() -> PruneConfig:
    """Return the sidebar's configuration for this session (app.py draws the sidebar before every page)."""
    ensure_routed()
    config = st.session_state.get(CONFIG_KEY)
    if config is None:
        config = sidebar()
    return config


def current_entry() -> ModelEntry:
    return get_model_entry(current_config().model)


def load_input_image(sample: str | None, upload: bytes | None, upload_name: str = "upload", model: str | None = None) -> Image.Image:
    """Load the uploaded image if there is one, else the named example of `model` (default: the shipped
    photos); raise MediaError on a bad file."""
    if upload is not None:
        buffer = io.BytesIO(upload)
        buffer.name = upload_name  # error messages name the user's file
        return load_image(buffer)
    if model is not None:
        return load_example(get_model_entry(model), sample)
    return load_sample_image(sample)


@st.cache_data(max_entries=16, show_spinner="Running the dense and the pruned model…")
def image_comparison(config: PruneConfig, sample: str | None, upload: bytes | None, upload_name: str = "upload") -> ImageComparison:
    entry = get_model_entry(config.model)
    image = load_input_image(sample, upload, upload_name, config.model)
    return compare_on_image(entry, load_base_model(config.model), load_pruned(config).model, image)


@st.cache_data(max_entries=16, show_spinner="Measuring accuracy on the labelled held-out data…")
def labelled_accuracies(config: PruneConfig) -> tuple[float, float, int]:
    """Return (dense accuracy, pruned accuracy, number of labelled held-out inputs) for a model with labels."""
    entry = get_model_entry(config.model)
    inputs, labels = entry.labelled_holdout()
    dense = labelled_accuracy(load_base_model(config.model), inputs, labels)
    return dense, labelled_accuracy(load_pruned(config).model, inputs, labels), len(labels)


@st.cache_data(max_entries=16, show_spinner="Computing Grad-CAM for both models…")
def cam_comparison(config: PruneConfig, sample: str | None, upload: bytes | None, upload_name: str = "upload") -> tuple[Image.Image, Image.Image, str, str]:
    """Return Grad-CAM overlays (dense, pruned) for the dense model's top-1 class, the layer and the class name."""
    entry = get_model_entry(config.model)
    dense = load_base_model(config.model)
    pruned = load_pruned(config).model
    image = fit_to_side(load_input_image(sample, upload, upload_name, config.model).convert("RGB"), entry.max_input_side)
    inputs = entry.preprocess(image)
    layer = default_cam_layer(dense, entry.example_inputs())
    class_index = int(infer(dense, inputs).argmax(1))
    view = model_view(entry, image)
    overlays = [cam_overlay(view, grad_cam(model, inputs, layer, class_index)) for model in (dense, pruned)]
    return overlays[0], overlays[1], layer, entry.categories[class_index]


@st.cache_data(max_entries=16, show_spinner="Drawing filters and feature maps…")
def inside_view(config: PruneConfig, layer: str, sample: str) -> dict:
    """Return the filter grid of the first conv and the dense and pruned feature-map grids of `layer`.

    The pruned grid puts each kept map at its dense position and crosses out the removed ones, so
    the two grids line up.
    """
    entry = get_model_entry(config.model)
    dense = load_base_model(config.model)
    result = load_pruned(config)
    kept = kept_output_channels(load_analysis(config.model, config.criterion), result.plan) if result.plan is not None else {}
    first = first_conv(dense)
    first_weight = dict(dense.named_modules())[first].weight.detach()
    inputs = prepare_input(entry, load_example(entry, sample))
    dense_maps = feature_maps(dense, layer, inputs)
    pruned_maps = feature_maps(result.model, layer, inputs)
    removed = removed_channels(dense, result.model, layer, kept)
    if layer in kept:
        pruned_maps = pruned_feature_maps_in_dense_order(pruned_maps, kept[layer], dense_maps.shape[0])
    return {
        "first_layer": first,
        "filters": filter_grid(first_weight, removed_channels(dense, result.model, first, kept)),
        "filters_total": first_weight.shape[0],
        "dense_maps": feature_map_grid(dense_maps),
        "pruned_maps": feature_map_grid(pruned_maps, removed),
        "channels": dense_maps.shape[0],
        "removed": len(removed),
        "map_size": tuple(dense_maps.shape[1:]),
    }


def run_video(config: PruneConfig, source: Path, *, remove_source: bool = False, **options) -> VideoJob:
    """Start dense and pruned models over `source` in a background job and return it.

    `options` are compare_on_video's keywords (stride, max_frames, max_seconds, max_side). The job
    keeps the output clip's bytes in memory and deletes its temporary files when it ends, and with
    `remove_source=True` it deletes `source` too. The models are loaded here, on the script thread,
    because Streamlit's caches need the script's context.
    """
    entry = get_model_entry(config.model)
    dense = load_base_model(config.model)
    pruned = load_pruned(config).model
    return VideoJob(entry, dense, pruned, source, remove_input=remove_source, **options).start()


UPLOAD_PREFIX = "pruning-upload-"


def save_upload(data: bytes, suffix: str) -> Path:
    """Write an uploaded file to a new temporary file and return its path; the caller deletes it."""
    handle, name = tempfile.mkstemp(prefix=UPLOAD_PREFIX, suffix=suffix.lower())
    with os.fdopen(handle, "wb") as file:
        file.write(data)
    return Path(name)


def _format_seconds(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s"


def video_progress_text(progress: JobProgress) -> str:
    """Describe a running video job: frames done, elapsed time and an estimate of the time left."""
    total = progress.total if progress.total else "?"
    text = f"Frame {progress.done} of {total} · {_format_seconds(progress.elapsed_s)} elapsed"
    if progress.remaining_s is not None:
        text += f" · about {_format_seconds(progress.remaining_s)} left"
    return text


def follow_video_job(job: VideoJob, poll_s: float = 0.25) -> None:
    """Draw a progress bar and a Stop button for `job` and block until the job ends.

    Any widget change in the browser reruns the page, which ends this call at its next progress
    update. The job keeps running in its own thread, so the next run finds it in session state and
    follows it again. The Stop button's callback runs at the start of that next run and calls
    `job.stop()`, so the job finishes the clip with the frames done so far.
    """
    panel = st.empty()
    with panel.container():
        st.button(
            "Stop and keep the frames done so far",
            key="video_stop",
            on_click=job.stop,
            disabled=job.stop_requested,
            icon=":material/stop_circle:",
        )
        bar = st.progress(0.0, text="Decoding the first frame…")
        while not job.wait(poll_s):
            progress = job.progress()
            prefix = "Stopping after this frame · " if job.stop_requested else ""
            bar.progress(progress.share, text=prefix + video_progress_text(progress))
    panel.empty()


@st.cache_data(max_entries=16, show_spinner="Timing masks and removal…")
def masks_vs_removal(name: str, ratio: float, criterion: str) -> list[dict]:
    """Latency and size of masked and channel-pruned copies at the same ratio, next to dense."""
    entry = get_model_entry(name)
    base = load_base_model(name)
    inputs = torch.randn(entry.example_input_shape, generator=torch.Generator().manual_seed(0))
    rows = []
    for mode in ("unstructured", "structured"):
        config = PruneConfig(model=name, ratio=ratio, criterion=criterion, mode=mode)
        model = load_pruned(config).model
        dense_latency, pruned_latency = compare_latency(base, model, inputs)
        stats = model_stats(model, entry.example_inputs())
        rows.append(
            {
                "mode": "masks (zeros)" if mode == "unstructured" else "channel removal",
                "non-zero parameters": stats.nonzero_params,
                "MACs": stats.macs,
                "dense latency (ms)": round(dense_latency.median_ms, 2),
                "pruned latency (ms)": round(pruned_latency.median_ms, 2),
                "speed-up": round(dense_latency.median_ms / pruned_latency.median_ms, 2),
            }
        )
    return rows


@st.cache_data(max_entries=8, show_spinner=False)
def sensitivity(name: str, criterion: str, ratios: tuple[float, ...], images: int, _progress=None) -> SensitivityScan:
    entry = get_model_entry(name)
    inputs = to_batch(entry, calibration_images(entry)[:images])
    return scan(entry, load_base_model(name), load_analysis(name, criterion), inputs, ratios=ratios, progress=_progress)


@st.cache_data(max_entries=8, show_spinner=False)
def sweep(name: str, criteria: tuple[str, ...], ratios: tuple[float, ...], allocation: str, _progress=None) -> list[SweepPoint]:
    entry = get_model_entry(name)
    inputs = to_batch(entry, holdout_images(entry))
    return run_sweep(name, load_base_model(name), inputs, criteria=criteria, ratios=ratios, allocation=allocation, progress=_progress)


@st.cache_resource(max_entries=2, show_spinner="Loading calibration and held-out images…")
def evaluation_batches(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Calibration and held-out input batches for a model (read-only, shared)."""
    entry = get_model_entry(name)
    return to_batch(entry, calibration_images(entry)), to_batch(entry, holdout_images(entry))


def apply_overrides(overrides: dict[str, float]) -> None:
    """Put per-layer ratios into the sidebar and set its slider to 0, so only they prune."""
    st.session_state[OVERRIDES_KEY] = dict(overrides)
    st.session_state["sidebar_ratio"] = 0.0


RECOVERY_METHODS = ("BatchNorm recalibration", "least-squares reconstruction", "distillation")
LABELLED_FINETUNE = "fine-tuning with labels"
MIRROR_YARDSTICK = "yardstick: dense model on mirrored images"


def recovery_methods(entry: ModelEntry) -> tuple[str, ...]:
    """Return the repairs that apply to `entry`: fine-tuning with labels only where it has labelled data."""
    return RECOVERY_METHODS + ((LABELLED_FINETUNE,) if entry.finetune_with_labels is not None else ())


def run_recovery(
    config: PruneConfig,
    methods: tuple[str, ...],
    budget_s: float,
    progress: Callable[[float, str], None],
) -> list[dict]:
    """Apply each recovery method to a copy of the pruned model and measure it on held-out images."""
    entry = get_model_entry(config.model)
    base = load_base_model(config.model)
    result = load_pruned(config)
    calibration, holdout = evaluation_batches(config.model)
    dense_output = infer(base, holdout)
    models = {"no recovery": result.model}

    for index, method in enumerate(methods):
        progress(index / len(methods), f"{method}…")
        if method == "BatchNorm recalibration":
            models[method] = recalibrate_batchnorm(result.model, base, calibration)
        elif method == "least-squares reconstruction":
            kept = kept_output_channels(load_analysis(config.model, config.criterion), result.plan)
            models[method] = reconstruct(result.model, base, calibration, kept)
        elif method == "distillation":

            def step(elapsed: float, steps: int, loss: float, index=index) -> None:
                progress((index + min(elapsed / budget_s, 1.0)) / len(methods), f"distillation: step {steps}, loss {loss:.3f}")

            models[method], _ = distill(entry, result.model, base, calibration_images(entry), budget_s=budget_s, progress=step)
        elif method == LABELLED_FINETUNE:
            student = copy.deepcopy(result.model)  # trained in place; the cached pruned model stays as it is

            def share(used: float, index=index) -> None:
                progress((index + used) / len(methods), "fine-tuning with labels…")

            entry.finetune_with_labels(student, seconds=budget_s, progress=share)
            models[method] = student
    progress(1.0, "Measuring on held-out images…")
    rows = []
    for name, model in models.items():
        row = recovery_row(entry, name, dense_output, infer(model, holdout))
        if entry.labelled_holdout is not None:
            inputs, labels = entry.labelled_holdout()
            row[f"labelled accuracy ({len(labels)} held-out)"] = round(labelled_accuracy(model, inputs, labels), 3)
        rows.append(row)
    mirrored = mirrored_output(entry, base, holdout)
    if mirrored is not None:
        rows.append(recovery_row(entry, MIRROR_YARDSTICK, dense_output, mirrored))
    return rows


def upload_limit_mb() -> int:
    """Largest upload the server accepts, in MB (server.maxUploadSize in .streamlit/config.toml)."""
    return int(st.get_option("server.maxUploadSize"))


EXPORT_FILES = {"torchscript": ("TorchScript", ".pt"), "onnx": ("ONNX", ".onnx"), "state": ("recipe + weights", ".zip")}


@st.cache_data(max_entries=8, show_spinner="Exporting the pruned model…")
def export_bytes(config: PruneConfig, fmt: str) -> bytes:
    """Export the pruned model for `config` in format `fmt` and return the file bytes for a download button."""
    with tempfile.TemporaryDirectory(prefix="pruning-export-") as folder:
        path = export(load_pruned(config).model, config, fmt, Path(folder) / f"model{EXPORT_FILES[fmt][1]}")
        return path.read_bytes()


def apply_recipe(data: bytes) -> str | None:
    """Set the sidebar from an uploaded recipe; return an error message, or None when it worked.

    Runs as a widget callback, before the sidebar is drawn, when its widget values may still change.
    """
    try:
        config = config_from_recipe(json.loads(data))
    except (ValueError, KeyError) as error:
        return f"The recipe could not be loaded: {error}"
    st.session_state.update(
        {
            "sidebar_model": config.model,
            "sidebar_mode": config.mode,
            "sidebar_criterion": config.criterion,
            "sidebar_allocation": config.allocation,
            "sidebar_ratio": config.ratio,
            "sidebar_round_to": config.round_to,
            "sidebar_max_layer_ratio": config.max_layer_ratio,
            OVERRIDES_KEY: dict(config.overrides),
        }
    )
    return None


# --- report page ---------------------------------------------------------------------------------

from pruning.report import (
    ReportData,
    ReportExport,
    collect_report,
    curve_criteria,
    export_report,
)

SWEEP_RESULT_KEY = "sweep_result"  # (model, criteria, points), written by the Sensitivity page's sweep


def saved_sweep_curve(config: PruneConfig) -> tuple[list[SweepPoint], str] | None:
    """Return the Sensitivity page's sweep points that fit the report of `config`, and what they measured.

    A sweep fits when it ran on the same model in structured mode and includes the sidebar's criterion.
    """
    saved = st.session_state.get(SWEEP_RESULT_KEY)
    if saved is None or config.mode != "structured":
        return None
    model, criteria, points = saved
    if model != config.model or config.criterion not in criteria:
        return None
    # NOTE: the saved sweep does not record its allocation, so one run before the sidebar's allocation
    # changed is reused as it is. It always uses the default rounding and per-layer maximum.
    shown = curve_criteria(config)
    source = f"all {len(holdout_images(get_model_entry(config.model)))} held-out images, from the ratio sweep on the Sensitivity page"
    return [point for point in points if point.criterion in shown], source


def build_report(config: PruneConfig, sample: str, progress: Callable[[float, str], None]) -> tuple[ReportData, ReportExport]:
    """Measure the report of `config` with `sample` as the example photo, and export its HTML and PNG files.

    Reuses the cached pruned model and latency, and the Sensitivity page's sweep when it fits.
    Raises ValueError or RuntimeError when the configuration cannot be pruned.
    """
    saved = saved_sweep_curve(config)
    curve, source = saved if saved is not None else (None, "")
    data = collect_report(
        config,
        load_base_model(config.model),
        load_pruned(config),
        sample=sample,
        latency=latency_pair(config),
        curve=curve,
        curve_source=source,
        progress=progress,
    )
    return data, export_report(data)
