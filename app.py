"""The metarec dashboard: page config, navigation over ``pages/`` and the shared sidebar."""
from __future__ import annotations

from pathlib import Path

import streamlit as st

from pages import common
from pages.common import t

st.set_page_config(page_title="metarec", page_icon=":material/school:", layout="wide")
common.init_state()

HERE = Path(__file__).parent

#: (file, title key, icon, section key) of every page, in menu order.
PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("pages/data.py", "nav.data", ":material/table_chart:", "nav.section.prepare"),
    ("pages/train.py", "nav.train", ":material/model_training:", "nav.section.prepare"),
    ("pages/runs.py", "nav.runs", ":material/stacked_line_chart:", "nav.section.prepare"),
    ("pages/embeddings.py", "nav.embeddings", ":material/scatter_plot:", "nav.section.explore"),
    ("pages/recommendations.py", "nav.recommendations", ":material/recommend:", "nav.section.explore"),
    ("pages/lab.py", "nav.lab", ":material/science:", "nav.section.explore"),
    ("pages/learn.py", "nav.learn", ":material/menu_book:", "nav.section.understand"),
)

sections: dict[str, list[st.Page]] = {}
for path, title_key, icon, section_key in PAGES:
    if not (HERE / path).is_file():
        continue
    page = st.Page(path, title=t(title_key), icon=icon, default=path == "pages/data.py")
    sections.setdefault(t(section_key), []).append(page)

navigation = st.navigation(sections)
st.session_state[common.ENTRY] = True
common.sidebar()
try:
    navigation.run()
finally:
    st.session_state[common.ENTRY] = False
