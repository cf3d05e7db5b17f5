"""The dashboard's page list, shared by app.py and by the pages' check that app.py routed them."""

from __future__ import annotations

import contextvars
from pathlib import Path

import streamlit as st
from streamlit.navigation.page import StreamlitPage

# Absolute paths keep the pages reachable when app.py is run from another entry point (tests).
PAGES = Path(__file__).resolve().parent.parent / "pages"

# True while app.py's navigation runs a page, in the session's script thread.
_ROUTED = contextvars.ContextVar("pruning_explorer_routed", default=False)


def page_list() -> list[st.Page]:
    """Build the dashboard's pages in sidebar order, Overview first."""
    return [
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


def run_page(navigation: StreamlitPage) -> None:
    """Run the page that `navigation` selected, marked as routed by app.py."""
    token = _ROUTED.set(True)
    try:
        navigation.run()
    finally:
        _ROUTED.reset(token)


def ensure_routed() -> None:
    """Rerun a page that Streamlit started without app.py, so that app.py routes it.

    On a freshly started server, when a session's first request is a page URL (a deep link such
    as /images?model=resnet18), Streamlit 1.67 may run pages/images.py on its own, in its older
    pages-folder mode: the sidebar then lists file names. Registering the page list switches the
    session to app.py's navigation, and the rerun keeps the URL and its query parameters.
    Call it from a page's top level only: fragment reruns and widget callbacks run without app.py.
    """
    if _ROUTED.get():
        return
    st.navigation(page_list())
    st.rerun()
