"""Training: one ``fit`` that optimises ``L_total = λ1·L_meta + λ2·L_trans + L0`` on a schedule of phases."""
from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from metarec_core.artifacts import RunArtifacts, save_run
from metarec_core.configs import config_from_dict, config_to_dict
from metarec_core.dataset import Dataset
from metarec_core.errors import ConfigError, TrainingError
from metarec_core.features import FeatureEncoder
from metarec_core.losses import l2_penalty, pointwise_loss
from metarec_core.meta import REDUCTIONS, SOLVERS, adapt, meta_loss, score
from metarec_core.presets import PRESETS
from metarec_core.models import ADAPT_SCOPES, EntityTensors, FeatureContext, ModelConfig, PreferenceModel, shape_for
from metarec_core.splits import ColdStartSplit, SplitConfig, split_cold_start
from metarec_core.tasks import TaskBatch, UserRatings, catalogue_query, sample_tasks, tasks_from_frames

log = logging.getLogger(__name__)

SCHEDULES = ("alternating", "sequential", "joint")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; saved as ``config.json`` beside the weights.

    The objective is ``L_total = λ1·L_meta + λ2·L_trans + L0`` with
    ``λ1 = lambda_meta``, ``λ2 = lambda_trans`` and ``L0 = lambda_l0·‖θ − θ_source‖²``
    (L2-SP towards a source run's weights when ``source_run`` is set, plain L2
    ``lambda_l0·‖θ‖²`` otherwise). ``λ1 = 0`` turns the meta phase off (pure
    transfer), ``λ2 = 0`` the transfer phase (pure meta-learning). With
    ``λ1 = 0`` nothing learns the inner rates, so each epoch sets them to the
    value of :data:`PRIOR_GRID` with the best validation score (without
    validation users, ``valid_fraction = 0``, they stay at ``inner_lr``).

    Schedules: ``alternating`` runs, in each of ``num_epochs`` epochs,
    ``meta_epochs`` passes of the meta phase then ``trans_epochs`` passes of
    the transfer phase; ``sequential`` runs all transfer passes first
    (``num_epochs × trans_epochs``), then all meta passes; ``joint`` takes,
    in every step, one meta-batch and one warm batch and optimises the whole
    sum (``num_epochs × max(meta_epochs, trans_epochs)`` passes).

    With ``keep_best`` the weights of the epoch with the best validation
    score (K-shot MAE of held-out training-time new users; AUC on implicit
    data) are kept at the end.

    The inner loop (see :func:`metarec_core.meta.adapt`): ``inner_solver``
    ``newton`` (default) takes ``inner_steps`` damped Gauss–Newton steps on
    the support loss plus a Gaussian prior around the meta-learned start, so
    ``inner_lr`` is the prior variance α of each adapted parameter (how far a
    user may move); with ``sum`` reduction this is a ridge fold-in whose prior
    is meta-learned, and it shrinks by itself when a user has few ratings.
    ``gradient`` takes plain MAML steps of size ``inner_lr`` (Meta-SGD when
    ``learn_inner_lr``). ``inner_reduction`` is how a task's support
    losses combine in the inner loop (``sum`` makes steps grow with the
    support size, see :func:`metarec_core.meta.adapt`); ``query_pooling``
    averages ``L_meta`` over tasks (``task``) or over query ratings
    (``rating``). ``min_support_size > 0`` draws each training
    task's support size from ``[min_support_size, support_size]``.
    With ``use_text``, item text vectors are PCA-whitened to
    ``text_components`` dimensions (0 keeps them as encoded) before the
    trainable adaptor. ``final_lr_fraction < 1`` decays the outer learning rate along a cosine
    to that fraction of ``lr`` by the last step. ``ema_decay > 0`` validates,
    keeps and saves an exponential moving average of the weights and inner
    rates (updated after every step) instead of the last step's: the
    average of nearby iterates varies less from one initialisation to
    the next. ``cpu_threads`` sets torch's CPU threads for the run (0 leaves torch's
    choice): on this model's small tensors one thread is fastest, and two
    threads on a busy 2-core machine were several times slower.
    """

    lambda_meta: float = 1.0
    lambda_trans: float = 1.0
    lambda_l0: float = 1e-3
    schedule: str = "alternating"
    num_epochs: int = 8
    meta_epochs: int = 1
    trans_epochs: int = 2
    inner_steps: int = 1
    inner_lr: float = 0.5
    inner_reduction: str = "sum"
    inner_solver: str = "newton"
    query_pooling: str = "task"
    learn_inner_lr: bool = True
    adapt_scope: str = "user"
    first_order: bool = False
    meta_batch_size: int = 32
    support_size: int = 10
    min_support_size: int = 0
    query_size: int = 25
    batch_size: int = 512
    lr: float = 0.005
    final_lr_fraction: float = 1.0
    ema_decay: float = 0.998
    model: ModelConfig = field(default_factory=ModelConfig)
    use_text: bool = False
    text_encoder: str = "default"
    text_columns: tuple[str, ...] = ()
    text_components: int = 32
    scenario: str = "user-cold"
    cold_fraction: float = 0.2
    valid_fraction: float = 0.05
    eval_support_size: int = 10
    loss: str = "auto"
    negatives: int = 4
    source_run: str = ""
    keep_best: bool = True
    seed: int = 0
    device: str = "auto"
    cpu_threads: int = 1

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got '{self.schedule}'")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got '{self.device}'")
        if self.adapt_scope not in ADAPT_SCOPES:
            raise ValueError(f"adapt_scope must be one of {ADAPT_SCOPES}, got '{self.adapt_scope}'")
        if self.query_pooling not in ("task", "rating"):
            raise ValueError(f"query_pooling must be task or rating, got '{self.query_pooling}'")
        if self.inner_reduction not in REDUCTIONS:
            raise ValueError(f"inner_reduction must be one of {REDUCTIONS}, got '{self.inner_reduction}'")
        if self.inner_solver not in SOLVERS:
            raise ValueError(f"inner_solver must be one of {SOLVERS}, got '{self.inner_solver}'")
        if self.inner_solver == "newton" and self.adapt_scope != "user":
            raise ValueError(
                f"inner_solver 'newton' solves a system the size of the adapted parameters and needs adapt_scope 'user', "
                f"got '{self.adapt_scope}'; use inner_solver 'gradient' for larger scopes"
            )
        if self.loss not in ("auto", "mse", "bce"):
            raise ValueError(f"loss must be auto, mse or bce, got '{self.loss}'")
        for name in ("lambda_meta", "lambda_trans", "lambda_l0", "inner_lr", "lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        for name in ("num_epochs", "meta_epochs", "trans_epochs", "inner_steps", "cpu_threads"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("meta_batch_size", "support_size", "query_size", "batch_size", "eval_support_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1")
        if not 0.0 <= self.final_lr_fraction <= 1.0:
            raise ValueError("final_lr_fraction must be in [0, 1]")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1) (0 turns weight averaging off), got {self.ema_decay!r}")
        if not 0 <= self.min_support_size <= self.support_size:
            raise ValueError("min_support_size must be between 0 (fixed support size) and support_size")
        if not 0.0 <= self.cold_fraction < 1.0 or not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError("cold_fraction and valid_fraction must be in [0, 1)")
        if self.lambda_meta == 0 and self.lambda_trans == 0:
            raise ValueError("lambda_meta and lambda_trans cannot both be 0: nothing would be trained")

    def inner_loop(self) -> dict[str, Any]:
        """The keyword arguments of :func:`metarec_core.meta.adapt` this config sets: ``steps``, ``scope``, ``reduction``, ``solver``.

        Every caller of ``adapt`` (training, validation, evaluation, the
        recommender) takes them from here, so a run adapts the same way wherever
        it is used.
        """
        return {"steps": self.inner_steps, "scope": self.adapt_scope, "reduction": self.inner_reduction, "solver": self.inner_solver}


def preset_config(name: str, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset (see :data:`PRESETS`) plus overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; presets are: {', '.join(PRESETS)}")
    return config_from_dict(TrainConfig, {**PRESETS[name], **overrides})


@dataclass(frozen=True)
class ProgressEvent:
    """One report from ``fit``: where training is and what the loss terms are.

    ``phase`` is ``meta``, ``transfer``, ``joint``, ``validate`` or ``done``;
    ``losses`` holds the terms of the last step (``total``, ``meta``,
    ``trans``, ``l0``); ``metrics`` holds validation metrics on ``validate``
    and ``done`` events (``valid_mae``, ``valid_rmse``, ``valid_ndcg@3``, and
    ``test_*`` at the end).
    """

    phase: str
    epoch: int
    step: int
    total_steps: int
    losses: Mapping[str, float]
    metrics: Mapping[str, float]
    elapsed: float
    eta: float | None


@dataclass(frozen=True)
class TrainResult:
    """What ``fit`` returns: where the run was saved, whether it was stopped, final metrics."""

    run_dir: Path | None
    stopped: bool
    epochs_completed: int
    final_metrics: dict[str, float]
    device: str
    model: PreferenceModel = field(repr=False, compare=False)
    artifacts: RunArtifacts = field(repr=False, compare=False)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a GPU is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available; use device=auto or cpu")
    return torch.device(device)


def loss_kind(config: TrainConfig, dataset: Dataset) -> str:
    """The loss in use: the config's, or MSE for explicit and BCE for implicit data."""
    if config.loss != "auto":
        return config.loss
    return "bce" if dataset.implicit else "mse"


@dataclass(frozen=True)
class TrainingData:
    """The pieces of a dataset that training and evaluation use, prepared once."""

    split: ColdStartSplit
    train: pd.DataFrame
    valid_support: pd.DataFrame
    valid_query: pd.DataFrame
    user_encoder: FeatureEncoder
    item_encoder: FeatureEncoder
    context: FeatureContext
    text_vectors: np.ndarray | None


def prepare_data(
    config: TrainConfig, dataset: Dataset, *, text_vectors: np.ndarray | None = None, split: ColdStartSplit | None = None,
) -> TrainingData:
    """Split a dataset (seeded; or take the given split), carve validation users from the training users and encode features."""
    if split is None:
        split = split_cold_start(
            dataset,
            SplitConfig(scenario=config.scenario, cold_fraction=config.cold_fraction, support_size=config.eval_support_size, seed=config.seed),
        )
    train = split.train
    counts = train.groupby("user").size()
    eligible = counts.index[counts > config.eval_support_size].to_numpy(np.int64)
    rng = np.random.default_rng(config.seed + 1)
    n_valid = int(round(len(eligible) * config.valid_fraction))
    valid_users = np.sort(rng.choice(eligible, size=n_valid, replace=False)) if n_valid else np.zeros(0, np.int64)
    is_valid = train["user"].isin(valid_users).to_numpy()
    valid_rows = train[is_valid]
    train = train[~is_valid].reset_index(drop=True)
    # Validation tasks: a seeded support set of K ratings per validation user, the rest as query.
    order = rng.permutation(len(valid_rows))
    shuffled = valid_rows.iloc[order]
    rank = shuffled.groupby("user").cumcount().to_numpy()
    valid_support = shuffled[rank < config.eval_support_size].reset_index(drop=True)
    valid_query = shuffled[rank >= config.eval_support_size].reset_index(drop=True)
    user_encoder = FeatureEncoder.fit(dataset.user_table, dataset.user_features)
    item_encoder = FeatureEncoder.fit(dataset.item_table, tuple(s for s in dataset.item_features if s.kind != "text"))
    context = FeatureContext(
        EntityTensors.from_encoded(user_encoder.transform(dataset.user_table)),
        EntityTensors.from_encoded(item_encoder.transform(dataset.item_table), text=text_vectors),
    )
    return TrainingData(split, train, valid_support, valid_query, user_encoder, item_encoder, context, text_vectors)


def item_text_vectors(config: TrainConfig, dataset: Dataset) -> np.ndarray | None:
    """Encoded item texts when ``use_text`` is on (cached on disk by the text module)."""
    if not config.use_text:
        return None
    from metarec_core.text import encode_items, make_text_encoder

    columns = tuple(config.text_columns) or None
    return encode_items(dataset, make_text_encoder(config.text_encoder), columns=columns)


def whiten(vectors: np.ndarray, components: int) -> np.ndarray:
    """Project vectors on their top principal components and scale each to unit variance (PCA whitening).

    Fewer, decorrelated text dimensions keep the trainable adaptor from
    memorising individual items (which does not carry over to new items).
    """
    centred = vectors - vectors.mean(axis=0, keepdims=True)
    _, singular, basis = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    k = int(min(components, basis.shape[0]))
    scale = singular[:k] / np.sqrt(max(len(vectors) - 1, 1))
    return (centred @ basis[:k].T / np.where(scale > 0, scale, 1.0)).astype(np.float32)


def fit(
    config: TrainConfig,
    dataset: Dataset,
    *,
    out_dir: str | Path | None = None,
    on_progress: Callable[[ProgressEvent], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    text_vectors: np.ndarray | None = None,
    split: ColdStartSplit | None = None,
) -> TrainResult:
    """Train a model on a dataset's training users and evaluate it on held-out cold users.

    Parameters
    ----------
    config
        All settings (see :class:`TrainConfig`).
    dataset
        The data; it is split by ``config.scenario`` with ``config.seed``.
    out_dir
        Run directory to write (config, weights, ID maps, metrics); a
        checkpoint is written after every epoch and when stopped.
    on_progress
        Called with a :class:`ProgressEvent` after every step, validation and at the end.
    should_stop
        Checked before every step; when it returns true training stops
        cleanly, the last state is saved and ``TrainResult.stopped`` is true.
    text_vectors
        Item text vectors ``(n_items, dim)`` as encoded; computed from the
        config when ``use_text`` is on and they are not given. Either way they
        are PCA-whitened to ``text_components`` dimensions.
    split
        A ready-made cold-start split (e.g. a published protocol's) instead of
        the one the config describes; its ``train`` rows are what the model
        learns from and its ``support``/``query`` the held-out test.

    Returns
    -------
    TrainResult

    Raises
    ------
    TrainingError
        If a loss becomes NaN or infinite (the message names phase, epoch and term).
    """
    started = time.perf_counter()
    if config.cpu_threads > 0:
        torch.set_num_threads(config.cpu_threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    device = resolve_device(config.device)
    kind = loss_kind(config, dataset)
    if text_vectors is None:
        text_vectors = item_text_vectors(config, dataset)
    if text_vectors is not None and config.text_components:
        text_vectors = whiten(text_vectors, config.text_components)
    data = prepare_data(config, dataset, text_vectors=text_vectors, split=split)
    if len(data.train) == 0:
        raise TrainingError("no training interactions are left after the cold-start split; lower cold_fraction")
    shape = shape_for(
        dataset, data.user_encoder, data.item_encoder,
        text_dim=0 if text_vectors is None else int(text_vectors.shape[1]),
        global_mean=0.0 if kind == "bce" else float(data.train["rating"].mean()),
    )
    model = PreferenceModel(shape, config.model).to(device)
    model.mark_known(data.train["user"].to_numpy(), data.train["item"].to_numpy())
    context = data.context.to(device)
    anchor = _source_anchor(config, model, device)
    inner_lr = _inner_learning_rates(model, config, device)
    _source_inner_rates(config, inner_lr)
    trainable = list(model.parameters()) + (list(inner_lr.values()) if config.learn_inner_lr else [])
    optimizer = torch.optim.Adam(trainable, lr=config.lr)

    user_ratings = UserRatings(data.train, dataset.n_users)
    meta_users = np.flatnonzero(user_ratings.count() > config.support_size)
    warm = data.train[["user", "item", "rating"]].to_numpy()
    valid_tasks, valid_positions = (
        tasks_from_frames(data.valid_support, data.valid_query) if len(data.valid_query) else (None, None)
    )
    plan = _plan(config, n_meta_steps=_n_batches(len(meta_users), config.meta_batch_size), n_trans_steps=_n_batches(len(warm), config.batch_size))
    total_steps = sum(n for _, _, n in plan)
    clock = _TimeLeft(plan)
    scheduler = (
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda k: config.final_lr_fraction + (1 - config.final_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(k, total_steps) / max(total_steps, 1))))
        if config.final_lr_fraction < 1.0 else None
    )

    artifacts = RunArtifacts(
        config=config, shape=shape, users=dataset.users, items=dataset.items,
        user_encoder=data.user_encoder, item_encoder=data.item_encoder,
        dataset_name=dataset.name, fingerprint=dataset.fingerprint, loss=kind,
        rating_range=dataset.rating_range, context=data.context,
        seen=(data.split.train["user"].to_numpy(np.int64), data.split.train["item"].to_numpy(np.int64)),
        item_titles=tuple(dataset.item_table["title"].astype(str)) if "title" in dataset.item_table else (),
        cold_users=tuple(int(u) for u in data.split.cold_users), cold_items=tuple(int(i) for i in data.split.cold_items),
    )

    pending: list[ProgressEvent] = []  # step events, written to metrics.jsonl with the next validation

    def emit(event: ProgressEvent) -> None:
        if out_dir is not None:
            pending.append(event)
            if event.phase in ("validate", "done"):
                artifacts.append_metrics(Path(out_dir), pending)
                pending.clear()
        if on_progress is not None:
            on_progress(event)

    def l0_term() -> torch.Tensor:
        if config.lambda_l0 == 0:
            return torch.zeros((), device=device)
        params = {n: p for n, p in model.named_parameters() if n != "global_bias"}
        return config.lambda_l0 * l2_penalty(params, anchor)

    def meta_term(users: np.ndarray) -> torch.Tensor:
        tasks = sample_tasks(
            user_ratings, users, support_size=config.support_size, query_size=config.query_size, rng=rng,
            n_items=dataset.n_items, negatives=config.negatives if kind == "bce" else 0,
            min_support=config.min_support_size or None,
        ).to(device)
        return meta_loss(
            model, dict(model.named_parameters()), tasks, context,
            lr=inner_lr, first_order=config.first_order, loss=kind, query_pooling=config.query_pooling, **config.inner_loop(),
        )

    def trans_term(rows: np.ndarray) -> torch.Tensor:
        users = torch.as_tensor(rows[:, 0], dtype=torch.long, device=device)
        items = torch.as_tensor(rows[:, 1], dtype=torch.long, device=device)
        targets = torch.as_tensor(rows[:, 2], dtype=torch.float32, device=device)
        if kind == "bce":
            negatives = torch.as_tensor(rng.integers(0, dataset.n_items, size=len(rows) * config.negatives), device=device)
            users = torch.cat([users, users.repeat(config.negatives)])
            items = torch.cat([items, negatives])
            targets = torch.cat([targets, torch.zeros(len(negatives), device=device)])
        predictions = model(users, items.unsqueeze(1), context, warm=True).squeeze(1)
        return pointwise_loss(predictions, targets, kind)

    def validate() -> dict[str, float]:
        if valid_tasks is None:
            return {}
        if kind == "bce":  # every query row is a positive: rank it against the items the user never touched
            return {"valid_auc": catalogue_auc(model, inner_lr, config, data.valid_support, data.valid_query, context, kind)}
        predictions = predict_tasks(model, inner_lr, config, valid_tasks.to(device), context, kind)
        flat = predictions.reshape(-1)[valid_positions]
        return {f"valid_{k}": v for k, v in query_metrics(data.valid_query, flat, kind, artifacts.rating_range).items()}

    best = _BestState()
    # Without a meta phase nothing learns the prior variances (inner rates): pick them on the validation users.
    validated_prior = config.lambda_meta == 0 and valid_tasks is not None

    # Inner rates that no gradient trains (fixed, or chosen on validation) are not averaged.
    averaged_rates = inner_lr if config.learn_inner_lr and not validated_prior else {}
    average = _WeightAverage(model, averaged_rates, config.ema_decay) if config.ema_decay > 0 else None

    def end_epoch(epoch: int) -> None:
        with average.applied() if average is not None else contextlib.nullcontext():
            end_epoch_with_weights(epoch)

    def end_epoch_with_weights(epoch: int) -> None:
        metrics = _validated_prior(inner_lr, validate, kind) if validated_prior else validate()
        clock.validated()
        elapsed = time.perf_counter() - started
        emit(ProgressEvent("validate", epoch + 1, step, total_steps, {}, metrics, elapsed, clock.seconds_left()))
        best.offer(epoch + 1, metrics, model, inner_lr)
        if out_dir is not None:
            save_run(Path(out_dir), model, inner_lr, artifacts, final_metrics=metrics, stopped=False)

    step = 0
    stopped = False
    epochs_completed = 0
    last_epoch = -1
    for epoch, phase, n_steps in plan:
        if epoch != last_epoch and last_epoch >= 0:
            end_epoch(last_epoch)
            epochs_completed = last_epoch + 1
        last_epoch = epoch
        meta_order = rng.permutation(meta_users)
        warm_order = rng.permutation(len(warm))
        for b in range(n_steps):
            if should_stop is not None and should_stop():
                stopped = True
                break
            model.train()
            terms: dict[str, torch.Tensor] = {}
            if phase in ("meta", "joint"):
                users = _batch(meta_order, b, config.meta_batch_size)
                terms["meta"] = meta_term(users)
            if phase in ("transfer", "joint"):
                rows = warm[_batch(warm_order, b, config.batch_size)]
                terms["trans"] = trans_term(rows)
            terms["l0"] = l0_term()
            total = config.lambda_meta * terms.get("meta", 0.0) + config.lambda_trans * terms.get("trans", 0.0) + terms["l0"]
            for name, value in list(terms.items()) + [("total", total)]:
                if not torch.isfinite(value).all():
                    raise TrainingError(
                        f"the {name} loss became {float(value.detach())} in the {phase} phase, epoch {epoch + 1}, step {step + 1}; "
                        f"lower the learning rate (lr={config.lr}, inner_lr={config.inner_lr}) and train again"
                    )
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if config.learn_inner_lr:
                with torch.no_grad():
                    for value in inner_lr.values():
                        value.clamp_(min=0.0)
            if average is not None:
                average.update()
            step += 1
            clock.stepped(phase)
            elapsed = time.perf_counter() - started
            emit(ProgressEvent(
                phase=phase, epoch=epoch + 1, step=step, total_steps=total_steps,
                losses={k: float(v.detach()) for k, v in terms.items()} | {"total": float(total.detach())},
                metrics={}, elapsed=elapsed, eta=clock.seconds_left(),
            ))
        if stopped:
            break
    if not stopped and last_epoch >= 0:
        end_epoch(last_epoch)
        epochs_completed = last_epoch + 1
    if average is not None:
        average.apply()
    # A stopped run's last steps were never validated: it keeps its best validated epoch.
    if config.keep_best and best.epoch and (stopped or best.epoch != epochs_completed):
        best.restore(model, inner_lr)
        log.info("restored the weights of epoch %d (best validation)", best.epoch)
    final = validate()
    if best.epoch:
        final["best_epoch"] = float(best.epoch if config.keep_best else epochs_completed)
    if not stopped:  # a stopped run reports validation only, so that cancelling is quick
        final.update(evaluate_held_out(model, inner_lr, config, data, context, kind, artifacts.rating_range))
    elapsed = time.perf_counter() - started
    emit(ProgressEvent("done", epochs_completed, step, total_steps, {}, dict(final), elapsed, 0.0))
    if out_dir is not None:
        save_run(Path(out_dir), model, inner_lr, artifacts, final_metrics=final, stopped=stopped)
    log.info("fit finished in %.1fs (%s), final metrics %s", elapsed, "stopped" if stopped else "completed", final)
    return TrainResult(Path(out_dir) if out_dir else None, stopped, epochs_completed, final, str(device), model, artifacts)


class _TimeLeft:
    """Seconds left in a training plan, from the measured cost of a step of each phase and of a validation.

    A meta step (a batch of tasks, each adapted) costs several times a
    transfer step, so ``elapsed / steps × steps left`` over-estimates early in
    an alternating run; here each phase's remaining steps are priced at that
    phase's own mean step time (a phase not yet seen at the overall mean), plus
    one validation per epoch still to come.
    """

    def __init__(self, plan: list[tuple[int, str, int]], clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._last = clock()
        self._left: dict[str, int] = {}
        for _, phase, n in plan:
            self._left[phase] = self._left.get(phase, 0) + n
        self._seconds: dict[str, float] = {}
        self._steps: dict[str, int] = {}
        self._validations_left = len({epoch for epoch, _, _ in plan})
        self._validation_seconds = 0.0
        self._validations = 0

    def _lap(self) -> float:
        now = self._clock()
        lap, self._last = now - self._last, now
        return lap

    def stepped(self, phase: str) -> None:
        """One step of ``phase`` has finished."""
        self._seconds[phase] = self._seconds.get(phase, 0.0) + self._lap()
        self._steps[phase] = self._steps.get(phase, 0) + 1
        self._left[phase] = max(0, self._left.get(phase, 0) - 1)

    def validated(self) -> None:
        """An end-of-epoch validation has finished."""
        self._validation_seconds += self._lap()
        self._validations += 1
        self._validations_left = max(0, self._validations_left - 1)

    def seconds_left(self) -> float:
        """The estimate; 0 before anything was measured."""
        n = sum(self._steps.values())
        overall = sum(self._seconds.values()) / n if n else 0.0
        steps = sum(
            left * (self._seconds[phase] / self._steps[phase] if self._steps.get(phase) else overall)
            for phase, left in self._left.items()
        )
        validation = self._validation_seconds / self._validations if self._validations else 0.0
        return steps + self._validations_left * validation


class _WeightAverage:
    """An exponential moving average of a model's parameters and the inner rates, swapped in to validate and save."""

    def __init__(self, model: PreferenceModel, inner_lr: dict[str, torch.Tensor], decay: float) -> None:
        self.live = {**{"model." + n: p for n, p in model.named_parameters()}, **{"inner_lr." + n: v for n, v in inner_lr.items()}}
        self.mean = {n: v.detach().clone() for n, v in self.live.items()}
        self.decay = decay
        self.steps = 0

    def update(self) -> None:
        """Move the average towards the current weights (call after each optimiser step).

        The decay ramps up as ``(1 + n) / (10 + n)`` over the first steps, so a short
        run's average is not held back by the initial weights.
        """
        self.steps += 1
        decay = min(self.decay, (1.0 + self.steps) / (10.0 + self.steps))
        with torch.no_grad():
            for name, value in self.live.items():
                self.mean[name].lerp_(value.detach(), 1.0 - decay)

    def apply(self) -> None:
        """Overwrite the live weights with the average (training is over)."""
        with torch.no_grad():
            for name, value in self.live.items():
                value.copy_(self.mean[name])

    @contextlib.contextmanager
    def applied(self):
        """The average in place of the live weights inside the block; the live weights are back after it."""
        saved = {n: v.detach().clone() for n, v in self.live.items()}
        self.apply()
        try:
            yield
        finally:
            with torch.no_grad():
                for name, value in self.live.items():
                    value.copy_(saved[name])


class _BestState:
    """The weights of the epoch with the best validation score (MAE, or AUC on implicit data)."""

    def __init__(self) -> None:
        self.epoch = 0
        self.value = math.inf
        self.weights: dict[str, torch.Tensor] = {}
        self.rates: dict[str, torch.Tensor] = {}

    def offer(self, epoch: int, metrics: Mapping[str, float], model: PreferenceModel, inner_lr: dict[str, torch.Tensor]) -> None:
        if "valid_mae" in metrics:
            value = metrics["valid_mae"]
        elif "valid_auc" in metrics:
            value = -metrics["valid_auc"]
        else:
            return
        if value < self.value:
            self.epoch, self.value = epoch, value
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            self.rates = {k: v.detach().clone() for k, v in inner_lr.items()}

    def restore(self, model: PreferenceModel, inner_lr: dict[str, torch.Tensor]) -> None:
        model.load_state_dict(self.weights)
        with torch.no_grad():
            for name, value in inner_lr.items():
                value.copy_(self.rates[name])


def predict_tasks(model: PreferenceModel, inner_lr, config: TrainConfig, tasks: TaskBatch, context: FeatureContext, kind: str, *, chunk: int = 256) -> np.ndarray:
    """Adapt to each task's support set and score its query items -> ``(T, Q)`` numpy array."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(tasks), chunk):
            part = tasks.select(slice(start, start + chunk))
            adapted = adapt(
                model, dict(model.named_parameters()), part.support(), context, lr=inner_lr, loss=kind, **config.inner_loop(),
            )
            out.append(score(model, adapted, part.query(), context).cpu().numpy())
    return np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)


def query_metrics(query: pd.DataFrame, predictions: np.ndarray, kind: str, rating_range: tuple[float, float]) -> dict[str, float]:
    """MAE, RMSE and nDCG@3 (explicit) or AUC (implicit) of predictions aligned with ``query`` rows."""
    from metarec_core import metrics

    users = query["user"].to_numpy()
    truth = query["rating"].to_numpy(np.float64)
    if kind == "bce":
        return {"auc": metrics.mean_auc(users, truth, predictions)} if len(np.unique(truth)) > 1 else {}
    clipped = np.clip(predictions, *rating_range)
    return {
        "mae": metrics.mae(truth, clipped),
        "rmse": metrics.rmse(truth, clipped),
        "ndcg@3": metrics.mean_ndcg_at_k(users, truth, clipped, 3),
    }


def evaluate_held_out(
    model: PreferenceModel, inner_lr, config: TrainConfig, data: TrainingData, context: FeatureContext, kind: str,
    rating_range: tuple[float, float],
) -> dict[str, float]:
    """Test metrics on the split's held-out tasks (adapt on support, score query).

    Users are warm (their ID parameters used) in the warm and item-cold
    scenarios; predictions are clipped to the training ``rating_range``.
    """
    query = data.split.query
    if len(query) == 0:
        return {}
    warm = config.scenario in ("warm", "item-cold")
    if kind == "bce":
        return {"test_auc": catalogue_auc(model, inner_lr, config, data.split.support, query, context, kind, warm=warm, seen=data.split.train)}
    tasks, positions = tasks_from_frames(data.split.support, query, warm=warm)
    predictions = predict_tasks(model, inner_lr, config, tasks.to(context.items.categorical.device), context, kind).reshape(-1)[positions]
    return {f"test_{k}": v for k, v in query_metrics(query, predictions, kind, rating_range).items()}


def catalogue_auc(
    model: PreferenceModel, inner_lr, config: TrainConfig, support: pd.DataFrame, query: pd.DataFrame,
    context: FeatureContext, kind: str, *, warm: bool = False, seen: pd.DataFrame | None = None, chunk: int = 64,
) -> float:
    """Mean per-user AUC of implicit feedback: each user's query items against every item they never interacted with.

    On implicit data every query row is a positive, so an AUC within the query
    is undefined; each user is adapted on their support rows and the whole
    catalogue is scored. Support items, and the user's rows in ``seen`` (their
    training interactions in the warm and item-cold scenarios), are left out
    of the ranking. NaN when no user has both a positive and a negative.
    """
    from metarec_core import metrics

    users = np.unique(query["user"].to_numpy(np.int64))
    n_items = int(model.shape.n_items)
    values: list[float] = []
    device = context.items.categorical.device
    for start in range(0, len(users), chunk):
        part = users[start:start + chunk]
        tasks, _ = tasks_from_frames(support[support["user"].isin(part)], catalogue_query(part, n_items), users=part, warm=warm)
        scores = predict_tasks(model, inner_lr, config, tasks.to(device), context, kind).reshape(len(part), n_items)
        for t, user in enumerate(part):
            labels = np.zeros(n_items)
            labels[query.loc[query["user"] == user, "item"].to_numpy(np.int64)] = 1.0
            keep = np.ones(n_items, dtype=bool)
            keep[support.loc[support["user"] == user, "item"].to_numpy(np.int64)] = False
            if seen is not None:
                keep[seen.loc[seen["user"] == user, "item"].to_numpy(np.int64)] = False
            value = metrics.auc(labels[keep], scores[t, keep])
            if np.isfinite(value):
                values.append(float(value))
    return float(np.mean(values)) if values else float("nan")


def _inner_learning_rates(model: PreferenceModel, config: TrainConfig, device: torch.device) -> dict[str, torch.Tensor]:
    names = model.scope_names(config.adapt_scope)
    params = dict(model.named_parameters())
    return {
        name: torch.full_like(params[name], config.inner_lr, device=device).requires_grad_(config.learn_inner_lr)
        for name in names
    }


#: Candidate inner rates (Newton: prior variances; gradient: step sizes) tried on the
#: validation users when no meta phase learns them (``lambda_meta = 0``).
PRIOR_GRID = (0.01, 0.03, 0.1, 0.3, 1.0)


def _validated_prior(inner_lr: dict[str, torch.Tensor], validate, kind: str) -> dict[str, float]:
    """Set every inner rate to the value of :data:`PRIOR_GRID` with the best validation score; return its metrics.

    With ``lambda_meta = 0`` (transfer only) no meta-gradient learns how far a
    new user should move from the start, so that one number is chosen like the
    fold-in penalty of the ALS baseline: on held-out training users (K-shot
    MAE; AUC on implicit data).
    """
    key, sign = ("valid_auc", -1.0) if kind == "bce" else ("valid_mae", 1.0)
    before = {name: rate.detach().clone() for name, rate in inner_lr.items()}
    best: tuple[float, float, dict[str, float]] | None = None
    for value in PRIOR_GRID:
        with torch.no_grad():
            for rate in inner_lr.values():
                rate.fill_(value)
        metrics = validate()
        score = metrics.get(key)
        if score is None:  # the validation users give no score (e.g. one class only): nothing to choose by
            break
        if math.isfinite(score) and (best is None or sign * score < best[0]):
            best = (sign * score, value, metrics)
    with torch.no_grad():
        for name, rate in inner_lr.items():
            if best is None:
                rate.copy_(before[name])
            else:
                rate.fill_(best[1])
    if best is None:
        log.warning("no meta phase and no usable validation score: the inner rates stay as they were")
        return validate()
    log.info("no meta phase: inner rates set to %g on the validation users", best[1])
    return best[2]


def _source_anchor(config: TrainConfig, model: PreferenceModel, device: torch.device) -> dict[str, torch.Tensor] | None:
    """Weights of the source run (the L2-SP anchor), also used to initialise the model.

    Users known to the source keep their learned ID parameters (returning
    users of a new domain). Tensors whose shape differs (another index space)
    are left out of the anchor, fall back to plain L2, and are logged.
    """
    if not config.source_run:
        return None
    from metarec_core.artifacts import load_weights

    weights = load_weights(Path(config.source_run))
    own = dict(model.named_parameters())
    anchor = {n: w.to(device) for n, w in weights.items() if n in own and own[n].shape == w.shape}
    skipped = sorted(n for n in own if n not in anchor)
    with torch.no_grad():
        for name, value in anchor.items():
            own[name].copy_(value)
        known = weights.get("user_known")
        if known is not None and known.shape == model.user_known.shape:
            model.user_known |= known.to(device)
    log.info("initialised %d tensors from source run %s", len(anchor), config.source_run)
    if skipped:
        log.warning("source run %s: %d tensor(s) do not fit this model and get plain L2: %s", config.source_run, len(skipped), ", ".join(skipped))
    return anchor


def _source_inner_rates(config: TrainConfig, inner_lr: dict[str, torch.Tensor]) -> None:
    """Start learned inner learning rates from the source run's, where they fit.

    A source run with another inner solver is skipped (its rates are step sizes
    where this run needs prior variances, or the other way round).
    """
    if not config.source_run:
        return
    from safetensors.torch import load_file

    from metarec_core.artifacts import CONFIG_FILE, INNER_LR_PREFIX, WEIGHTS_FILE, saved_config_values

    try:
        source_solver = saved_config_values(json.loads((Path(config.source_run) / CONFIG_FILE).read_text())).get("inner_solver", config.inner_solver)
    except (OSError, ValueError):
        source_solver = config.inner_solver
    if source_solver != config.inner_solver:
        log.warning(
            "source run %s adapts with the %s solver and this run with %s: its inner rates mean something else and are not reused",
            config.source_run, source_solver, config.inner_solver,
        )
        return
    saved = load_file(str(Path(config.source_run) / WEIGHTS_FILE))
    with torch.no_grad():
        for name, value in inner_lr.items():
            source = saved.get(INNER_LR_PREFIX + name)
            if source is not None and source.shape == value.shape:
                value.copy_(source.to(value.device))


def _plan(config: TrainConfig, *, n_meta_steps: int, n_trans_steps: int) -> list[tuple[int, str, int]]:
    """The schedule as ``(epoch, phase, steps)`` blocks."""
    meta_on = config.lambda_meta > 0 and n_meta_steps > 0
    trans_on = config.lambda_trans > 0 and n_trans_steps > 0
    plan: list[tuple[int, str, int]] = []
    if config.schedule == "alternating":
        for e in range(config.num_epochs):
            plan += [(e, "meta", n_meta_steps)] * (config.meta_epochs if meta_on else 0)
            plan += [(e, "transfer", n_trans_steps)] * (config.trans_epochs if trans_on else 0)
    elif config.schedule == "sequential":
        plan += [(e, "transfer", n_trans_steps) for e in range(config.num_epochs) for _ in range(config.trans_epochs if trans_on else 0)]
        offset = config.num_epochs if plan else 0
        plan += [(offset + e, "meta", n_meta_steps) for e in range(config.num_epochs) for _ in range(config.meta_epochs if meta_on else 0)]
    else:
        passes = max(config.meta_epochs, config.trans_epochs)
        if meta_on and trans_on:
            plan += [(e, "joint", n_meta_steps) for e in range(config.num_epochs) for _ in range(passes)]
        elif meta_on:
            plan += [(e, "meta", n_meta_steps) for e in range(config.num_epochs) for _ in range(passes)]
        elif trans_on:
            plan += [(e, "transfer", n_trans_steps) for e in range(config.num_epochs) for _ in range(passes)]
    return plan


def _n_batches(n: int, size: int) -> int:
    return (n + size - 1) // size if n else 0


def _batch(order: np.ndarray, b: int, size: int) -> np.ndarray:
    n = len(order)
    if n == 0:
        return order
    start = (b * size) % n
    idx = order[start : start + size]
    if len(idx) < min(size, n):
        idx = np.concatenate([idx, order[: min(size, n) - len(idx)]])
    return idx


def config_summary(config: TrainConfig) -> dict:
    """The config as a JSON-ready dict (for logs and the run store)."""
    return config_to_dict(config)
