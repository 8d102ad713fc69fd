"""Footprint: the parameter count and peak training memory of a config on a dataset's shape, checked before anything is allocated.

:func:`estimate` is arithmetic on sizes only (no tensor is made), so a config
whose model or batches cannot fit is refused by :func:`check_fits` in
microseconds with a one-line message naming the setting that costs most,
instead of the process being killed half-way through ``fit``.

What a run holds at its peak (float32 numbers, 4 bytes each; ``P`` parameters):

* the model: parameters, their gradients and Adam's two moments (``4P``;
  with ``table_updates="rows"`` the ID tables' gradients hold only the rows
  a step looks up, and each user and item row carries a few int64 counters),
  the learned inner rates (with their gradient and moments), the weight
  average (``ema_decay > 0``), the best epoch's copy (``keep_best``) and the
  source run's anchor (``source_run``);
* the largest of: a transfer step (``batch_size`` rows, times ``1 + negatives``
  on implicit data), a meta step (``meta_batch_size`` tasks of ``support_size``
  + ``query_size`` items, each inner step keeping its graph; the Newton solver
  differentiates every support score, ``support_size`` backward passes at
  once), and the evaluation (chunks of 256 test users padded to the longest
  query, or 64 users × the whole catalogue on implicit data), together with
  the transient copy of the L2 term or of the averaged weights;
* the encoded side features (the context tensors), the item text vectors,
  the ratings frames (the dataset's, the split's, the training rows and the
  arrays built from them) and the runtime itself (Python, torch, pandas).

On CUDA the model, the context and the step tensors are on the device and
the rest is host memory; both are checked.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from metarec_core.errors import ConfigError
from metarec_core.memory import available_cuda, available_ram, format_bytes
from metarec_core.models import ModelConfig, ModelShape

if TYPE_CHECKING:
    from metarec_core.dataset import Dataset
    from metarec_core.train_config import TrainConfig

log = logging.getLogger(__name__)

#: Bytes of one float32 / int64 number.
_F32, _I64 = 4, 8
#: Resident memory of the runtime before any data: Python with numpy, pandas, pyarrow and torch imported.
RUNTIME_BYTES = 300 * 2**20
#: What ``fit`` adds whatever the data (modules it imports, torch's first kernels and thread pools; measured).
FIT_OVERHEAD_BYTES = 100 * 2**20
#: Host memory the CUDA runtime adds to a process (its libraries and pinned buffers), and device memory its context takes.
CUDA_HOST_BYTES = 1536 * 2**20
CUDA_CONTEXT_BYTES = 512 * 2**20
#: Bytes per rating of the loaded :class:`~metarec_core.dataset.Dataset` (user, item int64; rating float32; timestamp int64).
DATASET_BYTES_PER_RATING = 28
#: Bytes per rating of what ``fit`` derives from the ratings: the split's frames, the training rows, the warm
#: array, the task sampler's compressed rows, the seen pairs and the temporaries of splitting (measured).
FRAMES_BYTES_PER_RATING = 150
#: Rows per chunk of evaluation tasks (``predict_tasks``) and users per chunk of the implicit catalogue AUC.
_EVAL_CHUNK, _CATALOGUE_CHUNK = 256, 64
#: Width of the default sentence encoder's vectors (before whitening).
_DEFAULT_TEXT_DIM = 384


@dataclass(frozen=True)
class DataShape:
    """The sizes of a dataset that memory depends on (no data).

    Parameters
    ----------
    n_users, n_items
        Entities, including those with no ratings (the ID tables have a row each).
    n_ratings
        Interactions.
    user_categorical, user_multilabel, item_categorical, item_multilabel
        Vocabulary sizes of each categorical and multi-label feature, counting
        the reserved index 0 (as :attr:`FeatureVocab.size`).
    user_label_slots, item_label_slots
        Sum over multi-label features of the most labels one entity has (the
        padded width of the encoded arrays).
    user_numeric, item_numeric
        Numeric features.
    text_dim
        Width of the item text vectors the model sees (after whitening); 0 without text.
    raw_text_dim
        Width of the text vectors as encoded (host memory before whitening).
    max_user_ratings
        Most ratings of one user: the padded query width of evaluation tasks
        (0 = unknown, then ``3 × n_ratings / n_users`` is assumed).
    implicit
        Implicit feedback (the transfer batch and the tasks carry negatives).
    """

    n_users: int
    n_items: int
    n_ratings: int
    user_categorical: tuple[int, ...] = ()
    user_multilabel: tuple[int, ...] = ()
    user_label_slots: int = 0
    user_numeric: int = 0
    item_categorical: tuple[int, ...] = ()
    item_multilabel: tuple[int, ...] = ()
    item_label_slots: int = 0
    item_numeric: int = 0
    text_dim: int = 0
    raw_text_dim: int = 0
    max_user_ratings: int = 0
    implicit: bool = False

    def model_shape(self) -> ModelShape:
        """The :class:`~metarec_core.models.ModelShape` of a model built for this data."""
        return ModelShape(
            n_users=self.n_users, n_items=self.n_items,
            user_categorical=tuple(self.user_categorical), user_multilabel=tuple(self.user_multilabel), user_numeric=self.user_numeric,
            item_categorical=tuple(self.item_categorical), item_multilabel=tuple(self.item_multilabel), item_numeric=self.item_numeric,
            text_dim=self.text_dim,
        )


def data_shape(dataset: "Dataset", config: "TrainConfig | None" = None) -> DataShape:
    """The :class:`DataShape` of a dataset (vocabularies fitted as ``fit`` fits them; cheap: no encoding).

    ``config`` decides the text width: ``text_components`` (or the encoder's
    width when it is 0) with ``use_text``, none without.
    """
    from metarec_core.features import FeatureEncoder

    users = FeatureEncoder.fit(dataset.user_table, dataset.user_features)
    items = FeatureEncoder.fit(dataset.item_table, tuple(s for s in dataset.item_features if s.kind != "text"))

    def slots(table, encoder) -> int:
        total = 0
        for vocab in encoder.of_kind("multilabel"):
            column = table[vocab.spec.name].dropna().astype(str) if vocab.spec.name in table else None
            total += int(column.str.count(re.escape(vocab.spec.separator)).max() + 1) if column is not None and len(column) else 1
        return total

    raw_text = text = 0
    if config is not None and config.use_text:
        match = re.fullmatch(r"hashing(?:-(\d+))?", config.text_encoder.strip())
        raw_text = int(match.group(1) or 64) if match else _DEFAULT_TEXT_DIM
        text = min(config.text_components, raw_text, dataset.n_items) if config.text_components else raw_text
    counts = dataset.ratings["user"].value_counts()
    return DataShape(
        n_users=dataset.n_users, n_items=dataset.n_items, n_ratings=len(dataset.ratings),
        user_categorical=tuple(v.size for v in users.of_kind("categorical")),
        user_multilabel=tuple(v.size for v in users.of_kind("multilabel")),
        user_label_slots=slots(dataset.user_table, users), user_numeric=len(users.of_kind("numeric")),
        item_categorical=tuple(v.size for v in items.of_kind("categorical")),
        item_multilabel=tuple(v.size for v in items.of_kind("multilabel")),
        item_label_slots=slots(dataset.item_table, items), item_numeric=len(items.of_kind("numeric")),
        text_dim=text, raw_text_dim=raw_text,
        max_user_ratings=int(counts.max()) if len(counts) else 0, implicit=bool(dataset.implicit),
    )


# --------------------------------------------------------------------------- parameters


def _feature_width(categorical: tuple[int, ...], multilabel: tuple[int, ...], numeric: int, text_dim: int, dim: int) -> int:
    return dim * (len(categorical) + len(multilabel) + (1 if text_dim else 0)) + numeric


def count_parameters(model: ModelConfig, shape: ModelShape) -> int:
    """The exact number of parameters of ``PreferenceModel(shape, model)``, without building it."""
    d, f = int(model.factor_dim), int(model.feature_dim)
    fu = _feature_width(shape.user_categorical, shape.user_multilabel, shape.user_numeric, 0, f)
    fi = _feature_width(shape.item_categorical, shape.item_multilabel, shape.item_numeric, shape.text_dim, f)
    n = f * (sum(shape.user_categorical) + sum(shape.user_multilabel) + sum(shape.item_categorical) + sum(shape.item_multilabel))
    if shape.text_dim:
        n += shape.text_dim * f + f  # the text adaptor
    n += 1 + 1 + d  # global bias, user offset, user taste
    n += shape.n_items * (d + 1) + shape.n_users * (d + 1)  # ID factors and biases
    n += fu * d if fu else 0
    n += fi * (d + 1) if fi else 0  # feature -> factor and feature -> bias projections
    widths = (fu + fi + d,) + tuple(int(h) for h in model.hidden) + (1,)
    n += sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    return n


def _scope_size(scope: str, model: ModelConfig, shape: ModelShape) -> int:
    """Parameters that ``adapt`` moves per task in ``scope`` (see ``PreferenceModel.scope_names``)."""
    d, f = int(model.factor_dim), int(model.feature_dim)
    fu = _feature_width(shape.user_categorical, shape.user_multilabel, shape.user_numeric, 0, f)
    fi = _feature_width(shape.item_categorical, shape.item_multilabel, shape.item_numeric, shape.text_dim, f)
    widths = (fu + fi + d,) + tuple(int(h) for h in model.hidden) + (1,)
    head = sum(a * b + b for a, b in zip(widths[:-1], widths[1:]))
    user = 1 + d
    projections = (fu * d if fu else 0) + (fi * (d + 1) if fi else 0)
    return {"user": user, "head": head, "user+head": user + head, "dense": user + head + projections}[scope]


# --------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class Footprint:
    """What a run will take: its parameters and its peak memory, by part.

    Attributes
    ----------
    n_parameters
        Parameters of the model (as ``sum(p.numel() for p in model.parameters())``).
    peak_bytes
        Estimated peak resident memory of the training process (host RAM; on
        CPU this is everything).
    device_bytes
        Estimated peak memory on the CUDA device (0 on CPU).
    breakdown
        Bytes of each part at the peak, largest first; the names in
        ``on_device`` are on the CUDA device, the others in host RAM.
    on_device
        Parts placed on the device.
    resident_bytes
        The part already in use before ``fit`` starts (the runtime and the
        loaded dataset); :func:`check_fits` compares the rest with what is free.
    device
        ``cpu`` or ``cuda``.
    largest_setting
        The setting whose smallest value would save the most memory, as
        ``key=value`` (e.g. ``model.hidden=[100000000]``).
    largest_setting_bytes
        What it costs: the estimate minus the estimate with that setting at its smallest.
    """

    n_parameters: int
    peak_bytes: int
    device_bytes: int
    breakdown: Mapping[str, int] = field(repr=False)
    on_device: frozenset[str] = field(repr=False)
    resident_bytes: int
    device: str
    largest_setting: str
    largest_setting_bytes: int

    def describe(self) -> str:
        """One line: parameters, peak, and the three largest parts."""
        parts = ", ".join(f"{name} {format_bytes(n)}" for name, n in list(self.breakdown.items())[:3])
        where = f"; {format_bytes(self.device_bytes)} on the GPU" if self.device == "cuda" else ""
        return f"{self.n_parameters:,} parameters, peak about {format_bytes(self.peak_bytes)}{where} ({parts})"


def _knobs(config: "TrainConfig") -> dict:
    """The numbers of a config that memory depends on."""
    return {
        "model": config.model,
        "batch_size": int(config.batch_size),
        "meta_batch_size": int(config.meta_batch_size),
        "support_size": int(config.support_size),
        "query_size": int(config.query_size),
        "eval_support_size": int(config.eval_support_size),
        "inner_steps": int(config.inner_steps),
        "negatives": int(config.negatives),
        "meta": config.lambda_meta > 0,
        "trans": config.lambda_trans > 0,
        "second_order": not config.first_order,
        "newton": config.inner_solver == "newton",
        "scope": config.adapt_scope,
        "learn_inner_lr": bool(config.learn_inner_lr),
        "ema": config.ema_decay > 0,
        "keep_best": bool(config.keep_best),
        "anchor": bool(config.source_run),
        "l0": config.lambda_l0 > 0,
        "cold_fraction": float(config.cold_fraction),
        "loss": config.loss,
        "use_text": bool(config.use_text),
        "rows": getattr(config, "table_updates", "dense") == "rows",
    }


def _parts(k: dict, shape: DataShape, cuda: bool) -> tuple[dict[str, float], set[str]]:
    """Bytes per part at the peak, and the names of those on the device."""
    model: ModelConfig = k["model"]
    mshape = shape.model_shape()
    d, f = int(model.factor_dim), int(model.feature_dim)
    hidden = tuple(int(h) for h in model.hidden)
    fu = _feature_width(mshape.user_categorical, mshape.user_multilabel, mshape.user_numeric, 0, f)
    fi = _feature_width(mshape.item_categorical, mshape.item_multilabel, mshape.item_numeric, mshape.text_dim, f)
    head_in = fu + fi + d
    p = count_parameters(model, mshape)
    scope = _scope_size(k["scope"], model, mshape)
    implicit = shape.implicit if k["loss"] == "auto" else k["loss"] == "bce"
    negatives = k["negatives"] if implicit else 0

    parts: dict[str, float] = {}
    parts["parameters"] = _F32 * p
    # Row updates: the ID tables' gradients are the looked-up rows only (sparse), and L0 runs over the other tensors.
    tables = (shape.n_users + shape.n_items) * (d + 1) if k["rows"] else 0
    parts["gradients"] = _F32 * (p - tables)
    parts["Adam moments"] = 2 * _F32 * p
    parts["inner rates"] = _F32 * scope * (4 if k["learn_inner_lr"] else 1)
    if k["ema"]:
        parts["weight average"] = _F32 * p
    if k["keep_best"]:
        parts["best-epoch copy"] = _F32 * p + shape.n_users + shape.n_items
    if k["anchor"]:
        parts["source anchor"] = _F32 * p
    # Numbers per scored (user, item) row at the peak of a step (fitted to measured peaks on CPU): a transfer row
    # keeps its feature parts, factor terms, the head's input and every hidden layer (before and after ReLU) for
    # backward; a task's query and support rows share the task's user features; evaluation keeps no graph.
    features = 2 * (fu + fi)
    per_row = 6 * d + 2.5 * (features + head_in + 2 * sum(hidden)) + 32
    per_task_row = d / 2 + 2 * fi + head_in / 2 + 2 * sum(hidden) + 8
    per_row_eval = d / 2 + 2 * fi + head_in + 2 * (max(hidden) if hidden else 0) + 16
    # A batch never holds more rows (or tasks) than there are ratings (or users).
    batch = min(k["batch_size"], max(shape.n_ratings, 1))
    transfer = _F32 * batch * (1 + negatives) * per_row if k["trans"] else 0.0
    meta = 0.0
    if k["meta"]:
        t, s, q = min(k["meta_batch_size"], max(shape.n_users, 1)), k["support_size"] * (1 + negatives), k["query_size"] * (1 + negatives)
        keep = 3 if k["second_order"] else 2
        rows = k["inner_steps"] * s * (1 + (s if k["newton"] else 1)) + q
        meta = keep * _F32 * t * (rows * per_task_row + (k["inner_steps"] + 1) * scope)
        if k["newton"]:
            # Each Newton step builds and solves a (scope x scope) system per task, kept for the meta-gradient.
            meta += 4.5 * _F32 * t * scope * scope * k["inner_steps"]
    n_test = max(1, int(math.ceil(k["cold_fraction"] * shape.n_users)))
    widest = shape.max_user_ratings or max(1, 3 * shape.n_ratings // max(shape.n_users, 1))
    if implicit:
        users = min(_CATALOGUE_CHUNK, n_test)
        evaluation = _F32 * users * shape.n_items * per_row_eval + users * shape.n_items * 20  # + the catalogue frame
        eval_tasks = 0.0
        chunk = users
    else:
        chunk = min(_EVAL_CHUNK, n_test)
        evaluation = _F32 * chunk * (k["eval_support_size"] + widest) * per_row_eval
        eval_tasks = 13.0 * n_test * (k["eval_support_size"] + widest)  # item int64, rating float32, mask bool
    if k["newton"]:
        evaluation += 3 * _F32 * chunk * scope * scope
    penalty = _F32 * (p - tables) if k["l0"] else 0.0  # ‖θ‖² or ‖θ − θ_source‖² holds one parameter-sized temporary
    swap = _F32 * p if k["ema"] else 0.0  # validation swaps the average in and keeps the live weights aside
    step = max(transfer + penalty, meta + penalty, evaluation + eval_tasks + swap)
    label = max(
        (("transfer step", transfer + penalty), ("meta step", meta + penalty), ("evaluation", evaluation + eval_tasks + swap)),
        key=lambda kv: kv[1],
    )[0]
    parts[f"largest step ({label})"] = step
    context = (
        shape.n_users * (_I64 * len(mshape.user_categorical) + _I64 * shape.user_label_slots + _F32 * mshape.user_numeric)
        + shape.n_items * (_I64 * len(mshape.item_categorical) + _I64 * shape.item_label_slots + _F32 * mshape.item_numeric + _F32 * mshape.text_dim)
    )
    parts["feature context"] = context
    if k["rows"]:
        # Per user or item row: the step it was last charged L0 and last averaged (two tables a side), a scratch slot.
        parts["row bookkeeping"] = 5 * _I64 * (shape.n_users + shape.n_items)
    if k["use_text"] and shape.raw_text_dim:
        # Encoded vectors, and their float64 centred copy and SVD for whitening.
        parts["text vectors"] = shape.n_items * shape.raw_text_dim * (_F32 + 2 * 8)
    parts["ratings frames"] = FRAMES_BYTES_PER_RATING * shape.n_ratings
    parts["dataset"] = DATASET_BYTES_PER_RATING * shape.n_ratings + 64 * (shape.n_users + shape.n_items)
    parts["runtime"] = RUNTIME_BYTES
    parts["fit overhead"] = FIT_OVERHEAD_BYTES
    on_device: set[str] = set()
    if cuda:
        on_device = {n for n in parts if n not in ("text vectors", "ratings frames", "dataset", "runtime", "fit overhead")}
        parts["context (host copy)"] = context
        parts["CUDA context"] = CUDA_CONTEXT_BYTES
        on_device.add("CUDA context")
        parts["CUDA runtime (host)"] = CUDA_HOST_BYTES
    return parts, on_device


def _totals(parts: Mapping[str, float], on_device: set[str]) -> tuple[float, float]:
    device = sum(v for n, v in parts.items() if n in on_device)
    host = sum(v for n, v in parts.items() if n not in on_device)
    return host, device


#: Settings tried at their smallest value to find the one that costs most: (key, how to shrink it).
_SHRINKS = (
    ("model.hidden", lambda k: {**k, "model": dataclasses.replace(k["model"], hidden=())}),
    ("model.factor_dim", lambda k: {**k, "model": dataclasses.replace(k["model"], factor_dim=1)}),
    ("model.feature_dim", lambda k: {**k, "model": dataclasses.replace(k["model"], feature_dim=1)}),
    ("batch_size", lambda k: {**k, "batch_size": 1}),
    ("meta_batch_size", lambda k: {**k, "meta_batch_size": 1}),
    ("support_size", lambda k: {**k, "support_size": 1}),
    ("query_size", lambda k: {**k, "query_size": 1}),
    ("inner_steps", lambda k: {**k, "inner_steps": min(k["inner_steps"], 1)}),
    ("negatives", lambda k: {**k, "negatives": 0}),
    ("eval_support_size", lambda k: {**k, "eval_support_size": 1}),
)


def _setting_text(config: "TrainConfig", key: str) -> str:
    value = config.model if key.startswith("model.") else config
    value = getattr(value, key.split(".")[-1])
    return f"{key}={json.dumps(list(value)) if isinstance(value, tuple) else value}"


def estimate(config: "TrainConfig", shape: DataShape, *, device: str | None = None) -> Footprint:
    """Estimate the parameters and the peak memory of training ``config`` on data of ``shape``.

    Parameters
    ----------
    config
        The run's settings (``config.model`` sizes the model).
    shape
        The data's sizes (:func:`data_shape`).
    device
        ``cpu`` or ``cuda``; default: ``config.device`` (``auto`` is CUDA when available).

    Returns
    -------
    Footprint
    """
    if device is None:
        device = config.device
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    cuda = device == "cuda"
    knobs = _knobs(config)
    parts, on_device = _parts(knobs, shape, cuda)
    host, dev = _totals(parts, on_device)
    relevant = dev if cuda else host
    best_key, best_saving = "", -1.0
    for key, shrink in _SHRINKS:
        smaller_parts, smaller_device = _parts(shrink(knobs), shape, cuda)
        h, dv = _totals(smaller_parts, smaller_device)
        saving = relevant - (dv if cuda else h)
        if saving > best_saving:
            best_key, best_saving = key, saving
    ordered = dict(sorted(((n, int(v)) for n, v in parts.items()), key=lambda kv: -kv[1]))
    resident = parts["runtime"] + parts["dataset"]
    footprint = Footprint(
        n_parameters=count_parameters(config.model, shape.model_shape()),
        peak_bytes=int(host), device_bytes=int(dev) if cuda else 0,
        breakdown=ordered, on_device=frozenset(on_device), resident_bytes=int(resident), device="cuda" if cuda else "cpu",
        largest_setting=_setting_text(config, best_key), largest_setting_bytes=int(max(best_saving, 0.0)),
    )
    log.info("footprint: %s", footprint.describe())
    return footprint


def check_fits(footprint: Footprint, available_bytes: int | None = None, *, available_device_bytes: int | None = None) -> None:
    """Refuse a run that will not fit in memory, with one line naming the setting that costs most.

    Parameters
    ----------
    footprint
        From :func:`estimate`.
    available_bytes
        Free host RAM (default: :func:`metarec_core.memory.available_ram`; when
        the system does not say, the host is not checked).
    available_device_bytes
        Free CUDA memory (default: :func:`metarec_core.memory.available_cuda`); CUDA runs only.

    Raises
    ------
    ConfigError
        When the estimate exceeds what is available, e.g. ``this run needs about
        372.6 GB of memory but the machine has 14.2 GB available; the largest
        setting is model.hidden=[100000000] (372.5 GB of it): lower it, train on
        a sample of the data, or use a machine with more memory``.
    """
    checks = []
    if footprint.device == "cuda":
        free = available_cuda() if available_device_bytes is None else available_device_bytes
        checks.append(("GPU memory", footprint.device_bytes, free, "the GPU has"))
    free_ram = available_ram() if available_bytes is None else available_bytes
    # What is already resident (the runtime and the loaded dataset) is not asked of the free memory again.
    checks.append(("memory", footprint.peak_bytes - footprint.resident_bytes, free_ram, "the machine has"))
    for what, need, free, has in checks:
        if free is None or need <= free:
            continue
        share = footprint.largest_setting_bytes
        hint = f"lower it, train on a sample of the data, or use a machine with more {'GPU ' if what == 'GPU memory' else ''}memory"
        if footprint.device == "cuda":
            hint += " (or device=cpu)" if what == "GPU memory" else ""
        raise ConfigError(
            f"this run needs about {format_bytes(need)} of {what} but {has} {format_bytes(free)} available "
            f"({footprint.n_parameters:,} parameters); the largest setting is {footprint.largest_setting} "
            f"({format_bytes(share)} of it): {hint}"
        )
