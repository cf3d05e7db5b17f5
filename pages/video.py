from pathlib import Path

import streamlit as st

from pruning.catalog import TASK_CLASSIFICATION, TASK_SEGMENTATION
from pruning.media import MediaError, probe_video, sample_video_names, sample_video_path
from pruning.video import read_frame, split_panels, wipe_image
from ui import state, views

JOB_KEY = "video_job"
RESULT_KEY = "video_result"
MESSAGE_KEY = "video_message"  # outcome of the last job to show once after its rerun
LIMITS = {"frames": "Frames", "seconds": "Seconds", "none": "Whole clip"}
MAX_SIDES = [None, 640, 480, 320, 224, 160]

st.title("Video: dense vs pruned, frame by frame")
config = state.current_config()
entry = state.current_entry()
st.write(
    "Both models run on every selected frame. The output clip shows dense on the left and pruned on the "
    "right, each with its own frame rate (model time only), and keeps the timing of the input."
)
views.metrics_panel(config)
if not entry.pretrained:
    views.untrained_notice(entry)

left, right = st.columns(2)
sample = left.selectbox("Sample clip", sample_video_names(), key="video_sample")
upload = right.file_uploader(
    f"…or upload a clip (mp4, mov, webm, avi, mkv; up to {state.upload_limit_mb()} MB)", type=["mp4", "mov", "webm", "avi", "mkv"], key="video_upload"
)
if sample == "bigbuckbunny" and upload is None:
    st.caption("Big Buck Bunny (c) Blender Foundation, CC-BY 3.0, www.bigbuckbunny.org")

options = st.columns(4)
stride = options[0].number_input(
    "Frame stride", min_value=1, max_value=100, value=1, step=1, key="video_stride",
    help="Run the models on every n-th frame. The output keeps each processed frame's time, so it lasts as long as the input.",
)
limit = options[1].radio("Limit the run by", list(LIMITS), format_func=LIMITS.get, key="video_limit", horizontal=True)
if limit == "seconds":
    max_seconds = options[2].number_input(
        "Seconds to process (cap)", min_value=0.5, max_value=3600.0, value=10.0, step=1.0, key="video_max_seconds",
        help="Process the clip from its start up to this time.",
    )
    max_frames = None
else:
    max_frames = options[2].number_input(
        "Frames to process (cap)", min_value=1, max_value=100_000, value=50, step=10, key="video_max_frames",
        help="Counts processed frames, after the stride. A cap keeps a run short on a CPU.",
        disabled=limit == "none",
    )
    max_seconds = None
max_side = options[3].selectbox(
    "Input resolution cap", MAX_SIDES, format_func=lambda side: "none" if side is None else f"{side} px longer side",
    key="video_max_side",
    help="Shrink frames before the models see them. HED runs much faster on small frames; MobileNetV2 resizes to 224 px anyway.",
)

running = st.session_state.get(JOB_KEY)
if st.button("Run dense and pruned on the clip", type="primary", key="video_run", disabled=running is not None):
    source, label, remove_source = sample_video_path(sample), sample, False
    if upload is not None:
        source, label, remove_source = state.save_upload(upload.getvalue(), Path(upload.name).suffix), upload.name, True
    try:
        probe_video(source)  # rejects unreadable clips before any inference
    except MediaError as error:
        st.error(str(error))
        if remove_source:
            source.unlink(missing_ok=True)
    else:
        job = state.run_video(
            config, source, remove_source=remove_source, stride=int(stride),
            max_frames=int(max_frames) if limit == "frames" else None, max_seconds=max_seconds,
            max_side=max_side,
        )
        st.session_state[JOB_KEY] = {"job": job, "config": config, "label": label}

running = st.session_state.get(JOB_KEY)
if running is not None:
    job = running["job"]
    state.follow_video_job(job)
    del st.session_state[JOB_KEY]
    if job.error is not None:
        st.session_state[MESSAGE_KEY] = ("error", f"Processing {running['label']} failed: {job.error}")
    elif job.stopped_before_start:
        st.session_state[MESSAGE_KEY] = ("info", "Stopped before the first frame was done, so there is no output.")
    else:
        st.session_state[RESULT_KEY] = {
            "config": running["config"], "label": running["label"], "comparison": job.result, "video": job.video,
        }
        st.session_state.pop("video_frame", None)
    # rerun so that the Run button, drawn disabled while the job ran, is enabled again
    st.rerun()

message = st.session_state.pop(MESSAGE_KEY, None)
if message is not None:
    kind, text = message
    (st.error if kind == "error" else st.info)(text)

saved = st.session_state.get(RESULT_KEY)
if saved is not None:
    comparison = saved["comparison"]
    is_classifier = comparison.task == TASK_CLASSIFICATION
    if saved["config"] != config:
        st.info("This result was made with other sidebar settings; press Run to refresh it.")
    stopped = " (stopped early)" if comparison.stopped else ""
    st.subheader(f"{saved['label']}: {comparison.frames_out} frames, {comparison.duration_s:.1f} s{stopped}")
    if comparison.stopped:
        st.caption(f"The run was stopped, so the clip contains the {comparison.frames_out} frames done by then.")
    st.video(saved["video"], format="video/mp4")
    st.download_button("Download the side-by-side mp4", saved["video"], file_name="dense_vs_pruned.mp4", mime="video/mp4", key="video_download")

    columns = st.columns(4)
    columns[0].metric("Dense fps (model only)", f"{comparison.dense_fps:.1f}")
    speedup = f"{comparison.pruned_fps / comparison.dense_fps:.2f}×" if comparison.dense_fps else None
    columns[1].metric("Pruned fps (model only)", f"{comparison.pruned_fps:.1f}", speedup)
    if is_classifier:
        columns[2].metric("Frames with the same top-1", f"{comparison.mean_agreement:.0%}")
    elif comparison.task == TASK_SEGMENTATION:
        columns[2].metric("Mean mIoU vs dense", f"{comparison.mean_agreement:.3f}")
    else:
        columns[2].metric("Mean edge F1 vs dense", f"{comparison.mean_agreement:.3f}")
    columns[3].metric("Output", f"{comparison.width}×{comparison.height} {comparison.codec}")
    pipeline = st.columns(4)
    pipeline[0].metric("Whole pipeline fps", f"{comparison.pipeline_fps:.1f}", help="Frames per second including decoding, drawing and encoding.")
    pipeline[1].metric(
        "Pipeline overhead", f"{comparison.overhead_share:.0%}",
        help=f"Share of the run not spent in the models: decode {comparison.decode_s:.1f} s, preprocess "
        f"{comparison.preprocess_s:.1f} s, drawing {comparison.render_s:.1f} s, encode {comparison.encode_s:.1f} s "
        f"of {comparison.wall_s:.1f} s.",
    )
    pipeline[2].metric("Input frames covered", f"{comparison.frames_in}")
    pipeline[3].metric("Output frame rate", f"{comparison.output_fps:.2f} fps")
    st.plotly_chart(views.latency_chart(comparison.dense_ms, comparison.pruned_ms), width="stretch")

    @st.fragment
    def frame_scrubber() -> None:
        st.markdown("**One frame in detail**")
        if comparison.frames_out > 1:
            number = st.slider("Frame", 0, comparison.frames_out - 1, 0, key="video_frame")
        else:
            number = 0
        time_s = comparison.frame_times_s[number]
        try:
            composite = read_frame(saved["video"], time_s)
        except MediaError as error:
            st.error(str(error))
            return
        if is_classifier:
            st.image(composite, caption=f"{time_s:.2f} s · dense: {comparison.dense_labels[number]} · "
                     f"pruned: {comparison.pruned_labels[number]}", width="stretch")
            return
        position = st.slider("Wipe: dense on the left of the line, pruned on the right", 0, 100, 50, key="video_wipe")
        dense_half, pruned_half = split_panels(composite, comparison.panel_width)
        st.image(wipe_image(dense_half, pruned_half, position / 100), width="stretch",
                 caption=f"{time_s:.2f} s · edge F1 of this frame vs dense: {comparison.agreement[number]:.3f}")

    frame_scrubber()
