import json

import streamlit as st

from pruning.export import recipe
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
if not views.channel_removal_unavailable(config) and st.button("Measure masks vs removal", key="overview_masks_vs_removal"):
    st.session_state["overview_masks_result"] = state.masks_vs_removal(config.model, config.ratio, config.criterion)
masks = st.session_state.get("overview_masks_result")
if masks is not None:
    st.dataframe(masks, hide_index=True)

st.subheader("Export and share")
st.write(
    "Download the pruned model, or the recipe that rebuilds it: a recipe loaded here, or by "
    "`pruning.export.load_state`, restores exactly this configuration."
)
columns = st.columns(len(state.EXPORT_FILES) + 1)
for column, (fmt, (label, suffix)) in zip(columns, state.EXPORT_FILES.items()):
    if column.button(f"Prepare {label}", key=f"overview_export_{fmt}"):
        st.session_state[f"overview_export_ready_{fmt}"] = config
    if st.session_state.get(f"overview_export_ready_{fmt}") == config:
        column.download_button(
            f"Download {label}",
            state.export_bytes(config, fmt),
            file_name=f"{config.model}-pruned-{config.ratio:.2f}{suffix}",
            key=f"overview_download_{fmt}",
        )
columns[-1].download_button(
    "Download recipe (JSON)",
    json.dumps(recipe(config), indent=2),
    file_name=f"{config.model}-recipe.json",
    mime="application/json",
    key="overview_download_recipe",
)


def _load_recipe():
    upload = st.session_state.get("overview_recipe_upload")
    if upload is not None:
        st.session_state["overview_recipe_error"] = state.apply_recipe(upload.getvalue())


st.file_uploader("Load a recipe (JSON)", type=["json"], key="overview_recipe_upload", on_change=_load_recipe)
if st.session_state.get("overview_recipe_error"):
    st.error(st.session_state["overview_recipe_error"])
