import streamlit as st

from pruning.catalog import TASK_CLASSIFICATION
from ui import state, views

st.title("Recovery: win back what pruning lost")
config = state.current_config()
entry = state.current_entry()
views.metrics_panel(config)
held_out = "held-out digits" if entry.labelled_holdout is not None else "held-out photos and animated-film frames"
st.write(
    "Structured pruning changes what every later layer receives, so a trained network's predictions "
    "collapse after even light pruning. The repairs below all work on a copy of the pruned model and are "
    f"compared on {held_out} that none of them sees:"
)
st.markdown(
    "- **BatchNorm recalibration**: re-estimate each BatchNorm's statistics so its output matches the "
    "dense model's on calibration images (seconds).\n"
    "- **Least-squares reconstruction**: refit every 1×1 convolution and the classifier, layer by layer, so "
    "the pruned model's own activations map to the dense model's outputs (ThiNet, He et al. 2017; tens of seconds).\n"
    "- **Distillation**: fine-tune the pruned model to imitate the dense one on augmented calibration images, "
    "for the time you choose."
)

if views.channel_removal_unavailable(config):
    st.stop()
if config.mode != "structured":
    st.info("Recovery repairs removed channels; switch the sidebar to structured mode.")
    st.stop()

available = state.recovery_methods(entry)
if entry.finetune_with_labels is not None:
    st.markdown(
        f"- **Fine-tuning with labels**: {entry.label} has labelled training data here, so it can be trained "
        "again on real labels, as pruning papers do, for the time you choose."
    )
methods = st.multiselect(
    "Repairs to compare",
    available,
    default=list(available[:2]),
    key="recovery_methods",
)
budget = st.slider("Time budget for distillation and fine-tuning (seconds)", 5, 180, 30, 5, key="recovery_budget")
if st.button("Run the repairs", type="primary", key="recovery_run", disabled=not methods):
    bar = st.progress(0.0, text="Starting…")

    def report(fraction: float, text: str) -> None:
        bar.progress(min(fraction, 1.0), text=text)

    try:
        rows = state.run_recovery(config, tuple(methods), float(budget), report)
        st.session_state["recovery_result"] = (config, rows)
    finally:
        bar.empty()

saved = st.session_state.get("recovery_result")
if saved is not None:
    saved_config, rows = saved
    if saved_config != config:
        st.info("These results were made with other sidebar settings; run the repairs again to refresh them.")
    st.dataframe(rows, hide_index=True)
    if entry.labelled_holdout is not None:
        dense_accuracy, _, count = state.labelled_accuracies(config)
        st.caption(
            f"Labelled accuracy: share of the {count} labelled held-out inputs classified correctly; the dense "
            f"model reaches {dense_accuracy:.1%}. Fine-tuning with labels is real training, so it can win back "
            "what imitating the dense model cannot."
        )
    if entry.task == TASK_CLASSIFICATION:
        st.caption(
            "Top-1 agreement: share of held-out images where the pruned model's top class equals the dense "
            "model's. 'Confident' counts only images where the dense model is at least 50% sure. A random "
            "guess among the dense model's usual classes agrees far less than 100%."
            + ("" if entry.finetune_with_labels is not None else " Without fine-tuning on labelled data, expect partial recovery at best.")
        )
    if any(row["model"] == state.MIRROR_YARDSTICK for row in rows):
        st.caption(
            "Yardstick: the dense model itself on the same images mirrored left to right, compared with its "
            "own predictions. Where its top classes are nearly tied, even a mirror changes the top class, so a "
            "pruned model that comes close to this row is about as faithful as the dense model is to itself."
        )
