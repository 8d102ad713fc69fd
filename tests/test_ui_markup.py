"""Text from data is shown literally: Markdown and LaTeX escaped."""
from __future__ import annotations

from ui.markup import plain


def test_plain_escapes_markdown_and_latex() -> None:
    assert plain("a_b*c$d<e>") == "a\\_b\\*c\\$d\\<e\\>"
    assert plain(42) == "42"


def test_plain_breaks_the_bare_links_markdown_would_make() -> None:
    text = plain("see http://127.0.0.1:1/x.png, www.example.com or a@b.com")
    assert "http://" not in text and "www." not in text and "a@b" not in text
    assert text.replace("\\", "") == "see http://127.0.0.1:1/x.png, www.example.com or a@b.com"
