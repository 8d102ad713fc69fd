"""The app's pages: menu entries for ``st.navigation``, links between pages, and running each page inside ``app.py``."""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import streamlit as st

from ui.i18n import t
from ui.state import ENTRY

ROOT = Path(__file__).resolve().parent.parent
ENTRYPOINT = ROOT / "app.py"

#: (page, title key, icon, section key) of every page script in ``pages/``, in menu order; the first is the default.
PAGES: tuple[tuple[str, str, str, str], ...] = (
    ("data", "nav.data", ":material/table_chart:", "nav.section.prepare"),
    ("train", "nav.train", ":material/model_training:", "nav.section.prepare"),
    ("runs", "nav.runs", ":material/stacked_line_chart:", "nav.section.prepare"),
    ("embeddings", "nav.embeddings", ":material/scatter_plot:", "nav.section.explore"),
    ("recommendations", "nav.recommendations", ":material/recommend:", "nav.section.explore"),
    ("lab", "nav.lab", ":material/science:", "nav.section.explore"),
    ("learn", "nav.learn", ":material/menu_book:", "nav.section.understand"),
)
#: The page a script run that landed outside ``app.py`` asked for (see :func:`enter_page`).
REQUESTED = "_requested_page"


def page_file(page: str) -> Path:
    """The script of a page (absolute, so links work whichever script Streamlit started from)."""
    return ROOT / "pages" / f"{page}.py"


def sections() -> dict[str, list[Any]]:
    """The menu for ``st.navigation``: translated section names -> ``st.Page`` of each page."""
    menu: dict[str, list[Any]] = {}
    for page, title_key, icon, section_key in PAGES:
        entry = st.Page(page_file(page), title=t(title_key), icon=icon, default=page == PAGES[0][0])
        menu.setdefault(t(section_key), []).append(entry)
    return menu


def page_link(container: Any, page: str, label_key: str, icon: str | None = None) -> None:
    """A link to another page of the app, labelled in the current language."""
    container.page_link(str(page_file(page)), label=t(label_key), icon=icon)


def switch_to(page: str) -> None:
    """Go to another page of the app now (ends this script run)."""
    st.switch_page(str(page_file(page)))


def enter_page(script: str) -> None:
    """First call of every page script: go on only when the page runs inside ``app.py``.

    Streamlit ignores the ``pages/`` folder once any session has run
    ``st.navigation``. Before that — a server whose very first request opens a
    page's URL — it runs the page file on its own, without the shared sidebar
    and state. Such a run notes which page was asked for and switches to
    ``app.py``, which calls ``st.navigation`` and comes back to the page
    (:func:`resume_requested_page`).

    Parameters
    ----------
    script
        The page's ``__file__``.
    """
    if st.session_state.get(ENTRY):
        return
    st.session_state[REQUESTED] = Path(script).stem
    st.switch_page(str(ENTRYPOINT))


def resume_requested_page() -> None:
    """In ``app.py`` after ``st.navigation``: open the page a run outside ``app.py`` asked for, if any."""
    page = st.session_state.pop(REQUESTED, None)
    if page in {p for p, *_ in PAGES[1:]}:
        switch_to(page)


@contextmanager
def running_page() -> Iterator[None]:
    """Mark the session as running a page through ``app.py`` for the length of the block."""
    st.session_state[ENTRY] = True
    try:
        yield
    finally:
        st.session_state[ENTRY] = False
