"""Training: one ``fit`` that optimises ``L_total = λ1·L_meta + λ2·L_trans + L0`` on a schedule of phases."""
from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from metarec_core.artifacts import RunArtifacts, save_run
from metarec_core.averaging import BestEpoch, WeightAverage
from metarec_core.dataset import Dataset
from metarec_core.device import cpu_threads, flush_denormals, resolve_device
from metarec_core.errors import TrainingError
from metarec_core.footprint import check_fits, data_shape, estimate
from metarec_core.inner_rates import calibrated_rates, initial_inner_rates, validated_prior
from metarec_core.losses import l2_penalty, occurrence_penalty, pointwise_loss
from metarec_core.meta import meta_loss
from metarec_core.models import PreferenceModel, shape_for
from metarec_core.progress import ProgressEvent, TimeLeft
from metarec_core.row_adam import RowAdam, row_gradient
from metarec_core.schedule import batch, n_batches, plan
from metarec_core.scoring import catalogue_auc, evaluate_held_out, predict_tasks, query_metrics
from metarec_core.splits import ColdStartSplit
from metarec_core.tasks import TaskBatch, UserRatings, sample_tasks, tasks_from_frames
from metarec_core.titles import dataset_titles, has_item_names
from metarec_core.train_config import TrainConfig, resolve_scenario
from metarec_core.training_data import TrainingData, item_text_vectors, prepare_data, whiten
from metarec_core.transfer import source_anchor, source_inner_rates

log = logging.getLogger(__name__)

#: ID embedding tables and the batch side (``users``/``items``) whose rows they hold: with
#: ``lambda_id > 0`` they get the per-occurrence penalty instead of the plain L2 of ``L0``.
ID_TABLES = {"item_factor.weight": "items", "item_bias.weight": "items", "user_factor.weight": "users", "user_bias.weight": "users"}

#: Step events are written to ``metrics.jsonl`` at least this often (seconds), and at every validation.
METRICS_FLUSH_SECONDS = 2.0


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
        All settings (see :class:`~metarec_core.train_config.TrainConfig`).
    dataset
        The data; it is split by ``config.scenario`` with ``config.seed``.
    out_dir
        Run directory to write (config, weights, ID maps, metrics); a
        checkpoint is written after every epoch and when stopped.
    on_progress
        Called with a :class:`~metarec_core.progress.ProgressEvent` after every step, validation and at the end.
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

    Notes
    -----
    Every random draw comes from ``config.seed``: numpy draws from a generator
    of its own, and torch's global generator is forked for the run, so the
    caller's torch random state is the same after ``fit`` as before.
    """
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with cpu_threads(config.cpu_threads), flush_denormals(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(config.seed)
        return Trainer(config, dataset, out_dir=out_dir, text_vectors=text_vectors, split=split).run(
            on_progress=on_progress, should_stop=should_stop,
        )


class Trainer:
    """One training run: the model, its inner rates, the optimiser and the data, built from a config.

    ``fit`` is ``Trainer(config, dataset).run()``; the pieces (``meta_term``,
    ``transfer_term``, ``validate``) are methods so each can be read and
    tested on its own.
    """

    def __init__(
        self,
        config: TrainConfig,
        dataset: Dataset,
        *,
        out_dir: str | Path | None = None,
        text_vectors: np.ndarray | None = None,
        split: ColdStartSplit | None = None,
    ) -> None:
        self.started = time.perf_counter()
        # scenario "auto" becomes the data's scenario here, so everything below (and config.json) sees what was picked.
        self.scenario = resolve_scenario(config, dataset, split)
        config = self.config = self.scenario.config
        self.dataset = dataset
        self.out_dir = Path(out_dir) if out_dir is not None else None
        self.rng = np.random.default_rng(config.seed)
        self.device = resolve_device(config.device)
        # Refuse a run that would not fit the machine before anything big is allocated.
        check_fits(estimate(config, data_shape(dataset, config), device=self.device.type))
        self.kind = config.loss_for(dataset.implicit)
        if text_vectors is None:
            text_vectors = item_text_vectors(config, dataset)
        if text_vectors is not None and config.text_components:
            text_vectors = whiten(text_vectors, config.text_components)
        self.data: TrainingData = prepare_data(config, dataset, text_vectors=text_vectors, split=split)
        if len(self.data.train) == 0:
            raise TrainingError("no training interactions are left after the cold-start split; lower cold_fraction")
        shape = shape_for(
            dataset, self.data.user_encoder, self.data.item_encoder,
            text_dim=0 if text_vectors is None else int(text_vectors.shape[1]),
            global_mean=0.0 if self.kind == "bce" else float(self.data.train["rating"].mean()),
        )
        self.model = PreferenceModel(shape, config.model).to(self.device)
        self.model.mark_known(self.data.train["user"].to_numpy(), self.data.train["item"].to_numpy())
        self.context = self.data.context.to(self.device)
        self.anchor = source_anchor(config, self.model, self.device)
        self.inner_lr = initial_inner_rates(self.model, config, self.device)
        source_inner_rates(config, self.inner_lr)
        # With table_updates "rows" the ID tables get a row-wise Adam of their own and every other tensor the fused one.
        self.row_tables = tuple(ID_TABLES) if config.table_updates == "rows" else ()
        own = self.params = dict(self.model.named_parameters())
        trainable = [p for n, p in own.items() if n not in self.row_tables] + (list(self.inner_lr.values()) if config.learn_inner_lr else [])
        self.optimizer = _adam(trainable, config.lr, self.device)
        self.row_optimizer = RowAdam([own[n] for n in self.row_tables], lr=config.lr, coast=True) if self.row_tables else None
        # Table lookups give sparse gradients (the rows looked up), not a zero-filled copy of the table per use.
        _sparse_tables(self.model, tuple(ID_TABLES), True)
        self.slots = {side: torch.full((own[n].shape[0],), -1, dtype=torch.long, device=self.device) for n, side in ID_TABLES.items()}
        # Per ID table (rows mode, when it is in L0): the last step whose L0 share each row has been charged.
        self.l0_paid = {
            n: torch.zeros(own[n].shape[0], dtype=torch.long, device=self.device)
            for n in self.row_tables if config.lambda_id == 0
        }

        self.user_ratings = UserRatings(self.data.train, dataset.n_users)
        self.meta_users = np.flatnonzero(self.user_ratings.count() > config.support_size)
        # Warm rows live on the device once; each step indexes them there (no per-step host copies).
        train = self.data.train
        self.warm_users = torch.tensor(train["user"].to_numpy(np.int64), device=self.device)
        self.warm_items = torch.tensor(train["item"].to_numpy(np.int64), device=self.device)
        self.warm_ratings = torch.tensor(train["rating"].to_numpy(np.float32), device=self.device)
        self.valid_tasks, self.valid_positions = (
            # Item-cold validation users are known users (their ID parameters count), as in the item-cold test.
            tasks_from_frames(self.data.valid_support, self.data.valid_query, warm=config.scenario == "item-cold")
            if len(self.data.valid_query) else (None, None)
        )
        # L0's weight per step: all of lambda_l0, or (l0_unit "pass") its share of one pass of the warm ratings.
        self.l0_weight = config.lambda_l0 * (
            min(1.0, config.batch_size / max(len(self.warm_users), 1)) if config.l0_unit == "pass" else 1.0
        )
        self.plan = plan(
            config,
            n_meta_steps=n_batches(len(self.meta_users), config.meta_batch_size),
            n_trans_steps=n_batches(len(self.warm_users), config.batch_size),
        )
        self.total_steps = sum(n for _, _, n in self.plan)
        self.clock = TimeLeft(self.plan)
        self.schedulers = self._lr_schedules()
        self.artifacts = self._artifacts(shape)
        self.best = BestEpoch()
        self.stages = _stages(self.plan)
        self.skipped: set[int] = set()  # epochs left out by early stopping
        self.stage_start = 1  # first epoch (1-based) of the current stage
        # Without a meta phase nothing learns the prior variances (inner rates): pick them on the validation users.
        self.validated_prior = config.lambda_meta == 0 and self.valid_tasks is not None
        # Inner rates that no gradient trains (fixed, or chosen on validation) are not averaged.
        averaged_rates = self.inner_lr if config.learn_inner_lr and not self.validated_prior else {}
        self.average = WeightAverage(self.model, averaged_rates, config.ema_decay, rows=self.row_tables) if config.ema_decay > 0 else None
        self.step = 0
        self._pending: list[ProgressEvent] = []
        self._flushed = time.perf_counter()
        self._on_progress: Callable[[ProgressEvent], None] | None = None

    # ------------------------------------------------------------------ set-up
    def _lr_schedules(self) -> list[torch.optim.lr_scheduler.LambdaLR]:
        """Cosine decay of the outer learning rate to ``final_lr_fraction`` of ``lr`` by the last step (one per optimiser)."""
        fraction, total = self.config.final_lr_fraction, self.total_steps
        if fraction >= 1.0:
            return []
        optimizers = [self.optimizer] + ([self.row_optimizer] if self.row_optimizer is not None else [])
        return [
            torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda k: fraction + (1 - fraction) * 0.5 * (1 + math.cos(math.pi * min(k, total) / max(total, 1))),
            )
            for optimizer in optimizers
        ]

    def _artifacts(self, shape) -> RunArtifacts:
        data, dataset = self.data, self.dataset
        return RunArtifacts(
            config=self.config, shape=shape, users=dataset.users, items=dataset.items,
            user_encoder=data.user_encoder, item_encoder=data.item_encoder,
            dataset_name=dataset.name, fingerprint=dataset.fingerprint, loss=self.kind,
            rating_range=dataset.rating_range, context=data.context,
            seen=(data.split.train["user"].to_numpy(np.int64), data.split.train["item"].to_numpy(np.int64)),
            item_titles=tuple(dataset_titles(dataset)) if has_item_names(dataset) else (),
            cold_users=tuple(int(u) for u in data.split.cold_users), cold_items=tuple(int(i) for i in data.split.cold_items),
        )

    # ------------------------------------------------------------------ loss terms
    def l0_term(self, touched: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """``L0``: L2-SP towards the source run's weights, or plain L2 (the global bias is not penalised).

        With ``table_updates`` "rows" the ID tables' part covers only the rows in
        ``touched`` (table name → unique row indices), each weighted by the steps
        since it was last charged (see :meth:`charge_l0`): a row that is not looked
        up does not change, so charging its per-step prior when it is next looked
        up adds the same sum over steps as charging it at every step. That part is
        returned as a value only; its gradient goes straight to those rows (see
        :meth:`row_updates`). With "dense" the tables' part covers every row, also
        as a value only (see :meth:`dense_table_gradients`).
        """
        if self.l0_weight == 0:
            return torch.zeros((), device=self.device)
        own = self.params
        total = self.l0_weight * l2_penalty({n: p for n, p in own.items() if n != "global_bias" and n not in ID_TABLES}, self.anchor)
        if self.config.lambda_id > 0:
            return total
        tables = torch.zeros((), device=self.device)  # a value only: its gradient is added by hand
        with torch.no_grad():
            if self.row_tables:
                for name, idx in (touched or {}).items():
                    if name in self.l0_paid and idx.numel():
                        steps, offset = self._l0_rows(name, idx)
                        tables += (steps * offset.pow(2).sum(dim=1)).sum()
            else:
                for name in ID_TABLES:
                    tables += self._l0_offset(name).pow(2).sum()
        return total + self.l0_weight * tables

    def _l0_offset(self, name: str) -> torch.Tensor:
        """ID table ``name`` minus its anchor (L2-SP), or the table itself: what its L0 share penalises."""
        table = self.params[name].detach()
        ref = self.anchor.get(name) if self.anchor is not None else None
        return table - ref if ref is not None and ref.shape == table.shape else table

    def dense_table_gradients(self) -> None:
        """Dense table updates: each ID table's gradient as one dense tensor, its L0 share's ``2·w·(θ − θ_source)`` plus the rows looked up.

        The lookups leave sparse gradients; L0's part is added here rather than
        through autograd, so a step makes one table-sized pass instead of one per
        lookup and per term. A table with neither (no lookup, no L0) keeps no gradient.
        """
        with_l0 = self.l0_weight > 0 and self.config.lambda_id == 0
        with torch.no_grad():
            for name in ID_TABLES:
                table = self.params[name]
                grad = table.grad
                if not with_l0 and (grad is None or not grad.is_sparse):
                    continue
                dense = self._l0_offset(name).mul(2.0 * self.l0_weight) if with_l0 else torch.zeros_like(table)
                if grad is not None:
                    if grad.is_sparse:
                        dense.index_add_(0, grad._indices()[0], grad._values())
                    else:
                        dense.add_(grad)
                table.grad = dense

    def _l0_rows(self, name: str, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For rows ``idx`` of ID table ``name``: the steps of L0 each is owed, and its offset from the anchor (or from 0)."""
        table = self.params[name].detach()
        offset = table.index_select(0, idx)
        ref = self.anchor.get(name) if self.anchor is not None else None
        if ref is not None and ref.shape == table.shape:
            offset = offset - ref.index_select(0, idx)
        return (self.step + 1 - self.l0_paid[name].index_select(0, idx)).to(table.dtype), offset

    def row_updates(self, touched: dict[str, torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor] | None]:
        """For each ID table (rows mode): its touched rows and their gradient, the loss's plus their L0 share's."""
        own = self.params
        updates: list[tuple[torch.Tensor, torch.Tensor] | None] = []
        for name in self.row_tables:
            idx = touched.get(name)
            if idx is None or idx.numel() == 0:
                updates.append(None)
                continue
            grad = row_gradient(own[name], idx, self.slots[ID_TABLES[name]])
            if name in self.l0_paid and self.l0_weight:
                steps, offset = self._l0_rows(name, idx)
                grad = grad + (2.0 * self.l0_weight) * steps.reshape((-1,) + (1,) * (offset.dim() - 1)) * offset
            updates.append((idx, grad))
        return updates

    def charge_l0(self, touched: dict[str, torch.Tensor]) -> None:
        """Record that the rows in ``touched`` have been charged their L0 share up to this step."""
        for name, idx in touched.items():
            if name in self.l0_paid and idx.numel():
                self.l0_paid[name].index_fill_(0, idx, self.step + 1)

    def touched_rows(self, items: list[torch.Tensor], users: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """The unique rows of each ID table a step looks up, from the item and user indices of its batch ("rows" mode)."""
        if not self.row_tables:
            return {}
        config = self.config.model
        rows: dict[str, torch.Tensor] = {}
        for side, indices, used in (("items", items, config.use_item_ids), ("users", users, config.use_user_ids)):
            unique = torch.unique(torch.cat(indices)) if used and indices else None
            for name, table_side in ID_TABLES.items():
                if table_side == side and unique is not None:
                    rows[name] = unique
        return rows

    def id_term(self, items: torch.Tensor, users: torch.Tensor | None = None) -> torch.Tensor:
        """Per-occurrence L2 of the ID rows a batch touches, times ``lambda_id`` (see ``occurrence_penalty``).

        A warm batch touches its users' and items' rows; a meta batch only its
        tasks' items (its users are treated as new and use no ID rows).
        """
        own = dict(self.model.named_parameters())
        index = {"users": users, "items": items}
        tables = {name: (own[name], index[side]) for name, side in ID_TABLES.items() if index[side] is not None}
        return self.config.lambda_id * occurrence_penalty(tables, self.anchor)

    def meta_tasks(self, users: np.ndarray) -> TaskBatch:
        """A support and a query set for each of a batch of training users, on the device."""
        config = self.config
        return sample_tasks(
            self.user_ratings, users, support_size=config.support_size, query_size=config.query_size, rng=self.rng,
            n_items=self.dataset.n_items, negatives=config.negatives if self.kind == "bce" else 0,
            min_support=config.min_support_size or None,
        ).to(self.device)

    def meta_term(self, tasks: TaskBatch) -> torch.Tensor:
        """``L_meta`` on a batch of training users treated as new: adapt on each support set, loss on the query sets."""
        config = self.config
        return meta_loss(
            self.model, dict(self.model.named_parameters()), tasks, self.context,
            lr=self.inner_lr, first_order=config.first_order, loss=self.kind, query_pooling=config.query_pooling,
            huber_delta=config.huber_delta, **config.inner_loop(),
        )

    def transfer_term(self, rows: torch.Tensor, looked_up: tuple[list[torch.Tensor], list[torch.Tensor]] | None = None) -> torch.Tensor:
        """``L_trans`` on a batch of warm rows (indices into the training rows; BCE with sampled negatives on implicit data).

        ``looked_up``, when given, gets the batch's item and user indices appended (the ID rows it reads).
        """
        device, negatives = self.device, self.config.negatives
        users, items, targets = self.warm_users[rows], self.warm_items[rows], self.warm_ratings[rows]
        if self.kind == "bce":
            sampled = torch.as_tensor(self.rng.integers(0, self.dataset.n_items, size=len(rows) * negatives), device=device)
            users = torch.cat([users, users.repeat(negatives)])
            items = torch.cat([items, sampled])
            targets = torch.cat([targets, torch.zeros(len(sampled), device=device)])
        if looked_up is not None:
            looked_up[0].append(items)
            looked_up[1].append(users)
        predictions = self.model(users, items.unsqueeze(1), self.context, warm=True).squeeze(1)
        return pointwise_loss(predictions, targets, self.kind, huber_delta=self.config.huber_delta)

    # ------------------------------------------------------------------ validation
    def validate(self) -> dict[str, float]:
        """K-shot metrics of the validation users (``valid_mae`` …; ``valid_auc`` on implicit data)."""
        if self.valid_tasks is None:
            return {}
        data, config = self.data, self.config
        if self.kind == "bce":  # every query row is a positive: rank it against the items the user never touched
            return {"valid_auc": catalogue_auc(self.model, self.inner_lr, config, data.valid_support, data.valid_query, self.context, self.kind)}
        predictions = predict_tasks(self.model, self.inner_lr, config, self.valid_tasks.to(self.device), self.context, self.kind)
        flat = predictions.reshape(-1)[self.valid_positions]
        return {f"valid_{k}": v for k, v in query_metrics(data.valid_query, flat, self.kind, self.artifacts.rating_range).items()}

    def end_epoch(self, epoch: int) -> None:
        """Validate (with the averaged weights when averaging), remember the best epoch, write a checkpoint."""
        with self.average.applied() if self.average is not None else contextlib.nullcontext():
            metrics = validated_prior(self.inner_lr, self.validate, self.kind) if self.validated_prior else self.validate()
            self.clock.validated()
            self.best.offer(epoch + 1, metrics, self.model, self.inner_lr)
            self._stop_stage_early(epoch)
            self.emit(ProgressEvent("validate", epoch + 1, self.step, self.total_steps, {}, metrics, self.elapsed(), self.clock.seconds_left()))
            if self.out_dir is not None:
                save_run(self.out_dir, self.model, self.inner_lr, self.artifacts, final_metrics=metrics, stopped=False)

    # ------------------------------------------------------------------ the loop
    def train_step(self, phase: str, epoch: int, b: int, meta_order: np.ndarray, warm_order: torch.Tensor) -> None:
        """One optimiser step of ``phase`` on batch ``b``; raises :class:`TrainingError` on a non-finite loss."""
        config = self.config
        self.model.train()
        terms: dict[str, torch.Tensor] = {}
        looked_up: tuple[list[torch.Tensor], list[torch.Tensor]] = ([], [])  # item and user indices the batch reads
        if phase in ("meta", "joint"):
            tasks = self.meta_tasks(batch(meta_order, b, config.meta_batch_size))
            try:
                terms["meta"] = self.meta_term(tasks)
            except torch.linalg.LinAlgError as exc:
                raise TrainingError(
                    f"the inner loop's Newton step could not be solved in the {phase} phase, epoch {epoch + 1}, step {self.step + 1} "
                    f"({exc}); lower inner_lr (now {config.inner_lr}) or use inner_solver 'gradient', and train again"
                ) from exc
            seen = torch.cat([tasks.support_items[tasks.support_mask], tasks.query_items[tasks.query_mask]])
            looked_up[0].append(seen)
            if tasks.warm:
                looked_up[1].append(tasks.users)
            if config.lambda_id > 0:
                terms["id"] = config.lambda_meta * self.id_term(seen)
        if phase in ("transfer", "joint"):
            rows = batch(warm_order, b, config.batch_size)
            terms["trans"] = self.transfer_term(rows, looked_up)
            if config.lambda_id > 0:
                warm_id = config.lambda_trans * self.id_term(self.warm_items[rows], self.warm_users[rows])
                terms["id"] = terms["id"] + warm_id if "id" in terms else warm_id
        touched = self.touched_rows(*looked_up)
        terms["l0"] = self.l0_term(touched)
        total = config.lambda_meta * terms.get("meta", 0.0) + config.lambda_trans * terms.get("trans", 0.0) + terms["l0"] + terms.get("id", 0.0)
        terms["total"] = total
        # One device-to-host copy per step carries every term (the finiteness check and the progress event).
        losses = dict(zip(terms, torch.stack([v.detach().float().reshape(()) for v in terms.values()]).tolist()))
        for name, value in losses.items():
            if not math.isfinite(value):
                raise TrainingError(
                    f"the {name} loss became {value} in the {phase} phase, epoch {epoch + 1}, step {self.step + 1}; "
                    f"lower the learning rate (lr={config.lr}, inner_lr={config.inner_lr}) and train again"
                )
        self.optimizer.zero_grad(set_to_none=True)
        if self.row_optimizer is not None:
            self.row_optimizer.zero_grad(set_to_none=True)
        total.backward()
        if not self.row_tables:
            self.dense_table_gradients()
        if self.average is not None:
            self.average.catch_up(touched)  # before the rows change
        self.optimizer.step()
        if self.row_optimizer is not None:
            self.row_optimizer.step(self.row_updates(touched))
            self.row_optimizer.zero_grad(set_to_none=True)
        self.charge_l0(touched)
        for scheduler in self.schedulers:
            scheduler.step()
        if config.learn_inner_lr:
            with torch.no_grad():
                for value in self.inner_lr.values():
                    value.clamp_(min=0.0)
        if self.average is not None:
            self.average.update(touched)
        self.step += 1
        self.clock.stepped(phase)
        self.emit(ProgressEvent(
            phase=phase, epoch=epoch + 1, step=self.step, total_steps=self.total_steps,
            losses=losses,
            metrics={}, elapsed=self.elapsed(), eta=self.clock.seconds_left(),
        ))

    def run(
        self,
        *,
        on_progress: Callable[[ProgressEvent], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> TrainResult:
        """Run the whole plan, keep the chosen weights, test on the held-out users and save (see :func:`fit`)."""
        self._on_progress = on_progress
        config = self.config
        stopped = False
        epochs_completed = 0
        for epoch, blocks in _by_epoch(self.plan):
            if epoch in self.skipped:
                continue
            if epochs_completed and self.stages[epoch] != self.stages[epochs_completed - 1]:
                self.stage_start = epoch + 1
            for phase, n_steps in blocks:
                meta_order = self.rng.permutation(self.meta_users)
                warm_order = torch.as_tensor(self.rng.permutation(len(self.warm_users)), device=self.device)
                for b in range(n_steps):
                    if should_stop is not None and should_stop():
                        stopped = True
                        break
                    self.train_step(phase, epoch, b, meta_order, warm_order)
                if stopped:
                    break
            if stopped:
                break
            self.end_epoch(epoch)
            epochs_completed = epoch + 1
        if self.average is not None:
            self.average.apply()
        _sparse_tables(self.model, tuple(ID_TABLES), False)  # the returned model's tables give dense gradients again
        # A stopped run's last steps were never validated: it keeps its best validated epoch.
        if config.keep_best and self.best.epoch and (stopped or self.best.epoch != epochs_completed):
            self.best.restore(self.model, self.inner_lr)
            log.info("restored the weights of epoch %d (best validation)", self.best.epoch)
        final = self.validate()
        if config.learn_inner_lr and config.lambda_meta > 0 and self.valid_tasks is not None:  # meta-learned rates, calibrated
            final = calibrated_rates(self.inner_lr, self.validate, self.kind, before=final)
        if self.best.epoch:
            final["best_epoch"] = float(self.best.epoch if config.keep_best else epochs_completed)
        if not stopped:  # a stopped run reports validation only, so that cancelling is quick
            final.update(evaluate_held_out(
                self.model, self.inner_lr, config, self.data, self.context, self.kind, self.artifacts.rating_range,
            ))
        elapsed = self.elapsed()
        self.emit(ProgressEvent("done", epochs_completed, self.step, self.total_steps, {}, dict(final), elapsed, 0.0))
        if self.out_dir is not None:
            save_run(self.out_dir, self.model, self.inner_lr, self.artifacts, final_metrics=final, stopped=stopped)
        log.info("fit finished in %.1fs (%s), final metrics %s", elapsed, "stopped" if stopped else "completed", final)
        return TrainResult(self.out_dir, stopped, epochs_completed, final, str(self.device), self.model, self.artifacts)

    def _stop_stage_early(self, epoch: int) -> None:
        """Early stopping: after ``patience`` epochs of this stage in a row with no better validation, skip the rest of the stage."""
        patience = self.config.patience
        if patience <= 0 or self.valid_tasks is None or not self.best.epoch:
            return
        if epoch + 1 - max(self.best.epoch, self.stage_start - 1) < patience:
            return
        dropped = {e for e, stage in self.stages.items() if e > epoch and stage == self.stages[epoch] and e not in self.skipped}
        if dropped:
            self.skipped |= dropped
            self.clock.skipped([block for block in self.plan if block[0] in dropped])
            log.info("validation has not improved for %d epochs: %d epoch(s) of this stage are skipped", patience, len(dropped))

    # ------------------------------------------------------------------ reporting
    def elapsed(self) -> float:
        """Seconds since the run was set up."""
        return time.perf_counter() - self.started

    def emit(self, event: ProgressEvent) -> None:
        """Report an event: to ``metrics.jsonl`` (batched) and to the progress callback."""
        if self.out_dir is not None:
            self._pending.append(event)
            now = time.perf_counter()
            if event.phase in ("validate", "done") or now - self._flushed >= METRICS_FLUSH_SECONDS:
                self.artifacts.append_metrics(self.out_dir, self._pending)
                self._pending.clear()
                self._flushed = now
        if self._on_progress is not None:
            self._on_progress(event)


def _adam(parameters: list[torch.Tensor], lr: float, device: torch.device) -> torch.optim.Adam:
    """Adam with its fused kernel (one pass over all tensors per step) where this torch build has one for the device."""
    try:
        return torch.optim.Adam(parameters, lr=lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        log.info("fused Adam is not available on %s: using the per-tensor implementation", device)
        return torch.optim.Adam(parameters, lr=lr)


def _sparse_tables(model: PreferenceModel, names: tuple[str, ...], sparse: bool) -> None:
    """Make the ID embedding tables ``names`` (parameter names) give sparse gradients, or dense ones again."""
    for name in names:
        getattr(model, name.split(".")[0]).sparse = sparse


def _by_epoch(blocks: list[tuple[int, str, int]]) -> list[tuple[int, list[tuple[str, int]]]]:
    """A plan's blocks grouped by epoch, in order: ``[(epoch, [(phase, steps), ...]), ...]``."""
    grouped: dict[int, list[tuple[str, int]]] = {}
    for epoch, phase, n in blocks:
        grouped.setdefault(epoch, []).append((phase, n))
    return list(grouped.items())


def _stages(blocks: list[tuple[int, str, int]]) -> dict[int, frozenset[str]]:
    """Each epoch of a plan with the set of phases it runs: epochs with the same set form a stage for early stopping."""
    stages: dict[int, set[str]] = {}
    for epoch, phase, _ in blocks:
        stages.setdefault(epoch, set()).add(phase)
    return {epoch: frozenset(phases) for epoch, phases in stages.items()}
