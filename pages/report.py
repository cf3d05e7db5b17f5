import streamlit as st

from pruning.calibration import example_names
from pruning.catalog import TASK_CLASSIFICATION
from pruning.report import (
    configuration_rows,
    fidelity_rows,
    headline,
    report_figures,
    summary_rows,
)
from pruning.tasks import primary_fidelity
from ui import state, views

st.title("Report")
st.write(
    "One page to present or send: the sidebar's configuration, size, MACs and latency dense vs pruned, "
    "fidelity on held-out images, one photo before and after, and fidelity against the ratio next to a "
    "random baseline. Download it as one HTML file that opens offline with interactive charts, and the "
    "charts as PNG images."
)
config = state.current_config()
entry = state.current_entry()
views.metrics_panel(config)
sample = st.selectbox("Example image", example_names(entry), key="report_sample" if entry.sample_images is None else "report_example")
if state.saved_sweep_curve(config) is not None:
    st.caption("The fidelity curve reuses the ratio sweep from the Sensitivity page.")
else:
    st.caption("The fidelity curve is measured at ratios 0 to 0.8 (about 10 to 30 s); run a sweep on the "
               "Sensitivity page first to reuse it instead.")

if st.button("Build the report", key="report_build", type="primary"):
    bar = st.progress(0.0, text="Starting…")
    try:
        data, files = state.build_report(config, sample, lambda share, text: bar.progress(share, text=text))
        st.session_state["report_result"] = (config, sample, data, files)
    except (ValueError, RuntimeError) as error:
        st.error(f"Building the report for {config.model} at ratio {config.ratio:.2f} failed: {error}. "
                 "Try a lower ratio or another criterion.")
    finally:
        bar.empty()

saved = st.session_state.get("report_result")
if saved is None:
    st.stop()
if saved[:2] != (config, sample):
    st.info("The sidebar or the photo changed since this report was built: build it again to match.")
    st.stop()
_, _, data, files = saved
figures = report_figures(data)

st.markdown(f"**{headline(data)}**")
downloads = st.columns(2)
stem = f"pruning-report-{config.model}-{config.ratio:.2f}"
downloads[0].download_button("Download the report (HTML)", files.html, file_name=f"{stem}.html", mime="text/html",
                             key="report_download_html", icon=":material/download:")
if files.pngs:
    downloads[1].download_button("Download the charts (PNG, zip)", files.png_zip(), file_name=f"{stem}-charts.zip",
                                 mime="application/zip", key="report_download_png", icon=":material/image:")
else:
    downloads[1].warning(f"No PNG charts: {files.png_error}")

metrics = st.columns(3)
metrics[0].metric("Speed-up", f"{data.speedup:.2f}×")
metrics[1].metric("MAC reduction", f"{data.mac_reduction:.1%}")
metrics[2].metric(f"Fidelity, {data.fidelity_images} held-out images", f"{primary_fidelity(entry, data.fidelity):.1%}")

left, right = st.columns(2)
left.subheader("Configuration")
left.dataframe(configuration_rows(data), hide_index=True)
right.subheader("Fidelity on held-out images")
right.dataframe(fidelity_rows(data.fidelity, entry.task), hide_index=True)

st.subheader("Size and speed")
st.dataframe(summary_rows(data), hide_index=True)
st.plotly_chart(figures["costs"], width="stretch")

st.subheader(f"Before and after: {data.sample}")
if entry.task == TASK_CLASSIFICATION:
    photo, chart = st.columns([1, 2])
    photo.image(data.photo, caption="input", width="stretch")
    if "top5" in figures:
        chart.plotly_chart(figures["top5"], width="stretch")
    else:
        chart.warning("This model is untrained here, so its outputs are not predictions and no classes are shown.")
else:
    views.output_maps(entry, data.photo, "input", data.example)
st.dataframe(fidelity_rows(data.example.fidelity, entry.task), hide_index=True)

st.subheader("Fidelity against ratio")
st.plotly_chart(figures["fidelity-curve"], width="stretch")
st.caption(f"Curve measured on {data.curve_source}. A random ranking is the baseline every criterion should beat.")
