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
if result is not None:
    st.subheader("Channels kept per layer")
    st.plotly_chart(views.layer_overview_chart(result), width="stretch")
    st.caption(
        "Output channels of every convolution and linear layer after pruning. Output heads are never "
        "pruned; layers joined by residual additions or depthwise convolutions lose the same channels."
    )
