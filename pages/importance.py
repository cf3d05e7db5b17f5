import streamlit as st

from pruning.importance import get_criterion
from pruning.structured import make_plan
from ui import state, views

st.title("Filter importance")
config = state.current_config()
st.write(
    "Each channel gets a score from the importance criterion; the lowest-scoring ones go first. "
    f"Criterion: **{get_criterion(config.criterion).label}**. {get_criterion(config.criterion).summary}"
)
views.metrics_panel(config)

if config.mode != "structured":
    st.info(
        "Masks (unstructured mode) rank single weights by magnitude, not channels. "
        "Switch the sidebar to structured mode to see channel scores."
    )
    st.stop()

analysis = state.load_analysis(config.model, config.criterion)
plan = make_plan(analysis, config.ratio, allocation=config.allocation)

st.subheader("Every prunable layer")
st.plotly_chart(views.all_scores_chart(analysis, plan), width="stretch")
st.caption(
    "One dot per channel, scored relative to its layer's mean so layers compare on one axis. "
    "Each layer name is the root of a dependency group: all layers that must lose the same channels."
)

st.subheader("One layer in detail")
names = [group.name for group in analysis.groups]
name = st.selectbox("Layer (dependency group root)", names, key="importance_layer")
group = analysis.group(name)
removed = set(plan.remove.get(name, ()))
st.plotly_chart(
    views.layer_scores_chart(group.scores, removed, f"{name}: {len(removed)} of {group.channels} channels removed"),
    width="stretch",
)
st.markdown("Pruned together with it: " + ", ".join(f"`{member}`" for member in group.members))
