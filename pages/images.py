import streamlit as st

from pruning.calibration import example_names
from pruning.catalog import TASK_CLASSIFICATION
from pruning.media import MediaError
from pruning.tasks import blank_input
from ui import state, views

st.title("Images: dense vs pruned")
config = state.current_config()
entry = state.current_entry()
st.write("Run the dense and the pruned model on the same photo and compare what they output.")
views.metrics_panel(config)

left, right = st.columns([1, 1])
if entry.sample_images is None:
    sample = left.selectbox("Sample photo", example_names(entry), key="images_sample")
else:  # its own key, because a photo name chosen for another model is not among these
    sample = left.selectbox("Example", example_names(entry), key="images_example")
upload = right.file_uploader(
    f"…or upload an image (PNG, JPEG, GIF, BMP, TIFF, WebP; up to {state.upload_limit_mb()} MB)",
    type=["png", "jpg", "jpeg", "gif", "bmp", "tif", "tiff", "webp"],
    key="images_upload",
)
upload_bytes = upload.getvalue() if upload is not None else None
upload_name = upload.name if upload is not None else "upload"
if upload is not None:
    left.caption(f"Using the upload {upload.name}; remove it to use a sample photo.")

try:
    image = state.load_input_image(sample, upload_bytes, upload_name, config.model)
    comparison = state.image_comparison(config, sample, upload_bytes, upload_name)
except MediaError as error:
    st.error(str(error))
    st.stop()

if blank_input(entry, image):
    st.warning(
        "The model's input is blank: its preprocessing found nothing in this image (for the digits model, no "
        "strokes), so the outputs below mean nothing. Try an image with a clear subject."
    )
views.image_comparison(entry, image, comparison, "input" if upload is None else upload.name, pretrained=entry.pretrained)
if entry.labelled_holdout is not None:
    dense_accuracy, pruned_accuracy, count = state.labelled_accuracies(config)
    columns = st.columns(2)
    columns[0].metric(f"Dense accuracy, {count} labelled held-out", f"{dense_accuracy:.1%}")
    columns[1].metric(
        f"Pruned accuracy, {count} labelled held-out", f"{pruned_accuracy:.1%}", f"{(pruned_accuracy - dense_accuracy) * 100:+.1f} points"
    )
    st.caption("A real accuracy against human labels, not agreement with the dense model. The Recovery page can fine-tune with labels.")
if entry.task == TASK_CLASSIFICATION:
    st.subheader("Where each model looks (Grad-CAM)")
    dense_cam, pruned_cam, layer, class_name = state.cam_comparison(config, sample, upload_bytes, upload_name)
    left, right = st.columns(2)
    left.image(dense_cam, caption="dense", width="stretch")
    right.image(pruned_cam, caption="pruned", width="stretch")
    class_text = f" ({class_name})" if entry.pretrained else ""
    st.caption(
        f"Grad-CAM (Selvaraju et al., 2017) at layer {layer} for the dense model's top class{class_text}, on the image "
        "as the models see it: red where the activations push that class up most."
    )
