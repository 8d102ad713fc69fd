"""The settings of a training run: :class:`TrainConfig` and its named presets."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError
from metarec_core.meta import REDUCTIONS, SOLVERS
from metarec_core.models import ADAPT_SCOPES, ModelConfig
from metarec_core.presets import PRESETS

SCHEDULES = ("alternating", "sequential", "joint")
DEVICES = ("auto", "cpu", "cuda")
#: Run kinds (:attr:`TrainConfig.kind`), from the λ values.
RUN_KINDS = ("both", "transfer", "meta")
#: How a step updates the ID tables (:attr:`TrainConfig.table_updates`), the default first.
TABLE_UPDATES = ("dense", "rows")


@dataclass(frozen=True)
class TrainConfig:
    """Every setting of a training run; saved as ``config.json`` beside the weights.

    The objective is ``L_total = λ1·L_meta + λ2·L_trans + L0`` with
    ``λ1 = lambda_meta``, ``λ2 = lambda_trans`` and ``L0 = lambda_l0·‖θ − θ_source‖²``
    (L2-SP towards a source run's weights when ``source_run`` is set, plain L2
    ``lambda_l0·‖θ‖²`` otherwise). ``l0_unit`` says what ``lambda_l0`` is the
    weight of: ``pass`` (default) spreads it over the steps of one pass of the
    warm ratings (each step adds ``lambda_l0 · batch_size / n_warm`` of it), so
    a larger dataset gets the same prior per pass instead of a pull that grows
    with its number of steps, as maximum a posteriori training has it; ``step``
    adds all of it at every step, as runs saved before this setting did. With ``lambda_id > 0`` the user and item ID
    tables leave ``L0`` and get a per-occurrence penalty instead, in every
    phase: ``lambda_id`` times the batch mean of the squared ID rows each warm
    rating (or, in a meta batch, each task's item) touches, so an item is
    shrunk in proportion to how often it is rated (the regulariser of SGD matrix factorisation and weighted-λ ALS)
    rather than every row at every step whether it was seen or not. ``λ1 = 0`` turns the meta phase off (pure
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

    ``patience > 0`` stops a stage of the schedule (the whole run when it
    alternates) after that many epochs in a row without a better validation
    score (0 trains every epoch); a sequential run then goes on to its meta
    stage. With ``keep_best`` the weights of the epoch with the best validation
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

    ``table_updates`` says how a step updates the user and item ID tables.
    ``dense`` (default) moves every row at every step, as Adam with ``L0`` on
    the whole tables does (rows the batch did not look up still shrink under
    ``L0`` and coast on their momentum). ``rows`` touches only the rows the
    step's batch looks up: Adam moves those rows (row-wise Adam; a row left
    out of some steps first takes, in closed form, the steps dense Adam would
    have taken on its momentum meanwhile), ``L0`` charges each of them its
    prior for every step since it was last looked up (the same sum over steps
    as charging every row at every step, since a row that is not looked up
    does not change), and the weight average catches them up exactly; so a
    step costs what its batch costs, whatever the number of users and items
    (on 100k users × 50k items about 2× less CPU per step than ``dense``).
    What it leaves out is ``L0``'s pull on a row between its lookups, so it
    is not the dense run: on ML-1M (seeds 0–2) MAE 0.7262 / nDCG@3 0.7816
    against 0.7251 / 0.7849 dense, so it is for catalogues too big for dense steps.
    """

    lambda_meta: float = 1.0
    lambda_trans: float = 1.0
    lambda_l0: float = 0.04
    l0_unit: str = "pass"
    lambda_id: float = 0.0
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
    batch_size: int = 2048
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
    patience: int = 2
    seed: int = 0
    device: str = "auto"
    cpu_threads: int = 1
    # How the ID tables are updated (see the class docstring).
    table_updates: str = "dense"

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
        if self.l0_unit not in ("pass", "step"):
            raise ValueError(f"l0_unit must be pass or step, got '{self.l0_unit}'")
        if self.loss not in ("auto", "mse", "bce"):
            raise ValueError(f"loss must be auto, mse or bce, got '{self.loss}'")
        for name in ("lambda_meta", "lambda_trans", "lambda_l0", "lambda_id", "inner_lr", "lr"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
                raise ValueError(f"{name} must be a non-negative number, got {value!r}")
        for name in ("num_epochs", "meta_epochs", "trans_epochs", "inner_steps", "cpu_threads", "patience"):
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
        if self.table_updates not in TABLE_UPDATES:
            raise ValueError(f"table_updates must be one of {TABLE_UPDATES}, got '{self.table_updates}'")
        if self.lambda_meta == 0 and self.lambda_trans == 0:
            raise ValueError("lambda_meta and lambda_trans cannot both be 0: nothing would be trained")

    def inner_loop(self) -> dict[str, Any]:
        """The keyword arguments of :func:`metarec_core.meta.adapt` this config sets: ``steps``, ``scope``, ``reduction``, ``solver``.

        Every caller of ``adapt`` (training, validation, evaluation, the
        recommender) takes them from here, so a run adapts the same way wherever
        it is used.
        """
        return {"steps": self.inner_steps, "scope": self.adapt_scope, "reduction": self.inner_reduction, "solver": self.inner_solver}

    @property
    def kind(self) -> str:
        """What the run learns from: ``both`` (meta + transfer), ``transfer`` (λ1 = 0) or ``meta`` (λ2 = 0)."""
        if self.lambda_meta == 0:
            return "transfer"
        if self.lambda_trans == 0:
            return "meta"
        return "both"

    def loss_for(self, implicit: bool) -> str:
        """The loss in use: the config's, or MSE for explicit and BCE for implicit data."""
        if self.loss != "auto":
            return self.loss
        return "bce" if implicit else "mse"


def preset_config(name: str, **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a named preset (see :data:`PRESETS`) plus overrides."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'; presets are: {', '.join(PRESETS)}")
    return config_from_dict(TrainConfig, {**PRESETS[name], **overrides})
