"""Text from data or users shown literally: Markdown (and LaTeX ``$``) escaped."""
from __future__ import annotations

import re

_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$])")


def plain(text: object) -> str:
    """Escape Markdown (and LaTeX ``$``) in text that came from data or a user.

    Streamlit renders element text as Markdown (never as HTML here); escaping
    keeps uploaded names and values shown literally.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))
