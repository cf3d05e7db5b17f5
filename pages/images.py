import streamlit as st

from pruning.media import MediaError, sample_image_names
from ui import state, views

st.title("Images: dense vs pruned")
config = state.current_config()
entry = state.current_entry()
st.write("Run the dense and the pruned model on the same photo and compare what they output.")
views.metrics_panel(config)

left, right = st.columns([1, 1])
sample = left.selectbox("Sample photo", sample_image_names(), key="images_sample")
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
    image = state.load_input_image(sample, upload_bytes, upload_name)
    comparison = state.image_comparison(config, sample, upload_bytes, upload_name)
except MediaError as error:
    st.error(str(error))
    st.stop()

views.image_comparison(entry, image, comparison, "input" if upload is None else upload.name)
