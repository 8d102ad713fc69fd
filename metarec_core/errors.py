"""Error types that carry a message a person can act on."""
from __future__ import annotations


class MetarecError(Exception):
    """Base class of every error metarec raises on purpose.

    The message always says what is wrong and what to do; the CLI and the app
    print it as one line, never a traceback.
    """


class DataError(MetarecError):
    """Bad input data: names the file, the column or row, the problem and the fix.

    Parameters
    ----------
    message
        What is wrong and what to do about it.
    source
        The file (or upload) name the problem was found in, if known.
    column
        The column involved, if any.
    row
        The 1-based data row involved, if any.
    hint
        How to fix it from Python or the command line (``ColumnMapping(user=...)
        or --user-col``); appended to the message in brackets. An app
        shows :attr:`problem` with its own words for its controls instead.
    setting
        The setting that fixes it, as a stable key an app can name its own
        control by: ``user``, ``item``, ``rating``, ``timestamp`` (the column
        of that role), ``user_table_id``, ``item_table_id``, ``implicit``.

    Attributes
    ----------
    problem
        The message without :attr:`hint` (what is wrong, with where).
    """

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        column: str | None = None,
        row: int | None = None,
        hint: str | None = None,
        setting: str | None = None,
    ) -> None:
        self.source = source
        self.column = column
        self.row = row
        self.hint = hint
        self.setting = setting
        where = []
        if source:
            where.append(f"file '{source}'")
        if column:
            where.append(f"column '{column}'")
        if row is not None:
            where.append(f"row {row}")
        prefix = (", ".join(where) + ": ") if where else ""
        self.problem = prefix + message
        super().__init__(self.problem + (f" ({hint})" if hint else ""))


class ConfigError(MetarecError):
    """A configuration value or key that cannot be used (unknown key, out of range)."""


class TrainingError(MetarecError):
    """Training cannot go on (for example a NaN loss); the message names phase, epoch and term."""


class StoreError(MetarecError):
    """A run or dataset the store does not hold, an action its state forbids, or an unreadable store."""


class StoreDamagedError(StoreError):
    """The store's database is damaged, empty or missing while run folders exist: ``runs recover`` rebuilds it.

    Parameters
    ----------
    message
        What is wrong, the file and what to do.
    home
        The store home the database belongs to.
    """

    def __init__(self, message: str, *, home: object = None) -> None:
        self.home = home
        super().__init__(message)


class StoreBusyError(StoreError):
    """Another process held the store's write lock for longer than a command waits; the store itself is fine."""


class ClusterError(MetarecError):
    """The Ray cluster a sweep asked for cannot be used (not reachable, refused the connection); says what to do."""
