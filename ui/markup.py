"""Text from data or users shown literally: Markdown (and LaTeX ``$``) escaped."""
from __future__ import annotations

import re

#: Markdown's special characters, plus ``:`` and ``@``: escaped, they keep a bare URL, ``www.`` name or
#: e-mail address from becoming a link (GitHub-flavoured Markdown links them without brackets).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$:@])")


def plain(text: object) -> str:
    """Escape Markdown (and LaTeX ``$``) in text that came from data or a user.

    Streamlit renders element text as Markdown (never as HTML here); escaping
    keeps uploaded names and values shown literally, bare URLs and e-mail
    addresses included (they would otherwise become links).
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))
