"""The CLI as users run it: `python -m pruning ...` in a subprocess, JSON on stdout."""

import json
import subprocess
import sys
from pathlib import Path

import av
import pytest
from clips import write_clip

ROOT = Path(__file__).resolve().parent.parent
from pruning.cli import main
from pruning.media import sample_video_path


def run_cli(*args, check=True):
    completed = subprocess.run(
        [sys.executable, "-m", "pruning", *args], capture_output=True, text=True, timeout=600
    )
    if check:
        assert completed.returncode == 0, completed.stderr
    return completed


def test_models_json():
    rows = json.loads(run_cli("models", "--json").stdout)
    by_name = {row["name"]: row for row in rows}
    assert set(by_name) >= {"mobilenet_v2", "hed"}
    for row in rows:
        assert set(row) >= {"name", "task", "pretrained", "weights_source"}
    assert by_name["mobilenet_v2"]["pretrained"] is True
    assert by_name["hed"]["task"] == "edges"


def test_prune_mobilenet_half_json():
    payload = json.loads(run_cli("prune", "--model", "mobilenet_v2", "--ratio", "0.5", "--json").stdout)
    assert payload["macs"]["pruned"] < payload["macs"]["dense"] / 2
    assert payload["params"]["pruned"] < payload["params"]["dense"]
    assert payload["output_shape"]["dense"] == payload["output_shape"]["pruned"] == [1, 1000]
    assert payload["latency_ms"]["dense"] > 0
    assert payload["latency_ms"]["pruned"] > 0
    assert {"top1_agreement", "top5_overlap", "kl_divergence"} <= set(payload["fidelity"])
    layers = {layer["name"]: layer for layer in payload["layers"]}
    assert layers["classifier.1"]["channels_pruned"] == 1000
    assert layers["features.18.0"]["channels_pruned"] < layers["features.18.0"]["channels_dense"]


def test_prune_hed_unstructured_with_image(tmp_path):
    from PIL import Image

    image = tmp_path / "square.png"
    canvas = Image.new("RGB", (96, 80), (200, 200, 200))
    canvas.paste((20, 20, 20), (30, 20, 66, 60))
    canvas.save(image)
    payload = json.loads(
        run_cli("prune", "--model", "hed", "--ratio", "0.4", "--mode", "unstructured", "--image", str(image), "--json").stdout
    )
    assert payload["params"]["pruned"] == payload["params"]["dense"]
    assert payload["nonzero_params"]["pruned"] < payload["nonzero_params"]["dense"]
    assert payload["output_shape"]["pruned"] == [1, 1, 80, 96]
    assert payload["fidelity"]["images"] == 1
    assert 0.0 <= payload["fidelity"]["edge_f1"] <= 1.0


@pytest.mark.slow
def test_video_hed_bikes_50_frames(tmp_path):
    output = tmp_path / "out.mp4"
    payload = json.loads(
        run_cli("video", "--model", "hed", "--ratio", "0.3", str(sample_video_path("bikes")), "-o", str(output), "--max-frames", "50", "--json").stdout
    )
    assert payload["frames_in"] == 50
    assert payload["frames_out"] == 50
    assert payload["duration_s"] == 2.0  # 50 frames at 25 fps
    assert 0.0 <= payload["pipeline"]["overhead_share"] < 1.0
    assert payload["output"]["codec"] == "h264"
    assert payload["fps"]["dense"] > 0
    assert payload["fps"]["pruned"] > 0
    with av.open(str(output)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.pix_fmt == "yuv420p"
        assert sum(1 for _ in container.decode(stream)) == 50


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("prune", "--model", "nope", "--ratio", "0.5"), "invalid choice: 'nope'"),
        (("prune", "--ratio", "1.5"), "invalid ratio '1.5'"),
        (("prune", "--ratio", "abc"), "invalid ratio 'abc'"),
        (("prune", "--ratio", "0.5", "--image", "/no/such.png"), "image not found: /no/such.png"),
        (("prune", "--model", "hed", "--ratio", "0.5", "--criterion", "bn_scale"), "no BatchNorm layers"),
        (("video", "--ratio", "0.5", "/no/clip.mp4", "-o", "out.mp4"), "video not found"),
        (("video", "--ratio", "0.5", "--max-frames", "0", "x.mp4", "-o", "out.mp4"), "invalid count '0'"),
        (("video", "--ratio", "0.5", str(ROOT / "README.md"), "-o", "/no/such/dir/out.mp4"), "output directory not found"),
        (("video", "--ratio", "0.5", "--max-seconds", "-1", "x.mp4", "-o", "out.mp4"), "invalid duration '-1'"),
        (("video", "--ratio", "0.5", "--max-side", "4", "x.mp4", "-o", "out.mp4"), "invalid size '4'"),
        (("video", "--ratio", "0.5", str(ROOT / "README.md"), "-o", str(ROOT / "tests")), "must be an .mp4 file"),
    ],
)
def test_bad_input_exits_2_one_line(args, message, capsys):
    # in-process, to skip a torch import per case; the subprocess case below covers the real entry
    try:
        status = main(list(args))
    except SystemExit as exit_:
        status = exit_.code
    stderr = capsys.readouterr().err
    assert status == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert message in lines[0]


def test_video_rejects_non_video_and_bad_output(tmp_path):
    text = tmp_path / "notes.mp4"
    text.write_text("hello")
    completed = run_cli("video", "--ratio", "0.5", str(text), "-o", str(tmp_path / "out.mp4"), check=False)
    assert completed.returncode == 2
    assert len(completed.stderr.strip().splitlines()) == 1
    assert "Traceback" not in completed.stderr
    clip = write_clip(tmp_path / "clip.mp4")
    completed = run_cli("video", "--ratio", "0.5", str(clip), "-o", str(tmp_path / "out.avi"), check=False)
    assert completed.returncode == 2
    assert "must be an .mp4 file" in completed.stderr


def test_video_output_guards(tmp_path, capsys):
    clip = write_clip(tmp_path / "clip.mp4")
    folder = tmp_path / "folder.mp4"
    folder.mkdir()
    for output, message in ((folder, "it is a directory"), (clip, "it is the input clip")):
        assert main(["video", "--ratio", "0.3", str(clip), "-o", str(output)]) == 2
        assert message in capsys.readouterr().err
    assert clip.stat().st_size > 0


@pytest.mark.parametrize(("model", "fmt", "suffix"), [("mobilenet_v2", "torchscript", ".pt"), ("hed", "onnx", ".onnx"), ("mobilenet_v2", "state", ".zip")])
def test_export_reloads_to_same_outputs(model, fmt, suffix, tmp_path, capsys):
    output = tmp_path / f"model{suffix}"
    assert main(["export", "--model", model, "--ratio", "0.3", "--format", fmt, "-o", str(output), "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["path"] == str(output)
    assert payload["bytes"] == output.stat().st_size > 0
    assert payload["max_abs_difference"] < 1e-3
    assert payload["recipe"]["config"]["ratio"] == 0.3


def test_export_rejects_missing_folder(capsys):
    assert main(["export", "--ratio", "0.3", "--format", "onnx", "-o", "/no/such/dir/m.onnx"]) == 2
    assert "output directory not found" in capsys.readouterr().err


@pytest.mark.slow
def test_sweep_json(capsys):
    assert main(["sweep", "--model", "mobilenet_v2", "--criteria", "l1,random", "--ratios", "0,0.5", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    points = payload["points"]
    assert [(p["criterion"], p["ratio"]) for p in points] == [("l1", 0.0), ("l1", 0.5), ("random", 0.0), ("random", 0.5)]
    assert points[0]["fidelity"] == 1.0
    assert points[1]["macs"] < points[0]["macs"]


@pytest.mark.slow
def test_sensitivity_json_with_budget(capsys):
    args = ["sensitivity", "--model", "mobilenet_v2", "--ratios", "0.5", "--images", "2", "--mac-reduction", "0.2", "--json"]
    assert main(args) == 0
    payload = json.loads(capsys.readouterr().out)
    assert len(payload["layers"]) == 25
    assert all(0.0 <= layer["fidelity"][0] <= 1.0 for layer in payload["layers"])
    assert payload["overrides"]
    assert set(payload["overrides"].values()) == {0.5}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("sweep", "--criteria", "l1,nope"), "invalid criteria 'l1,nope'"),
        (("sweep", "--ratios", "0,2"), "invalid ratio '2'"),
        (("sweep", "--model", "hed", "--criteria", "bn_scale"), "no BatchNorm layers"),
        (("sensitivity", "--mac-reduction", "1.5"), "invalid share '1.5'"),
    ],
)
def test_sweep_and_sensitivity_bad_input(args, message, capsys):
    try:
        status = main(list(args))
    except SystemExit as exit_:
        status = exit_.code
    assert status == 2
    assert message in capsys.readouterr().err


CLI_CASES = [
    (model, criterion, mode, allocation)
    for model in ("mobilenet_v2", "hed")
    for criterion in ("l1", "l2", "bn_scale", "taylor", "fpgm", "lamp", "random")
    for mode, allocation in (("structured", "uniform"),)
    if (model, criterion) != ("hed", "bn_scale")
] + [(model, "l1", mode, "global") for model in ("mobilenet_v2", "hed") for mode in ("structured", "unstructured")]


@pytest.mark.slow
@pytest.mark.parametrize(("model", "criterion", "mode", "allocation"), CLI_CASES)
def test_prune_every_method(model, criterion, mode, allocation, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (90, 140, 200)).save(image)
    args = ["prune", "--model", model, "--ratio", "0.3", "--criterion", criterion, "--mode", mode, "--allocation", allocation]
    assert main(args + ["--image", str(image), "--latency-budget", "0", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert (payload["criterion"], payload["mode"], payload["allocation"]) == (criterion, mode, allocation)
    if mode == "structured":
        assert payload["macs"]["pruned"] < payload["macs"]["dense"]
    else:
        assert payload["nonzero_params"]["pruned"] < payload["nonzero_params"]["dense"]
    assert payload["output_shape"]["pruned"] == payload["output_shape"]["dense"]
