import streamlit as st

from ui import state, views

st.title("Pruning Explorer")
st.write(
    "Pick a model and a pruning ratio in the sidebar. Every number below is measured on a pruned copy "
    "of the model, next to the dense original; the other pages show what the pruned model does to "
    "images and video."
)

config = state.current_config()
result = views.metrics_panel(config)
if result is not None and config.mode == "unstructured":
    st.subheader("Zero weights reached per layer")
    st.plotly_chart(views.layer_sparsity_chart(result), width="stretch")
    st.caption("Output heads (shown in green) keep all their weights.")
elif result is not None:
    st.subheader("Channels kept per layer")
    st.plotly_chart(views.layer_overview_chart(result), width="stretch")
    st.caption(
        "Output channels of every convolution and linear layer after pruning. Output heads are never "
        "pruned; layers joined by residual additions or depthwise convolutions lose the same channels."
    )

st.subheader("Masks vs removal at this ratio")
st.write(
    "Zeroing weights (masks) and removing channels can reach the same sparsity, but only removal "
    "shrinks the tensors a dense kernel multiplies. Measure both at the current ratio:"
)
if st.button("Measure masks vs removal", key="overview_masks_vs_removal"):
    st.session_state["overview_masks_result"] = state.masks_vs_removal(config.model, config.ratio, config.criterion)
masks = st.session_state.get("overview_masks_result")
if masks is not None:
    st.dataframe(masks, hide_index=True)
