import streamlit as st

from pruning.media import MediaError
from ui import state, views

st.title("Camera: dense vs pruned on a snapshot")
config = state.current_config()
entry = state.current_entry()
st.write(
    "Take a webcam snapshot and both models run on it, with the same comparison as on the Images page. "
    "Take another one to compare again."
)
views.metrics_panel(config)

snapshot = st.camera_input("Snapshot for both models", key="camera_snapshot")
if snapshot is None:
    st.info("Allow camera access in the browser, then press Take Photo.")
    st.stop()

data = snapshot.getvalue()
try:
    image = state.load_input_image(None, data, "camera snapshot")
    comparison = state.image_comparison(config, None, data, "camera snapshot")
except MediaError as error:
    st.error(str(error))
    st.stop()

views.image_comparison(entry, image, comparison, "snapshot", pretrained=entry.pretrained)
