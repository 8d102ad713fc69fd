"""Errors as messages: plain text, a next step, the line of a bad row; never a traceback."""
from __future__ import annotations

from metarec_core.errors import ConfigError, DataError
from ui.errors import error_message


def test_error_message_is_plain_text_with_a_next_step() -> None:
    text = error_message(DataError("ratings are *all* equal", source="my_file.csv", column="rating"))
    assert "my\\_file\\.csv" in text and "\\*all\\*" in text
    assert "Next step" in text and "Traceback" not in text
    assert "ValueError" in error_message(ValueError("boom"))


def test_a_bad_row_of_a_text_file_is_named_by_its_line_too() -> None:
    assert "line 4" in error_message(DataError("bad rating", source="r.csv", column="rating", row=3))
    assert "line" not in error_message(DataError("bad rating", source="r.parquet", column="rating", row=3))  # Parquet has no lines
    assert error_message(ConfigError("no such setting")) != error_message(DataError("no such setting"))  # a next step per kind
