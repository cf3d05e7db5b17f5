"""Pruning Explorer dashboard: `streamlit run app.py`.

This file builds the page list and the shared sidebar; each page in pages/ draws one view.
"""

from pathlib import Path

import streamlit as st

import pruning  # noqa: F401  (sets the OpenMP wait policy before torch is imported)

# Absolute paths keep the pages reachable when this script is run from another entry point (tests).
PAGES = Path(__file__).resolve().parent / "pages"

st.set_page_config(page_title="Pruning Explorer", page_icon=":material/content_cut:", layout="wide")

pages = [
    st.Page(PAGES / "overview.py", title="Overview", icon=":material/dashboard:", default=True),
    st.Page(PAGES / "importance.py", title="Importance", icon=":material/bar_chart:"),
    st.Page(PAGES / "images.py", title="Images", icon=":material/image:"),
    st.Page(PAGES / "inside.py", title="Look inside", icon=":material/grid_view:"),
    st.Page(PAGES / "video.py", title="Video", icon=":material/movie:"),
    st.Page(PAGES / "camera.py", title="Camera", icon=":material/photo_camera:"),
    st.Page(PAGES / "sensitivity.py", title="Sensitivity and sweeps", icon=":material/ssid_chart:"),
    st.Page(PAGES / "recovery.py", title="Recovery", icon=":material/healing:"),
    st.Page(PAGES / "report.py", title="Report", icon=":material/summarize:"),
]
navigation = st.navigation(pages)

# Import the torch-heavy helpers only after st.navigation has replaced the page list that
# Streamlit derives from the pages/ folder on a session's first run. Those derived links open a
# page without this script's sidebar, and the import takes seconds on a cold start.
from ui.state import sidebar  # noqa: E402

sidebar()
navigation.run()
