import tempfile
from pathlib import Path

import streamlit as st

from pruning.catalog import TASK_CLASSIFICATION, get_model_entry
from pruning.media import MediaError, probe_video, sample_video_names, sample_video_path
from ui import state, views

RESULT_KEY = "video_result"

st.title("Video: dense vs pruned, frame by frame")
config = state.current_config()
st.write(
    "Both models run on every frame; the output clip shows dense on the left and pruned on the right, "
    "each with its own frame rate (model time only)."
)
views.metrics_panel(config)

left, right = st.columns(2)
sample = left.selectbox("Sample clip", sample_video_names(), key="video_sample")
upload = right.file_uploader("…or upload a clip (mp4, mov, webm, avi, mkv)", type=["mp4", "mov", "webm", "avi", "mkv"], key="video_upload")
max_frames = st.number_input(
    "Frames to process (cap)", min_value=1, max_value=2000, value=50, step=10, key="video_max_frames",
    help="The clip is processed from its start; a cap keeps a run short on a CPU.",
)
if sample == "bigbuckbunny" and upload is None:
    st.caption("Big Buck Bunny (c) Blender Foundation, CC-BY 3.0, www.bigbuckbunny.org")

if st.button("Run dense and pruned on the clip", type="primary", key="video_run"):
    bar = st.progress(0.0, text="Decoding…")

    def report(done: int, total: int | None) -> None:
        share = done / total if total else 0.0
        bar.progress(min(share, 1.0), text=f"Frame {done} of {total or '?'}")

    try:
        with tempfile.TemporaryDirectory(prefix="pruning-upload-") as folder:
            if upload is not None:
                source = state.save_upload(upload.getvalue(), Path(upload.name).suffix, folder)
                label = upload.name
            else:
                source = sample_video_path(sample)
                label = sample
            info = probe_video(source)  # rejects unreadable clips before any inference
            comparison, video_bytes = state.run_video(config, source, max_frames=int(max_frames), progress=report)
        st.session_state[RESULT_KEY] = {"config": config, "label": label, "info": info, "comparison": comparison, "video": video_bytes}
    except MediaError as error:
        st.error(str(error))
    finally:
        bar.empty()

saved = st.session_state.get(RESULT_KEY)
if saved is not None:
    comparison = saved["comparison"]
    if saved["config"] != config:
        st.info("This result was made with other sidebar settings; press Run to refresh it.")
    st.subheader(f"{saved['label']}: {comparison.frames_out} frames")
    st.video(saved["video"], format="video/mp4")
    st.download_button("Download the side-by-side mp4", saved["video"], file_name="dense_vs_pruned.mp4", mime="video/mp4", key="video_download")
    columns = st.columns(4)
    columns[0].metric("Dense fps (model only)", f"{comparison.dense_fps:.1f}")
    columns[1].metric("Pruned fps (model only)", f"{comparison.pruned_fps:.1f}", f"{comparison.pruned_fps / comparison.dense_fps:.2f}×" if comparison.dense_fps else None)
    if get_model_entry(saved["config"].model).task == TASK_CLASSIFICATION:
        columns[2].metric("Frames with the same top-1", f"{comparison.mean_agreement:.0%}")
    else:
        columns[2].metric("Mean edge F1 vs dense", f"{comparison.mean_agreement:.3f}")
    columns[3].metric("Output", f"{comparison.width}×{comparison.height} {comparison.codec}")
    st.plotly_chart(views.latency_chart(comparison.dense_ms, comparison.pruned_ms), width="stretch")
