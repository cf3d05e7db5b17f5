"""Every catalogue entry through the dashboard: build, prune at 0.3 and draw its task view under AppTest."""

import pytest
from streamlit.testing.v1 import AppTest
from test_app import go_to, metric, open_app

from pruning.catalog import (
    TASK_CLASSIFICATION,
    TASK_EDGES,
    TASK_SEGMENTATION,
    get_model_entry,
    list_models,
)

TASK_METRIC = {
    TASK_CLASSIFICATION: "Top-5 overlap",
    TASK_EDGES: "Edge F1 vs dense",
    TASK_SEGMENTATION: "mIoU vs dense",
}
STRUCTURED_UNSUPPORTED = {"shufflenet_v2_x1_0", "regnet_y_400mf"}


@pytest.mark.slow
@pytest.mark.parametrize("name", list_models())
def test_catalogue_entry_task_view(name):
    entry = get_model_entry(name)
    app = go_to(open_app(sidebar_model=name, sidebar_ratio=0.3), "images")

    assert metric(app, "MACs")
    assert metric(app, TASK_METRIC[entry.task])
    errors = [element.value for element in app.error]
    if name in STRUCTURED_UNSUPPORTED:
        assert len(errors) == 1
        assert "masks mode" in errors[0]
        assert app.radio(key="sidebar_mode").options == ["Zero weights (masks)"]
    else:
        assert errors == []
    warnings = " ".join(element.value for element in app.warning)
    if entry.pretrained:
        assert "untrained" not in warnings.lower()
    else:
        # labelled in the sidebar and again above the outputs, which are not shown as predictions
        assert warnings.lower().count("untrained") >= 2
        assert not app.get("plotly_chart") or entry.task != TASK_CLASSIFICATION


def test_images_grad_cam_for_classifier():
    app = go_to(open_app(sidebar_ratio=0.3), "images")
    captions = " ".join(element.value for element in app.caption)
    assert "Grad-CAM" in captions
    assert "features.18.0" in captions or "features.17" in captions
    assert len(app.get("image")) >= 3


def test_digits_images_show_labelled_accuracy():
    app = go_to(open_app(sidebar_model="digits_cnn", sidebar_ratio=0.3), "images")
    assert not app.error, [e.value for e in app.error]
    dense = metric(app, "Dense accuracy, 1000 labelled held-out")
    assert float(dense.rstrip("%")) > 90
    assert metric(app, "Pruned accuracy, 1000 labelled held-out").endswith("%")
    assert app.selectbox(key="images_example").value.startswith("held-out digit")
    # a 61k-parameter model reads in thousands and millions, not as 0.00 M and 0.000 G
    assert metric(app, "Parameters").endswith(" k")
    assert metric(app, "MACs").endswith(" M")
    assert metric(app, "File size").endswith(" kB")
    # the hint about retraining does not call the digits model an ImageNet classifier
    assert not any("ImageNet" in element.value for element in app.info)


@pytest.mark.parametrize("model", ["mobilenet_v2", "hed"])
def test_inside_page_grids(model):
    app = go_to(open_app(sidebar_model=model, sidebar_ratio=0.5), "inside")
    assert not app.error, [e.value for e in app.error]
    captions = " ".join(element.value for element in app.caption)
    assert "removed" in captions
    layer = app.selectbox(key=f"inside_layer_{model}")
    layer.set_value(layer.options[2]).run()
    assert not app.exception, [e.value for e in app.exception]
    assert len(app.get("image")) >= 3


def _state_dict_bytes(model) -> bytes:
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


def test_sidebar_loads_uploaded_weights():
    from torchvision.models import resnet18

    app = open_app()
    app.selectbox(key="checkpoint_architecture").set_value("resnet18").run()
    app.file_uploader(key="checkpoint_upload").upload("mine.pt", _state_dict_bytes(resnet18()), "application/octet-stream").run()
    app.button(key="checkpoint_load").click().run()
    assert not app.exception, [e.value for e in app.exception]

    model = app.selectbox(key="sidebar_model")
    assert model.value.startswith("resnet18@")
    assert "your weights (mine.pt)" in get_model_entry(model.value).label
    assert any("Loaded mine.pt" in element.value for element in app.success)
    assert not any("untrained" in element.value.lower() for element in app.warning)
    go_to(app, "images")
    assert metric(app, "Top-5 overlap")


def test_sidebar_rejects_wrong_weights():
    from torchvision.models import resnet18

    app = open_app(sidebar_ratio=0.5)
    before = metric(app, "MACs")
    app.selectbox(key="checkpoint_architecture").set_value("mobilenet_v2").run()
    app.file_uploader(key="checkpoint_upload").upload("resnet.pt", _state_dict_bytes(resnet18()), "application/octet-stream").run()
    app.button(key="checkpoint_load").click().run()
    assert not app.exception, [e.value for e in app.exception]

    errors = [element.value for element in app.error]
    assert len(errors) == 1
    assert "resnet.pt was not loaded" in errors[0]
    assert "missing key" in errors[0]
    # the current model and its numbers stay
    assert app.selectbox(key="sidebar_model").value == "mobilenet_v2"
    assert metric(app, "MACs") == before


def test_report_untrained_classifier_shows_no_classes():
    app = go_to(open_app(sidebar_model="squeezenet1_1", sidebar_ratio=0.3), "report")
    app.button(key="report_build").click().run()
    assert not app.exception, [e.value for e in app.exception]
    warnings = " ".join(element.value for element in app.warning)
    assert "no classes are shown" in warnings
    settings = app.dataframe[0].value
    assert "untrained" in settings.set_index("setting").loc["Weights", "value"]


def test_digits_recovery_finetunes_with_labels():
    app = go_to(open_app(sidebar_model="digits_cnn", sidebar_ratio=0.5), "recovery")
    methods = app.multiselect(key="recovery_methods")
    assert "fine-tuning with labels" in methods.options
    methods.set_value(["fine-tuning with labels"])
    app.slider(key="recovery_budget").set_value(5)
    app.button(key="recovery_run").click().run()
    assert not app.exception, [e.value for e in app.exception]

    table = next(frame.value for frame in app.dataframe if "model" in frame.value.columns).set_index("model")
    column = "labelled accuracy (1000 held-out)"
    before = table.loc["no recovery", column]
    after = table.loc["fine-tuning with labels", column]
    assert after > before + 0.2  # pruning at 0.5 costs most of the accuracy; 5 s of training wins much back
    captions = " ".join(element.value for element in app.caption)
    assert "the dense model reaches 98.5%" in captions
    assert not any("ImageNet" in element.value for element in app.markdown)


@pytest.mark.parametrize("page", ["importance", "sensitivity", "recovery", "overview"])
def test_unprunable_model_pages_explain(page):
    app = go_to(open_app(sidebar_model="shufflenet_v2_x1_0"), page)
    notes = " ".join(element.value for element in app.info)
    assert "cannot lose whole channels" in notes
    assert "switch the sidebar to structured mode" not in notes
    assert not app.get("button") or all(button.key != "sweep_run" for button in app.button)
    assert all(button.key != "overview_masks_vs_removal" for button in app.button)


def test_link_to_other_sessions_upload_warns():
    from torchvision.models import resnet18

    from pruning.export import checkpoint_entry

    name = checkpoint_entry("resnet18", _state_dict_bytes(resnet18()), "theirs.pt").name
    app = AppTest.from_file("app_entry.py", default_timeout=300)
    app.query_params["model"] = name
    app.run()
    assert not app.exception, [e.value for e in app.exception]
    assert app.selectbox(key="sidebar_model").value == "mobilenet_v2"
    warnings = " ".join(element.value for element in app.warning)
    assert "uploaded in another session" in warnings


def test_blank_digit_upload_warns():
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (200, 200), (255, 255, 255)).save(buffer, format="PNG")
    app = go_to(open_app(sidebar_model="digits_cnn"), "images")
    app.file_uploader(key="images_upload").upload("blank.png", buffer.getvalue(), "image/png").run()
    assert not app.exception, [e.value for e in app.exception]
    assert any("input is blank" in element.value for element in app.warning)
