import streamlit as st

from pruning.importance import applicable_criteria, get_criterion
from pruning.sensitivity import DEFAULT_RATIOS, ratios_for_budget
from pruning.sweep import DEFAULT_RATIOS as SWEEP_RATIOS
from pruning.tasks import primary_fidelity_label
from ui import state, views

st.title("Sensitivity and sweeps")
config = state.current_config()
entry = state.current_entry()
views.metrics_panel(config)
fidelity_label = primary_fidelity_label(entry)
st.write(
    "Which layers can lose channels cheaply, and how every criterion behaves over the whole ratio "
    f"range. Fidelity here is the **{fidelity_label}**, measured against the dense model's own outputs."
)

st.header("Per-layer sensitivity")
st.write(
    "Each layer is pruned alone at each ratio while the rest stays dense; a layer whose fidelity "
    "stays green can lose channels cheaply. Uses the sidebar's criterion on calibration images."
)
options = st.columns(2)
ratios = options[0].multiselect("Ratios to try per layer", [0.1, 0.25, 0.5, 0.75, 0.9], default=list(DEFAULT_RATIOS),
                                format_func=lambda r: f"{r:.0%}", key="sensitivity_ratios")
images = options[1].number_input("Calibration images", min_value=2, max_value=32, value=16, key="sensitivity_images",
                                 help="More images give steadier numbers; the scan time grows with layers x ratios x images.")


def progress_bar(text):
    bar = st.progress(0.0, text=text)

    def report(done, total):
        bar.progress(done / total, text=f"{text} {done}/{total}")

    return bar, report


if views.channel_removal_unavailable(config):
    st.stop()
if config.mode != "structured":
    st.info("Sensitivity scans remove channels; switch the sidebar to structured mode.")
elif st.button("Scan every layer", key="sensitivity_run", type="primary", disabled=not ratios):
    bar, report = progress_bar("Pruning layer by layer…")
    try:
        result = state.sensitivity(config.model, config.criterion, tuple(sorted(ratios)), int(images), _progress=report)
        st.session_state["sensitivity_result"] = (config.model, config.criterion, result)
    finally:
        bar.empty()

saved = st.session_state.get("sensitivity_result")
if saved is not None and saved[:2] == (config.model, config.criterion):
    result = saved[2]
    st.plotly_chart(views.sensitivity_heatmap(result.groups, result.ratios, result.fidelity), width="stretch")
    budget = st.slider("MAC reduction to reach", 0.05, 0.8, 0.33, 0.01, key="sensitivity_budget", format="%.2f",
                       help="Share of the dense model's MACs to remove; 0.33 is a 1.5x reduction.")
    overrides = ratios_for_budget(result, budget)
    st.write(f"{len(overrides)} layers get their own ratio; the others stay dense.")
    # a callback runs before the next script run, when the sidebar's slider may still be changed
    st.button("Use these per-layer ratios", key="sensitivity_apply", on_click=state.apply_overrides, args=(overrides,))
    st.caption("The ratios go into the sidebar's per-layer overrides, with the slider set to 0. The "
               "Overview then shows the MACs actually removed, which differ a little from the estimate.")

st.header("Ratio sweep")
criteria = applicable_criteria(state.load_base_model(config.model))
chosen = st.multiselect("Criteria", criteria, default=[c for c in ("l1", "random") if c in criteria],
                        format_func=lambda c: get_criterion(c).label, key="sweep_criteria")
st.caption("A random ranking is the baseline every criterion should beat. Each point prunes the model at "
           "one ratio and measures it on held-out images; latency is a short median, so expect noise.")
if st.button("Run the sweep", key="sweep_run", disabled=not chosen):
    bar, report = progress_bar("Pruning and measuring…")
    try:
        st.session_state["sweep_result"] = (config.model, tuple(chosen), state.sweep(config.model, tuple(chosen), SWEEP_RATIOS, config.allocation, _progress=report))
    finally:
        bar.empty()

saved = st.session_state.get("sweep_result")
if saved is not None and saved[0] == config.model:
    figures = views.sweep_charts(saved[2], fidelity_label)
    columns = [column for _ in range(0, len(figures), 2) for column in st.columns(2)]
    for column, figure in zip(columns, figures):
        column.plotly_chart(figure, width="stretch")
