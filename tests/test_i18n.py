"""UI strings: every key has both languages, every key a page uses exists, formats agree."""
from __future__ import annotations

import json
import re
import string
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STRINGS = json.loads((ROOT / "assets" / "i18n.json").read_text(encoding="utf-8"))
SOURCES = [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py")), *sorted((ROOT / "ui").glob("*.py"))]
T_CALL = re.compile(r"""\bt\(\s*(f?)(["'])(.+?)\2""")


def used_keys() -> tuple[set[str], set[str]]:
    """Literal keys passed to t(...) and the prefixes of f-string keys."""
    literal, prefixes = set(), set()
    for path in SOURCES:
        for is_f, _, key in T_CALL.findall(path.read_text(encoding="utf-8")):
            if is_f:
                prefixes.add(key.split("{", 1)[0])
            else:
                literal.add(key)
    return literal, prefixes


def test_key_like_literals_in_pages_exist() -> None:
    """Keys kept in tables (not passed to t() directly) must exist too."""
    areas = sorted({k.split(".", 1)[0] for k in STRINGS})
    pattern = re.compile(r"""["']((?:%s)\.[A-Za-z0-9_@.]+)["']""" % "|".join(areas))
    found = {key for path in SOURCES for key in pattern.findall(path.read_text(encoding="utf-8"))}
    assert "learn.term.meta.body" in found
    assert not sorted(k for k in found if k not in STRINGS and not k.endswith((".", ".py")))


def test_labeller_prefixes_exist() -> None:
    prefixes = {m for path in SOURCES for m in re.findall(r"""labeller\(\s*["']([^"']+)["']""", path.read_text(encoding="utf-8"))}
    assert "train.scope." in prefixes
    for prefix in prefixes:
        assert any(k.startswith(prefix) for k in STRINGS), prefix


def test_every_key_has_english_and_chinese() -> None:
    for key, entry in STRINGS.items():
        assert set(entry) == {"en", "zh"}, key
        assert entry["en"].strip() and entry["zh"].strip(), key


def test_chinese_strings_are_translated() -> None:
    # Values that legitimately read the same in both languages: symbols, formula names and metric abbreviations (nDCG).
    same_ok = {k for k, e in STRINGS.items() if not re.search(r"[A-Za-z]{4,}", e["en"]) or k.startswith(("loss.", "metric.")) or e["en"].isupper()}
    untranslated = [k for k, e in STRINGS.items() if e["en"] == e["zh"] and k not in same_ok and not k.endswith(".zh")]
    assert not untranslated


def test_every_key_used_in_pages_exists() -> None:
    literal, prefixes = used_keys()
    assert len(literal) > 40  # the scan itself works
    missing = sorted(k for k in literal if k not in STRINGS)
    assert not missing
    for prefix in prefixes:
        assert prefix.endswith("."), f"dynamic key t(f'{prefix}...') needs a literal 'area.' prefix"
        assert any(k.startswith(prefix) for k in STRINGS), prefix


@pytest.mark.parametrize("key", sorted(STRINGS))
def test_placeholders_match_between_languages(key: str) -> None:
    def fields(text: str) -> set[str]:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}

    assert fields(STRINGS[key]["en"]) == fields(STRINGS[key]["zh"])


def test_translation_follows_session_language(monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import i18n

    monkeypatch.setattr(i18n, "language", lambda: "zh")
    assert i18n.t("nav.learn") == "学习"
    monkeypatch.setattr(i18n, "language", lambda: "en")
    assert i18n.t("nav.learn") == "Learn"
    assert i18n.t("common.more_warnings", n=3) == "… and 3 more warnings."
    assert i18n.t("no.such.key") == "no.such.key"
