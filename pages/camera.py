import streamlit as st

from pruning.catalog import TASK_CLASSIFICATION
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
    image = state.load_input_image(None, data)
    comparison = state.image_comparison(config, None, data)
except MediaError as error:
    st.error(str(error))
    st.stop()

fidelity = comparison.fidelity
if entry.task == TASK_CLASSIFICATION:
    photo, chart = st.columns([1, 2])
    photo.image(image, caption="snapshot", width="stretch")
    chart.plotly_chart(views.top_k_chart(comparison.dense_top, comparison.pruned_top), width="stretch")
    columns = st.columns(3)
    columns[0].metric("Same top-1 class", "yes" if fidelity["top1_agreement"] == 1.0 else "no")
    columns[1].metric("Top-5 overlap", f"{fidelity['top5_overlap']:.0%}")
    columns[2].metric("KL(dense ‖ pruned)", f"{fidelity['kl_divergence']:.3f}")
else:
    columns = st.columns(4)
    columns[0].image(image, caption="snapshot", width="stretch")
    columns[1].image(comparison.dense_image, caption="dense edges", width="stretch")
    columns[2].image(comparison.pruned_image, caption="pruned edges", width="stretch")
    columns[3].image(comparison.difference_image, caption="difference: red lost, blue new", width="stretch")
    metrics = st.columns(3)
    metrics[0].metric("PSNR vs dense", f"{fidelity['psnr_db']:.1f} dB")
    metrics[1].metric("Edge F1 vs dense", f"{fidelity['edge_f1']:.3f}")
    metrics[2].metric("Mean absolute difference", f"{fidelity['mean_abs_error']:.4f}")
