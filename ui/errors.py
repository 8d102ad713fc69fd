"""Errors and warnings shown as messages with a next step, never as a traceback."""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from metarec_core.errors import ConfigError, DataError, MetarecError, StoreBusyError, StoreDamagedError, TrainingError
from ui.i18n import t
from ui.markup import plain

logger = logging.getLogger(__name__)

_NEXT_STEP = {
    StoreDamagedError: "error.next.store_damaged",
    StoreBusyError: "error.next.store_busy",
    DataError: "error.next.data",
    ConfigError: "error.next.config",
    TrainingError: "error.next.training",
}


def error_message(exc: BaseException) -> str:
    """The text shown for an error: what went wrong and the next step (no traceback).

    Parameters
    ----------
    exc
        The exception caught by a page.

    Returns
    -------
    str
        Plain text (Markdown-escaped) ready for ``st.error``.
    """
    if isinstance(exc, MetarecError):
        step_key = next((k for cls, k in _NEXT_STEP.items() if isinstance(exc, cls)), "error.next.generic")
        row, source = getattr(exc, "row", None), str(getattr(exc, "source", "") or "")
        text_file = not source.lower().endswith((".parquet", ".pq"))  # Parquet has no lines
        hint = f" {t('error.row_hint', row=row, line=row + 1)}" if isinstance(exc, DataError) and row is not None and text_file else ""
        if isinstance(exc, DataError) and exc.setting:
            # The fix named by the app's own control, not by the Python or command-line option the core names.
            return f"{plain(exc.problem)}\n\n{t(f'error.setting.{exc.setting}')}{hint}"
        text = exc.problem if isinstance(exc, DataError) else str(exc)
        return f"{plain(text)}\n\n{t(step_key)}{hint}"
    return t("error.unexpected", kind=type(exc).__name__, message=plain(exc))


def show_error(exc: BaseException) -> None:
    """Show an error as a message with a next step; log unexpected ones with their traceback.

    A store found damaged while a page reads it is opened afresh once (at most
    every 10 s), so :func:`store_ready` shows its message with the recover button.
    """
    if not isinstance(exc, MetarecError):
        logger.exception("unexpected error in a page", exc_info=exc)
    if isinstance(exc, StoreDamagedError) and time.monotonic() - st.session_state.get(_REOPENED, 0.0) > 10.0:
        from ui import cache

        st.session_state[_REOPENED] = time.monotonic()
        cache.forget_store()
        st.rerun()
    st.error(error_message(exc), icon=":material/error:")


@contextmanager
def guard() -> Iterator[None]:
    """Run a block; any error becomes an ``st.error`` message instead of a traceback.

    Streamlit's own control flow (``st.rerun``, ``st.stop``) derives from
    ``BaseException`` and passes through untouched.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error must become a message
        show_error(exc)


#: Session keys: the message a store recovery left for the next run, when a damaged store was last reopened.
_RECOVERED = "_store_recovered"
_REOPENED = "_store_reopened"


def store_ready() -> bool:
    """Open the run store; when it cannot be opened, show why with the next step (and a recover button) and return False.

    The app calls this before the sidebar and the page, so a damaged, lost or
    busy store gets one clear message on every page instead of a traceback or
    an empty list of runs.
    """
    from ui import cache

    done = st.session_state.pop(_RECOVERED, None)
    if done:
        st.success(done, icon=":material/check_circle:")
    try:
        cache.store()
    except MetarecError as exc:
        st.title(t("store.problem"))
        show_error(exc)
        if isinstance(exc, StoreDamagedError) and st.button(t("store.recover"), type="primary", icon=":material/build:", key="store_recover"):
            recover_now()
        return False
    return True


def recover_now() -> None:
    """Rebuild the store from its folders (the old database kept aside), forget the cached store and rerun."""
    from metarec_core.store import default_home
    from metarec_core.store.recovery import recover_store
    from ui import cache

    try:
        report = recover_store(default_home())
    except MetarecError as exc:
        show_error(exc)
        return
    cache.forget_store()
    aside = t("store.recovered.aside", path=plain(report.kept_aside)) if report.kept_aside else ""
    notes = "".join(f"\n\n{plain(n)}" for n in report.notes[:5])
    st.session_state[_RECOVERED] = t("store.recovered", runs=len(report.runs), datasets=len(report.datasets)) + aside + notes
    st.rerun()


def show_warnings(warnings: tuple[str, ...] | list[str], *, limit: int = 8) -> None:
    """Show loader warnings (plain sentences from the core) as ``st.warning`` boxes."""
    for text in list(warnings)[:limit]:
        st.warning(plain(text), icon=":material/warning:")
    if len(warnings) > limit:
        st.caption(t("common.more_warnings", n=len(warnings) - limit))
