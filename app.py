"""The metarec dashboard: page config, navigation over the page scripts in ``pages/``, and the shared sidebar."""
from __future__ import annotations

import streamlit as st

from ui import errors, navigation, sidebar, state

st.set_page_config(page_title="metarec", page_icon=":material/school:", layout="wide")
state.init_state()
page = st.navigation(navigation.sections())
navigation.resume_requested_page()
if errors.store_ready():
    sidebar.sidebar()
    with navigation.running_page():
        page.run()
else:  # the store cannot be opened: its message and the way back instead of the page
    with st.sidebar:
        sidebar.language_switch()
