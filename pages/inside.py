import streamlit as st

from pruning.calibration import example_names
from pruning.gallery import conv_layers
from ui import state, views

st.title("Look inside: filters and feature maps")
config = state.current_config()
entry = state.current_entry()
st.write(
    "What the network computes, layer by layer: the first layer's filters as images, and the feature maps "
    "of any convolution for one input. Channels that pruning removes are crossed out in place, so the dense "
    "and pruned grids line up channel by channel."
)
views.metrics_panel(config)
if not entry.pretrained:
    views.untrained_notice(entry)

layers = conv_layers(state.load_base_model(config.model))
left, right = st.columns(2)
layer = left.selectbox("Convolution layer", layers, key=f"inside_layer_{config.model}",
                       help="Layers in the order they are defined; the first one reads the input image.")
sample = right.selectbox("Input", example_names(entry), key=f"inside_sample_{'examples' if entry.sample_images else 'photos'}")
view = state.inside_view(config, layer, sample)

st.subheader(f"First-layer filters: {view['first_layer']}")
st.image(view["filters"], caption=f"{view['filters_total']} filters; colour shows the weights on the red, green and blue "
         "input (grey is zero); a red cross marks a removed filter", width="content")

st.subheader(f"Feature maps of {layer}")
st.caption(
    f"{view['channels']} channels of {view['map_size'][0]}×{view['map_size'][1]} pixels, {view['removed']} removed. "
    "Each map is scaled to its own range (black low, white high); at most the first 64 are drawn."
)
dense, pruned = st.columns(2)
dense.image(view["dense_maps"], caption="dense model: every channel", width="stretch")
pruned.image(view["pruned_maps"], caption="pruned model: kept channels at their dense positions, removed ones crossed out", width="stretch")
if config.mode != "structured":
    st.info("Masks keep every channel, so nothing is crossed out; zeroed weights show as grey in the filters.")
