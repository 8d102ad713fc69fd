"""Text from data is shown literally: Markdown and LaTeX escaped."""
from __future__ import annotations

from ui.markup import plain


def test_plain_escapes_markdown_and_latex() -> None:
    assert plain("a_b*c$d<e>") == "a\\_b\\*c\\$d\\<e\\>"
    assert plain(42) == "42"
