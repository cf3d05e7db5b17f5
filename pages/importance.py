import streamlit as st

from pruning.importance import applicable_criteria, get_criterion, ranking_agreement
from pruning.structured import make_plan
from ui import state, views

st.title("Filter importance")
config = state.current_config()
st.write(
    "Each channel gets a score from the importance criterion; the lowest-scoring ones go first. "
    f"Criterion: **{get_criterion(config.criterion).label}**. {get_criterion(config.criterion).summary}"
)
views.metrics_panel(config)

if views.channel_removal_unavailable(config):
    st.stop()
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
st.markdown("**Its dependency group**: every layer that loses the same channels when this one does.")
st.dataframe(views.group_members_table(group.members), hide_index=True)
st.caption(
    "'out' layers lose output channels, 'in' layers the matching input channels. Residual additions tie "
    "several blocks' outputs together, and a depthwise convolution always follows the layer before it."
)

st.subheader("Two criteria on this layer")
criteria = [c for c in applicable_criteria(state.load_base_model(config.model)) if c != config.criterion]
other = st.selectbox("Compare with", criteria, format_func=lambda c: get_criterion(c).label, key="importance_other")
other_analysis = state.load_analysis(config.model, other)
other_plan = make_plan(other_analysis, config.ratio, allocation=config.allocation)
other_group = other_analysis.group(name)
other_removed = set(other_plan.remove.get(name, ()))
left, right = st.columns(2)
left.plotly_chart(views.layer_scores_chart(group.scores, removed, get_criterion(config.criterion).label), width="stretch")
right.plotly_chart(views.layer_scores_chart(other_group.scores, other_removed, get_criterion(other).label), width="stretch")
agreement = ranking_agreement(group.scores, other_group.scores, removed, other_removed)
columns = st.columns(2)
columns[0].metric("Rank correlation (Spearman)", f"{agreement['spearman']:.2f}")
columns[1].metric("Same channels removed", f"{agreement['removed_overlap']:.0%}" if removed or other_removed else "none removed")
