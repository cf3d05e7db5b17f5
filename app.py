"""Pruning Explorer dashboard: `streamlit run app.py`.

This file sets up the navigation (pages listed in ui/navigation.py) and the shared sidebar, and
each page in pages/ draws one view.
"""

import streamlit as st

import pruning  # noqa: F401  (sets the OpenMP wait policy before torch is imported)
from ui.navigation import page_list, run_page

st.set_page_config(page_title="Pruning Explorer", page_icon=":material/content_cut:", layout="wide")

navigation = st.navigation(page_list())

# Import the torch-heavy helpers only after st.navigation has replaced the page list that
# Streamlit derives from the pages/ folder on a session's first run. Those derived links open a
# page without this script's sidebar, and the import takes seconds on a cold start.
from ui.state import sidebar  # noqa: E402

sidebar()
run_page(navigation)
