"""The settings of a training run: :class:`TrainConfig` and its named presets."""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError
from metarec_core.meta import REDUCTIONS, SOLVERS
from metarec_core.models import ADAPT_SCOPES, ModelConfig
from metarec_core.presets import NEW_ITEMS, PRESETS

if TYPE_CHECKING:
    from metarec_core.dataset import Dataset
    from metarec_core.splits import ColdStartSplit

log = logging.getLogger(__name__)

SCHEDULES = ("alternating", "sequential", "joint")
#: ``TrainConfig.scenario`` values: ``auto`` (picked from the data, :func:`resolve_scenario`) and the split scenarios.
SCENARIO_CHOICES = ("auto", "user-cold", "item-cold", "both-cold", "warm")
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

    On explicit ratings ``L_trans`` and ``L_meta``'s query loss are Huber's
    loss with ``huber_delta`` (errors up to δ cost their square, as in MSE;
    larger ones grow linearly, so the fit leans to the median rating that MAE
    rewards); ``huber_delta = 0`` (default) is the squared error. The support
    loss of the fold-in stays least squares. δ = 1 lowered ML-100K's MAE on
    every seed of 0–5 (0.7791 → 0.7753, RMSE unchanged) but on ML-1M (seeds
    0–2) left MAE where it was (0.7217) and cost 0.0034 nDCG@3, so it is opt-in.

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

    ``scenario`` is the cold start a run trains and is tested for
    (``user-cold``, ``item-cold``, ``both-cold``, ``warm``); ``auto`` (the
    default) picks it from the data when the run starts
    (:func:`resolve_scenario`): ``item-cold`` with the new-items settings when
    many catalogue items have no interaction yet, ``user-cold`` otherwise. The
    saved ``config.json`` holds what was picked.

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
    huber_delta: float = 0.0
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
    scenario: str = "auto"
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
        if self.scenario not in SCENARIO_CHOICES:
            raise ValueError(f"scenario must be one of {SCENARIO_CHOICES}, got '{self.scenario}'")
        if self.l0_unit not in ("pass", "step"):
            raise ValueError(f"l0_unit must be pass or step, got '{self.l0_unit}'")
        if self.loss not in ("auto", "mse", "bce"):
            raise ValueError(f"loss must be auto, mse or bce, got '{self.loss}'")
        for name in ("lambda_meta", "lambda_trans", "lambda_l0", "lambda_id", "huber_delta", "inner_lr", "lr"):
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


# --------------------------------------------------------------------------- scenario "auto"

#: ``scenario="auto"`` trains for new items when at least this share of the catalogue's items has no interaction.
#: The built-in data stays well below it (ML-100K: 0 of 1,682 items; ML-1M: 177 of 3,883, 4.6 %), so their runs keep
#: the new-users protocol; a catalogue uploaded with a tenth or more of brand-new items switches.
AUTO_NEW_ITEM_SHARE = 0.10


@dataclass(frozen=True)
class ScenarioChoice:
    """What :func:`resolve_scenario` picked for a run and why.

    Attributes
    ----------
    config
        The config to train with (``scenario`` never ``auto``).
    new_items
        Catalogue items without any interaction.
    n_items
        Items in the catalogue.
    switched_on
        Settings ``auto`` changed, as dotted keys -> values (empty when it kept the new-users protocol).
    """

    config: TrainConfig
    new_items: int
    n_items: int
    switched_on: dict[str, Any]

    @property
    def message(self) -> str:
        """One sentence for the log, the CLI and the app; empty unless ``auto`` switched the run to new items."""
        if not self.switched_on:
            return ""
        settings = ", ".join(f"{k}={v}" for k, v in self.switched_on.items())
        return (
            f"{self.new_items} of {self.n_items} items have no interactions (at least {AUTO_NEW_ITEM_SHARE:.0%}): "
            f"training for new items ({settings})"
        )


def items_without_interactions(dataset: "Dataset") -> int:
    """How many catalogue items (the item table's rows) have no interaction in ``dataset.ratings``."""
    counts = np.bincount(dataset.ratings["item"].to_numpy(np.int64), minlength=dataset.n_items)
    return int(np.count_nonzero(counts == 0))


def resolve_scenario(config: TrainConfig, dataset: "Dataset", split: "ColdStartSplit | None" = None) -> ScenarioChoice:
    """The scenario of a run whose config says ``auto``, and the new-items settings that come with it.

    Rule: with a ready-made ``split`` its scenario is taken as it is.
    Otherwise, on explicit ratings whose items have side features, when at
    least :data:`AUTO_NEW_ITEM_SHARE` of the catalogue's items have no
    interaction, the run trains for new items: ``scenario="item-cold"``,
    ``use_text`` when the item table has a text column (a title), and
    :data:`metarec_core.presets.NEW_ITEMS` (item IDs hidden half of the time
    in training, five gradient steps for known users) — each only where the
    config still has the default value, so a setting the user chose stays.
    Else ``user-cold``. A config that names its scenario is returned as it is.

    Parameters
    ----------
    config
        The run's settings.
    dataset
        The data it trains on.
    split
        A ready-made split the run will use instead of its own, if any.

    Returns
    -------
    ScenarioChoice
    """
    new_items = items_without_interactions(dataset)
    if config.scenario != "auto":
        return ScenarioChoice(config, new_items, dataset.n_items, {})
    if split is not None:
        return ScenarioChoice(dataclasses.replace(config, scenario=split.config.scenario), new_items, dataset.n_items, {})
    share = new_items / max(dataset.n_items, 1)
    if share < AUTO_NEW_ITEM_SHARE or dataset.implicit or not dataset.item_features:
        return ScenarioChoice(dataclasses.replace(config, scenario="user-cold"), new_items, dataset.n_items, {})
    default = TrainConfig()
    changes: dict[str, Any] = {"scenario": "item-cold"}
    if not config.use_text and any(s.kind == "text" for s in dataset.item_features):
        changes["use_text"] = True
    if config.model.item_id_dropout == default.model.item_id_dropout:
        changes["model.item_id_dropout"] = NEW_ITEMS["model"]["item_id_dropout"]
    inner = {k: v for k, v in NEW_ITEMS.items() if k.startswith("inner_")}
    if all(getattr(config, k) == getattr(default, k) for k in inner):  # the inner-loop settings go together
        changes.update(inner)
    model = dataclasses.replace(config.model, item_id_dropout=changes.get("model.item_id_dropout", config.model.item_id_dropout))
    resolved = dataclasses.replace(config, **{k: v for k, v in changes.items() if "." not in k}, model=model)
    choice = ScenarioChoice(resolved, new_items, dataset.n_items, changes)
    log.info("scenario auto: %s", choice.message)
    return choice
