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


def test_store_errors_get_their_own_next_step() -> None:
    from metarec_core.errors import StoreBusyError, StoreDamagedError, StoreError

    damaged = error_message(StoreDamagedError("store.sqlite3 is damaged"))
    busy = error_message(StoreBusyError("another process is writing"))
    assert "Recover the store" in damaged and "nothing is deleted" in damaged
    assert "wait until the other process has finished" in busy and "do not move or delete it" in busy
    assert "Recover" not in error_message(StoreError("no run 'abc'")) and "report it" not in busy
