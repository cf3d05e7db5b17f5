import streamlit as st

from pruning.catalog import TASK_CLASSIFICATION
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
    "…or upload an image (PNG, JPEG, GIF, BMP, TIFF, WebP)",
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

if entry.task == TASK_CLASSIFICATION:
    photo, chart = st.columns([1, 2])
    photo.image(image, caption="input" if upload is None else upload.name, width="stretch")
    chart.plotly_chart(views.top_k_chart(comparison.dense_top, comparison.pruned_top), width="stretch")
    fidelity = comparison.fidelity
    columns = st.columns(3)
    columns[0].metric("Same top-1 class", "yes" if fidelity["top1_agreement"] == 1.0 else "no")
    columns[1].metric("Top-5 overlap", f"{fidelity['top5_overlap']:.0%}")
    columns[2].metric("KL(dense ‖ pruned)", f"{fidelity['kl_divergence']:.3f}")
    if fidelity["top1_agreement"] < 1.0:
        st.info(
            "The pruned model no longer agrees with the dense one. ImageNet classifiers lose their "
            "predictions after even light structured pruning unless the network is retrained; compare "
            "ratio 0.05 with 0.3, and see the Recovery page for what a short repair can win back."
        )
else:
    columns = st.columns(4)
    columns[0].image(image, caption="input", width="stretch")
    columns[1].image(comparison.dense_image, caption="dense edges", width="stretch")
    columns[2].image(comparison.pruned_image, caption="pruned edges", width="stretch")
    columns[3].image(comparison.difference_image, caption="difference: red lost, blue new", width="stretch")
    fidelity = comparison.fidelity
    metrics = st.columns(3)
    psnr = fidelity["psnr_db"]
    metrics[0].metric("PSNR vs dense", "identical" if psnr == float("inf") else f"{psnr:.1f} dB")
    metrics[1].metric("Edge F1 vs dense", f"{fidelity['edge_f1']:.3f}")
    metrics[2].metric("Mean absolute difference", f"{fidelity['mean_abs_error']:.4f}")
    st.caption("Edge F1 compares the two maps thresholded at 0.5, pixel by pixel.")
