"""The dashboard through Streamlit's AppTest, with the real models and no stubs."""

import io

import pytest
from clips import write_clip
from PIL import Image
from streamlit.testing.v1 import AppTest

ENTRY = "app_entry.py"
PAGES = ["overview", "importance", "images", "video"]
TIMEOUT = 300


def open_app(**state) -> AppTest:
    app = AppTest.from_file(ENTRY, default_timeout=TIMEOUT)
    for key, value in state.items():
        app.session_state[key] = value
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def go_to(app: AppTest, page: str) -> AppTest:
    app.switch_page(f"../pages/{page}.py").run()
    assert not app.exception, [e.value for e in app.exception]
    return app


def metric(app: AppTest, label: str) -> str:
    for element in app.metric:
        if element.label == label:
            return element.value
    raise AssertionError(f"no metric {label!r} among {[m.label for m in app.metric]}")


def count(text: str) -> float:
    """Turn a metric such as '607.5 k' or '2.01 M' into a number."""
    number, unit = text.split()
    return float(number) * {"k": 1e3, "M": 1e6, "G": 1e9}[unit]


@pytest.mark.parametrize("model", ["mobilenet_v2", "hed"])
@pytest.mark.parametrize("page", PAGES)
def test_page_runs_with_real_model(model, page):
    app = go_to(open_app(sidebar_model=model), page)
    assert not app.error, [e.value for e in app.error]
    for label in ("Parameters", "MACs", "File size", "CPU latency (median)"):
        assert metric(app, label)


@pytest.mark.parametrize("page", PAGES)
def test_slider_changes_numbers(page):
    app = go_to(open_app(), page)
    before = (metric(app, "Parameters"), metric(app, "MACs"))
    app.slider(key="sidebar_ratio").set_value(0.7).run()
    assert not app.exception
    after = (metric(app, "Parameters"), metric(app, "MACs"))
    assert after[0] != before[0]
    assert after[1] != before[1]
    # fewer parameters and MACs at the higher ratio
    assert count(after[0]) < count(before[0])
    assert count(after[1]) < count(before[1])


def test_ratio_zero_shows_dense_numbers():
    app = open_app(sidebar_ratio=0.0)
    parameters = next(m for m in app.metric if m.label == "Parameters")
    assert parameters.value == "3.50 M"
    assert parameters.proto.delta == "no change"


def test_importance_layer_detail():
    app = go_to(open_app(sidebar_ratio=0.5), "importance")
    assert len(app.get("plotly_chart")) == 4  # all layers, one layer, and two criteria on it
    layer = app.selectbox(key="importance_layer")
    layer.set_value("features.16.conv.2").run()
    assert not app.exception
    members = app.dataframe[0].value
    assert {"features.14.conv.2", "features.15.conv.2", "features.16.conv.2"} <= set(members["layer"])
    assert set(members["loses"]) == {"output channels", "input channels"}


def test_images_upload_png_classifies():
    app = go_to(open_app(), "images")
    buffer = io.BytesIO()
    Image.new("RGBA", (300, 200), (255, 0, 0, 128)).save(buffer, format="PNG")
    app.file_uploader(key="images_upload").upload("red.png", buffer.getvalue(), "image/png").run()
    assert not app.exception
    assert not app.error
    assert metric(app, "Top-5 overlap").endswith("%")


def test_images_upload_garbage_shows_error():
    app = go_to(open_app(), "images")
    app.file_uploader(key="images_upload").upload("fake.png", b"definitely not a PNG", "image/png").run()
    assert not app.exception
    assert app.error
    assert "image" in app.error[0].value.lower()
    # the metrics above the error stay
    assert metric(app, "Parameters")


def test_hed_images_show_fidelity():
    app = go_to(open_app(sidebar_model="hed", sidebar_ratio=0.3), "images")
    assert metric(app, "PSNR vs dense").endswith("dB")
    assert 0.0 <= float(metric(app, "Edge F1 vs dense")) <= 1.0


def test_video_run_on_sample(tmp_path):
    app = go_to(open_app(sidebar_ratio=0.5), "video")
    app.number_input(key="video_max_frames").set_value(4)
    app.button(key="video_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert app.get("video")
    assert float(metric(app, "Dense fps (model only)")) > 0
    assert metric(app, "Output").endswith("h264")
    assert "4 frames" in app.subheader[-1].value


def test_video_upload_clip_and_garbage(tmp_path):
    app = go_to(open_app(), "video")
    clip = write_clip(tmp_path / "clip.mp4", frames=6).read_bytes()
    app.file_uploader(key="video_upload").upload("clip.mp4", clip, "video/mp4")
    app.button(key="video_run").click().run()
    assert not app.exception
    assert "clip.mp4: 6 frames" in app.subheader[-1].value

    app.file_uploader(key="video_upload").set_value(("bad.mp4", b"\x00" * 100, "video/mp4"))
    app.button(key="video_run").click().run()
    assert not app.exception
    assert app.error
    # the earlier result is kept
    assert "clip.mp4: 6 frames" in app.subheader[-1].value


# ---------------------------------------------------------------------------------------------
# video options, upload clean-up, frame scrubber and the camera page
# ---------------------------------------------------------------------------------------------


def jpeg_bytes(size=(320, 240), colour=(200, 120, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_video_stride_and_seconds_cap():
    app = go_to(open_app(sidebar_ratio=0.5), "video")
    app.number_input(key="video_stride").set_value(5)
    app.radio(key="video_limit").set_value("seconds")
    app.run()
    app.number_input(key="video_max_seconds").set_value(1.0)
    app.button(key="video_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    # bikes.mp4 is 25 fps: frames 0, 5, 10, 15 and 20 start before 1 s
    assert "bikes: 5 frames, 1.0 s" in app.subheader[-1].value
    assert metric(app, "Output frame rate") == "5.00 fps"
    assert metric(app, "Pipeline overhead").endswith("%")


def test_video_upload_temp_file_removed(tmp_path, monkeypatch):
    import tempfile

    upload_folder = tmp_path / "server-tmp"
    upload_folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(upload_folder))
    app = go_to(open_app(), "video")
    clip = write_clip(tmp_path / "clip.mp4", frames=4).read_bytes()
    app.file_uploader(key="video_upload").upload("clip.mp4", clip, "video/mp4")
    app.button(key="video_run").click().run()
    assert not app.exception
    assert "clip.mp4: 4 frames" in app.subheader[-1].value
    assert list(upload_folder.iterdir()) == []

    app.file_uploader(key="video_upload").set_value(("bad.mp4", b"\x00" * 100, "video/mp4"))
    app.button(key="video_run").click().run()
    assert app.error
    assert list(upload_folder.iterdir()) == []


def test_video_audio_only_upload_shows_error(tmp_path):
    from clips import write_audio_only

    app = go_to(open_app(), "video")
    audio = write_audio_only(tmp_path / "talk.mp4").read_bytes()
    app.file_uploader(key="video_upload").upload("talk.mp4", audio, "video/mp4")
    app.button(key="video_run").click().run()
    assert not app.exception
    assert app.error
    assert "no video stream" in app.error[0].value
    assert not app.get("video")


def test_video_scrubber_classifier_labels(tmp_path):
    app = go_to(open_app(), "video")
    clip = write_clip(tmp_path / "clip.mp4", frames=5).read_bytes()
    app.file_uploader(key="video_upload").upload("clip.mp4", clip, "video/mp4")
    app.button(key="video_run").click().run()
    app.slider(key="video_frame").set_value(3).run()
    assert not app.exception, [e.value for e in app.exception]
    images = app.get("image")
    assert images
    assert "dense:" in images[-1].captions[0]
    assert "0.30 s" in images[-1].captions[0]


def test_video_scrubber_hed_wipe(tmp_path):
    app = go_to(open_app(sidebar_model="hed", sidebar_ratio=0.3), "video")
    clip = write_clip(tmp_path / "clip.mp4", frames=3).read_bytes()
    app.file_uploader(key="video_upload").upload("clip.mp4", clip, "video/mp4")
    app.button(key="video_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    app.slider(key="video_wipe").set_value(20).run()
    app.slider(key="video_frame").set_value(2).run()
    assert not app.exception, [e.value for e in app.exception]
    assert "edge F1 of this frame" in app.get("image")[-1].captions[0]


@pytest.mark.parametrize("model", ["mobilenet_v2", "hed"])
def test_camera_snapshot_compares(model):
    app = go_to(open_app(sidebar_model=model, sidebar_ratio=0.3), "camera")
    assert any("camera access" in info.value for info in app.info)
    app.camera_input(key="camera_snapshot").upload("photo.jpg", jpeg_bytes(), "image/jpeg").run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error
    if model == "mobilenet_v2":
        assert metric(app, "Same top-1 class") in ("yes", "no")
        assert metric(app, "Top-5 overlap").endswith("%")
    else:
        assert 0.0 <= float(metric(app, "Edge F1 vs dense")) <= 1.0


def test_importance_compares_criteria():
    app = go_to(open_app(sidebar_ratio=0.5), "importance")
    app.selectbox(key="importance_other").set_value("random").run()
    assert not app.exception
    assert len(app.get("plotly_chart")) == 4
    assert float(metric(app, "Rank correlation (Spearman)")) < 0.5
    assert metric(app, "Same channels removed").endswith("%")
    assert app.dataframe


def test_masks_mode_overview():
    app = open_app(sidebar_mode="unstructured", sidebar_ratio=0.5)
    assert metric(app, "Non-zero parameters")
    assert metric(app, "MACs") == "0.320 G"
    assert any("of the prunable conv/linear weights are zero" in m.value for m in app.markdown)
    app.button(key="overview_masks_vs_removal").click().run()
    assert not app.exception
    table = app.dataframe[0].value
    assert list(table["mode"]) == ["masks (zeros)", "channel removal"]
    assert table["MACs"][1] < table["MACs"][0]


@pytest.mark.slow
def test_sensitivity_scan_sets_overrides():
    app = go_to(open_app(sidebar_model="hed", sidebar_ratio=0.3), "sensitivity")
    app.multiselect(key="sensitivity_ratios").set_value([0.5])
    app.number_input(key="sensitivity_images").set_value(2)
    app.button(key="sensitivity_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.get("plotly_chart")
    app.button(key="sensitivity_apply").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.slider(key="sidebar_ratio").value == 0.0
    assert app.session_state["layer_overrides"]
    # the overrides prune: fewer MACs than dense at slider 0
    macs = next(m for m in app.metric if m.label == "MACs")
    assert macs.proto.delta.startswith("-")


@pytest.mark.slow
def test_sweep_draws_curves():
    app = go_to(open_app(), "sensitivity")
    app.multiselect(key="sweep_criteria").set_value(["l1"])
    app.button(key="sweep_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(app.get("plotly_chart")) == 4


@pytest.mark.slow
def test_recovery_table():
    app = go_to(open_app(sidebar_ratio=0.15, sidebar_allocation="global"), "recovery")
    app.multiselect(key="recovery_methods").set_value(["BatchNorm recalibration", "least-squares reconstruction"])
    app.button(key="recovery_run").click().run()
    assert not app.exception, [e.value for e in app.exception]
    table = app.dataframe[0].value
    assert list(table["model"]) == [
        "no recovery",
        "BatchNorm recalibration",
        "least-squares reconstruction",
        "yardstick: dense model on mirrored images",
    ]
    assert table["top-1 agreement"][2] > table["top-1 agreement"][0]
    # the dense model disagrees with itself on some mirrored frames, but far from always
    assert 0.3 < table["top-1 agreement"][3] < 1.0
    assert any("Yardstick" in caption.value for caption in app.caption)


def test_export_and_recipe_round_trip():
    import json as json_module

    app = open_app(sidebar_ratio=0.45, sidebar_allocation="global")
    app.button(key="overview_export_onnx").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.get("download_button")

    from pruning.explorer import PruneConfig
    from pruning.export import recipe

    data = json_module.dumps(recipe(PruneConfig("hed", 0.25, criterion="l2", allocation="uniform", round_to=8))).encode()
    fresh = open_app()
    fresh.file_uploader(key="overview_recipe_upload").upload("recipe.json", data, "application/json").run()
    assert not fresh.exception, [e.value for e in fresh.exception]
    fresh.run()
    assert fresh.selectbox(key="sidebar_model").value == "hed"
    assert fresh.slider(key="sidebar_ratio").value == 0.25
    assert fresh.selectbox(key="sidebar_criterion").value == "l2"
    assert fresh.selectbox(key="sidebar_round_to").value == 8

    fresh.file_uploader(key="overview_recipe_upload").set_value(("bad.json", b"{}", "application/json")).run()
    assert any("could not be loaded" in e.value for e in fresh.error)


def test_link_restores_view():
    app = AppTest.from_file(ENTRY, default_timeout=TIMEOUT)
    app.query_params.update({"model": "hed", "ratio": "0.45", "criterion": "fpgm", "allocation": "global", "round_to": "8"})
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.selectbox(key="sidebar_model").value == "hed"
    assert app.slider(key="sidebar_ratio").value == 0.45
    assert app.selectbox(key="sidebar_criterion").value == "fpgm"
    assert app.radio(key="sidebar_allocation").value == "global"
    # the URL follows the widgets
    app.slider(key="sidebar_ratio").set_value(0.2).run()
    assert app.query_params["ratio"] == ["0.2"] or app.query_params["ratio"] == "0.2"
    assert app.query_params["model"] in ("hed", ["hed"])


def test_bad_link_falls_back_with_warning():
    app = AppTest.from_file(ENTRY, default_timeout=TIMEOUT)
    app.query_params.update({"model": "resnet9000", "ratio": "abc"})
    app.run()
    assert not app.exception
    assert any("Ignored from the link" in w.value for w in app.warning)
    assert app.selectbox(key="sidebar_model").value == "mobilenet_v2"


def test_report_offers_downloads():
    from pathlib import Path

    app = go_to(open_app(sidebar_ratio=0.3), "report")
    assert not app.get("download_button")  # nothing to download before the report is built
    app.button(key="report_build").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert not app.error, [e.value for e in app.error]
    assert float(metric(app, "Speed-up").rstrip("×")) > 0
    assert metric(app, "MAC reduction").endswith("%")
    assert len(app.get("plotly_chart")) == 3  # costs, top-5 and the fidelity curve
    labels = [button.proto.label for button in app.get("download_button")]
    assert labels[0] == "Download the report (HTML)"
    if Path("/usr/bin/chromium").exists():
        assert labels[1:] == ["Download the charts (PNG, zip)"]
    else:
        assert "No PNG charts" in app.main.warning[0].value


def test_report_reuses_sensitivity_sweep():
    from pruning.sweep import SweepPoint

    # a stand-in for the Sensitivity page's sweep, which takes over a minute to run for real
    points = [SweepPoint(criterion, ratio, 1, 1, 1.0, 1.0 - ratio) for criterion in ("l1", "random") for ratio in (0.0, 0.5)]
    app = go_to(open_app(sidebar_ratio=0.3, sweep_result=("mobilenet_v2", ("l1", "random"), points)), "report")
    assert "reuses the ratio sweep" in app.main.caption[0].value
    app.button(key="report_build").click().run()
    assert not app.exception, [e.value for e in app.exception]
    assert "from the ratio sweep on the Sensitivity page" in app.main.caption[-1].value
