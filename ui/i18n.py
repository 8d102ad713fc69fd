"""UI strings in English and 简体中文: the current language, ``t()`` and labels of fixed vocabularies."""
from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import streamlit as st

from ui.state import LANG

logger = logging.getLogger(__name__)

I18N_PATH = Path(__file__).resolve().parent.parent / "assets" / "i18n.json"

#: UI languages: code -> name shown in the switch.
LANGUAGES: dict[str, str] = {"en": "English", "zh": "简体中文"}


@functools.cache
def load_strings(path: str = str(I18N_PATH)) -> dict[str, dict[str, str]]:
    """Read the UI strings: ``{key: {"en": text, "zh": text}}``.

    Parameters
    ----------
    path
        The JSON file; the default is ``assets/i18n.json``.

    Returns
    -------
    dict
        Every UI string in every language.
    """
    return json.loads(Path(path).read_text(encoding="utf-8"))


def language() -> str:
    """The current UI language code (``"en"`` or ``"zh"``)."""
    try:
        lang = st.session_state.get(LANG, "en")
    except Exception:  # outside a Streamlit session (plain unit tests)
        lang = "en"
    return lang if lang in LANGUAGES else "en"


def t(key: str, /, **values: Any) -> str:
    """The UI string ``key`` in the current language, formatted with ``values``.

    Falls back to English, then to the key itself, so a missing translation
    never breaks a page (``tests/test_i18n.py`` makes sure none is missing).
    """
    entry = load_strings().get(key)
    if entry is None:
        logger.warning("missing UI string %r", key)
        return key
    text = entry.get(language()) or entry.get("en") or key
    return text.format(**values) if values else text


def labeller(prefix: str) -> Callable[[object], str]:
    """A ``format_func`` for option values: ``value -> t(prefix + value)`` in the language of this run.

    The language is bound now, so the function gives the same labels when it
    is called outside the script run (e.g. by ``streamlit.testing``).
    """
    lang = language()
    strings = load_strings()

    def label(value: object) -> str:
        entry = strings.get(f"{prefix}{value}")
        return (entry.get(lang) or entry.get("en")) if entry else str(value)

    return label


def worded(key: str, implicit: bool) -> str:
    """The UI-string key for implicit data (``KEY.implicit``: "interactions", "liked") or ``key`` itself."""
    return f"{key}.implicit" if implicit else key


def phase_labels() -> dict[str, str]:
    """Display names of the training phases in the current language."""
    return {phase: t(f"phase.{phase}") for phase in ("meta", "transfer", "joint", "validate")}


def cohort_labels() -> dict[str, str]:
    """Display names of the cohorts users and items are coloured by (warm, new, validation)."""
    return {c: t(f"cohort.{c}") for c in ("warm", "new", "meta-test")}


def feature_label(name: object) -> str:
    """A side feature's name in words where the app knows it (the built-in datasets' ``age``, ``gender``, ...); else as it is."""
    entry = load_strings().get(f"feature.{name}")
    return (entry.get(language()) or entry["en"]) if entry else str(name)


def value_labels(feature: object) -> dict[str, str]:
    """The known values of a built-in feature in words (``gender``: ``M`` -> male / 男); empty for any other feature."""
    prefix = f"value.{feature}."
    lang = language()
    return {key[len(prefix):]: entry.get(lang) or entry["en"] for key, entry in load_strings().items() if key.startswith(prefix)}

