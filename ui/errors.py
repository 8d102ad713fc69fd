"""Errors and warnings shown as messages with a next step, never as a traceback."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import streamlit as st

from metarec_core.errors import ConfigError, DataError, MetarecError, TrainingError
from ui.i18n import t
from ui.markup import plain

logger = logging.getLogger(__name__)

_NEXT_STEP = {
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
    """Show an error as a message with a next step; log unexpected ones with their traceback."""
    if not isinstance(exc, MetarecError):
        logger.exception("unexpected error in a page", exc_info=exc)
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


def show_warnings(warnings: tuple[str, ...] | list[str], *, limit: int = 8) -> None:
    """Show loader warnings (plain sentences from the core) as ``st.warning`` boxes."""
    for text in list(warnings)[:limit]:
        st.warning(plain(text), icon=":material/warning:")
    if len(warnings) > limit:
        st.caption(t("common.more_warnings", n=len(warnings) - limit))
