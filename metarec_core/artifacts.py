"""Run directories: everything needed to score and recommend later, written and read back safely."""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from metarec_core.configs import config_from_dict, config_to_dict
from metarec_core.errors import ConfigError, DataError
from metarec_core.features import FeatureEncoder
from metarec_core.idmap import IdMap
from metarec_core.models import EntityTensors, FeatureContext, ModelConfig, ModelShape, PreferenceModel
from metarec_core.train_config import TrainConfig

if TYPE_CHECKING:
    from metarec_core.progress import ProgressEvent

log = logging.getLogger(__name__)

CONFIG_FILE = "config.json"
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
CONTEXT_FILE = "context.safetensors"
METRICS_FILE = "metrics.jsonl"
RESULT_FILE = "result.json"
INNER_LR_PREFIX = "inner_lr."


@dataclass
class RunArtifacts:
    """What a run directory holds besides the weights: config, sizes, ID maps, vocabularies, provenance."""

    config: TrainConfig
    shape: ModelShape
    users: IdMap
    items: IdMap
    user_encoder: FeatureEncoder
    item_encoder: FeatureEncoder
    dataset_name: str
    fingerprint: str
    loss: str
    rating_range: tuple[float, float]
    context: FeatureContext = field(repr=False)
    cold_users: tuple[int, ...] = ()
    cold_items: tuple[int, ...] = ()
    item_titles: tuple[str, ...] = ()
    seen: tuple[np.ndarray, np.ndarray] | None = field(default=None, repr=False)

    def append_metrics(self, run_dir: Path, events: "list[ProgressEvent]") -> None:
        """Append progress events as JSON lines to ``metrics.jsonl``."""
        run_dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        lines = "".join(json.dumps({**dataclasses.asdict(event), "time": now}) + "\n" for event in events)
        with open(run_dir / METRICS_FILE, "a", encoding="utf-8") as handle:
            handle.write(lines)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def save_run(
    run_dir: Path,
    model: PreferenceModel,
    inner_lr: dict[str, torch.Tensor],
    artifacts: RunArtifacts,
    *,
    final_metrics: dict[str, float],
    stopped: bool,
) -> None:
    """Write (or overwrite, atomically per file) a run directory.

    Files: ``config.json``, ``model.json`` (shape, model config, ID maps,
    feature vocabularies, provenance), ``weights.safetensors`` (parameters,
    buffers and learned inner learning rates), ``context.safetensors``
    (encoded side features and text vectors) and ``result.json``.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    _atomic_write_text(run_dir / CONFIG_FILE, json.dumps(config_to_dict(artifacts.config), indent=2, sort_keys=True) + "\n")
    meta = {
        "format": 1,
        "shape": dataclasses.asdict(artifacts.shape),
        "model_config": config_to_dict(artifacts.config.model),
        "users": artifacts.users.to_json(),
        "items": artifacts.items.to_json(),
        "user_features": artifacts.user_encoder.to_json(),
        "item_features": artifacts.item_encoder.to_json(),
        "dataset_name": artifacts.dataset_name,
        "fingerprint": artifacts.fingerprint,
        "loss": artifacts.loss,
        "rating_range": list(artifacts.rating_range),
        "cold_users": list(artifacts.cold_users),
        "cold_items": list(artifacts.cold_items),
        "item_titles": dict(zip(artifacts.items.external_ids, artifacts.item_titles)) if artifacts.item_titles else {},
    }
    _atomic_write_text(run_dir / MODEL_FILE, json.dumps(meta) + "\n")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update({INNER_LR_PREFIX + k: v.detach().cpu().contiguous() for k, v in inner_lr.items()})
    tmp = run_dir / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    os.replace(tmp, run_dir / WEIGHTS_FILE)
    if not (run_dir / CONTEXT_FILE).exists():
        tmp = run_dir / (CONTEXT_FILE + ".tmp")
        tensors = _context_tensors(artifacts.context)
        if artifacts.seen is not None:
            tensors["seen.users"] = torch.tensor(np.asarray(artifacts.seen[0]), dtype=torch.long).contiguous()
            tensors["seen.items"] = torch.tensor(np.asarray(artifacts.seen[1]), dtype=torch.long).contiguous()
        save_file(tensors, str(tmp))
        os.replace(tmp, run_dir / CONTEXT_FILE)
    _atomic_write_text(run_dir / RESULT_FILE, json.dumps({"final_metrics": final_metrics, "stopped": stopped, "saved_at": time.time()}) + "\n")


def _context_tensors(context: FeatureContext) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for prefix, ent in (("users", context.users), ("items", context.items)):
        out[f"{prefix}.categorical"] = ent.categorical.cpu().contiguous()
        out[f"{prefix}.numeric"] = ent.numeric.cpu().contiguous()
        for j, m in enumerate(ent.multilabel):
            out[f"{prefix}.multilabel.{j}"] = m.cpu().contiguous()
        if ent.text is not None:
            out[f"{prefix}.text"] = ent.text.cpu().contiguous()
    return out


@dataclass
class LoadedRun:
    """A trained run read back from disk: model, learned inner rates, features and metadata."""

    run_dir: Path
    config: TrainConfig
    model: PreferenceModel
    inner_lr: dict[str, torch.Tensor]
    context: FeatureContext
    users: IdMap
    items: IdMap
    user_encoder: FeatureEncoder
    item_encoder: FeatureEncoder
    meta: dict[str, Any]
    seen: tuple[np.ndarray, np.ndarray] = field(default=(np.zeros(0, np.int64), np.zeros(0, np.int64)), repr=False)

    def seen_items(self, user: int) -> np.ndarray:
        """Items a training user interacted with (their history)."""
        users, items = self.seen
        return items[users == user]

    @property
    def loss(self) -> str:
        """``mse`` or ``bce``."""
        return str(self.meta["loss"])

    @property
    def implicit(self) -> bool:
        """Whether the run learned from implicit feedback (interactions, BCE) rather than ratings."""
        return self.loss == "bce"

    @property
    def rating_range(self) -> tuple[float, float]:
        """Smallest and largest training rating."""
        lo, hi = self.meta["rating_range"]
        return float(lo), float(hi)


def load_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    """The model tensors of a run (no inner learning rates), loaded without unpickling."""
    path = Path(run_dir) / WEIGHTS_FILE
    if not path.exists():
        raise DataError(f"no weights in run directory '{run_dir}'; train the run first or pick another run")
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise DataError(_not_safetensors(path, run_dir, exc)) from exc
    return {k: v for k, v in tensors.items() if not k.startswith(INNER_LR_PREFIX)}


def _not_safetensors(path: Path, run_dir: Path, exc: BaseException) -> str:
    return _damaged(path, run_dir, f"is not a readable safetensors file ({exc})")


#: Keys every ``model.json`` holds.
MODEL_KEYS = ("shape", "model_config", "users", "items", "user_features", "item_features", "loss", "rating_range")
#: What to do about a damaged or replaced file of a run directory.
_REMEDY = "train the run again or import it from its export"


def _damaged(path: Path, run_dir: Path, what: str) -> str:
    return f"'{path.name}' in run directory '{run_dir}' {what}; it is damaged or was replaced — {_REMEDY}"


def _read_json_object(path: Path, run_dir: Path) -> dict:
    """A run file that must hold a JSON object; a :class:`DataError` naming it otherwise."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise DataError(_damaged(path, run_dir, "is not text")) from exc
    except ValueError as exc:
        raise DataError(_damaged(path, run_dir, f"is not valid JSON ({exc})")) from exc
    except OSError as exc:
        raise DataError(f"cannot read '{path.name}' in run directory '{run_dir}': {exc.strerror or exc}") from exc
    if not isinstance(value, dict):
        raise DataError(_damaged(path, run_dir, f"holds a JSON {type(value).__name__}, not an object"))
    return value


def _read_config(run_dir: Path) -> TrainConfig:
    path = run_dir / CONFIG_FILE
    values = _read_json_object(path, run_dir)
    try:
        return config_from_dict(TrainConfig, saved_config_values(values))
    except (ConfigError, TypeError, ValueError) as exc:
        raise DataError(
            f"'{path.name}' in run directory '{run_dir}' holds settings this version of metarec cannot use ({exc}); "
            "the run was saved by another version or the file was edited — train the run again"
        ) from exc


def _read_model_description(run_dir: Path) -> dict:
    path = run_dir / MODEL_FILE
    meta = _read_json_object(path, run_dir)
    missing = [k for k in MODEL_KEYS if k not in meta]
    if missing:
        raise DataError(_damaged(path, run_dir, f"lacks {', '.join(missing)}"))
    return meta


def check_run_files(run_dir: str | Path) -> list[str]:
    """Problems with the files of a finished run directory, as sentences (empty when they read back).

    Checks that ``config.json`` holds a JSON object (whether its settings fit
    this version is :func:`load_run`'s business: another version's run is not
    damaged), that ``model.json`` has a model description's keys, and that both safetensors files have a
    readable header covering the whole file (headers only: cheap). Missing files
    are not reported here (the store lists them).
    """
    run_dir = Path(run_dir)
    problems: list[str] = []
    checks = ((CONFIG_FILE, lambda d: _read_json_object(d / CONFIG_FILE, d)), (MODEL_FILE, _read_model_description))
    for name, check in checks:
        if (run_dir / name).is_file():
            try:
                check(run_dir)
            except DataError as exc:
                problems.append(str(exc))
    for name in (WEIGHTS_FILE, CONTEXT_FILE):
        path = run_dir / name
        if path.is_file() and path.stat().st_size > 0:
            try:
                with safe_open(str(path), "pt"):
                    pass
            except (OSError, SafetensorError) as exc:
                problems.append(_not_safetensors(path, run_dir, exc))
    return problems


#: Settings added after runs were first saved, with the value that reproduces how those older runs adapt.
_LEGACY_SETTINGS = {"inner_solver": "gradient", "patience": 0, "l0_unit": "step", "huber_delta": 0.0}


def saved_config_values(values: dict) -> dict:
    """A saved ``config.json`` as ``TrainConfig`` values: settings it predates get the value its run was trained with.

    Runs saved before the Newton inner solver existed adapted by gradient steps;
    loading them with today's default would reinterpret their learned step
    sizes as prior variances; runs saved before early stopping trained every epoch,
    and before ``l0_unit`` added all of ``lambda_l0`` at every step; before
    ``huber_delta`` they trained on the squared error.
    """
    return {**_LEGACY_SETTINGS, **values} if isinstance(values, dict) else values


def load_run(run_dir: str | Path, *, device: str | torch.device = "cpu") -> LoadedRun:
    """Read a run directory back into a ready-to-score model.

    Raises
    ------
    DataError
        If a file is missing or unreadable; the message names it.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise DataError(f"run directory '{run_dir}' does not exist; give the folder that train --out wrote (or a run's folder in the store)")
    if not any((run_dir / name).exists() for name in (CONFIG_FILE, MODEL_FILE, WEIGHTS_FILE)):
        raise DataError(f"'{run_dir}' is not a run directory (no {CONFIG_FILE}, {MODEL_FILE} or {WEIGHTS_FILE}); give the folder that train --out wrote")
    for name in (CONFIG_FILE, MODEL_FILE, WEIGHTS_FILE, CONTEXT_FILE):
        if not (run_dir / name).exists():
            raise DataError(f"run directory '{run_dir}' has no {name}; it was not written completely — train it again")
    config = _read_config(run_dir)
    meta = _read_model_description(run_dir)
    loaded = {}
    for name in (WEIGHTS_FILE, CONTEXT_FILE):
        try:
            loaded[name] = load_file(str(run_dir / name))
        except (OSError, SafetensorError) as exc:
            raise DataError(_not_safetensors(run_dir / name, run_dir, exc)) from exc
    tensors, ctx = loaded[WEIGHTS_FILE], loaded[CONTEXT_FILE]
    try:
        shape_values = dict(meta["shape"])
        for key in ("user_categorical", "user_multilabel", "item_categorical", "item_multilabel"):
            shape_values[key] = tuple(shape_values[key])
        shape = ModelShape(**shape_values)
        model = PreferenceModel(shape, config_from_dict(ModelConfig, meta["model_config"]))
    except (KeyError, TypeError, ValueError, ConfigError, RuntimeError, MemoryError, OverflowError) as exc:
        reason = str(exc).replace("got an unexpected keyword argument", "got the unknown field")
        raise DataError(_damaged(run_dir / MODEL_FILE, run_dir, f"does not describe a model ({type(exc).__name__}: {reason})")) from exc
    state = {k: v for k, v in tensors.items() if not k.startswith(INNER_LR_PREFIX)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DataError(
            f"the weights in '{run_dir}' do not fit this version of the model ({str(exc).splitlines()[0]}); "
            "the run was saved by an older metarec — train it again"
        ) from exc
    model.to(device).eval()
    inner_lr = {k[len(INNER_LR_PREFIX):]: v.to(device) for k, v in tensors.items() if k.startswith(INNER_LR_PREFIX)}

    def entity(prefix: str) -> EntityTensors:
        n_multi = sum(1 for k in ctx if k.startswith(f"{prefix}.multilabel."))
        return EntityTensors(
            ctx[f"{prefix}.categorical"], tuple(ctx[f"{prefix}.multilabel.{j}"] for j in range(n_multi)),
            ctx[f"{prefix}.numeric"], ctx.get(f"{prefix}.text"),
        )

    try:
        context = FeatureContext(entity("users"), entity("items")).to(device)
    except KeyError as exc:
        raise DataError(_damaged(run_dir / CONTEXT_FILE, run_dir, f"lacks the tensor {exc}")) from exc
    try:
        users, items = IdMap.from_json(meta["users"]), IdMap.from_json(meta["items"])
        user_encoder = FeatureEncoder.from_json(meta["user_features"])
        item_encoder = FeatureEncoder.from_json(meta["item_features"])
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(_damaged(run_dir / MODEL_FILE, run_dir, f"has unreadable ID maps or features ({type(exc).__name__}: {exc})")) from exc
    return LoadedRun(
        run_dir=run_dir, config=config, model=model, inner_lr=inner_lr, context=context,
        users=users, items=items, user_encoder=user_encoder, item_encoder=item_encoder, meta=meta,
        seen=(ctx["seen.users"].numpy(), ctx["seen.items"].numpy()) if "seen.users" in ctx else (np.zeros(0, np.int64), np.zeros(0, np.int64)),
    )


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The events of ``metrics.jsonl``; a half-written last line is skipped with a log warning."""
    path = Path(run_dir) / METRICS_FILE
    if not path.exists():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("%s line %d is not complete JSON; skipped", path, number)
    return rows
