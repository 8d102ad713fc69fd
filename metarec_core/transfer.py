"""Transfer from a source run: its weights as the L2-SP anchor and start, and its inner rates where they fit."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file

from metarec_core.artifacts import CONFIG_FILE, INNER_LR_PREFIX, WEIGHTS_FILE, load_weights, saved_config_values
from metarec_core.models import PreferenceModel
from metarec_core.train_config import TrainConfig

log = logging.getLogger(__name__)


def source_anchor(config: TrainConfig, model: PreferenceModel, device: torch.device) -> dict[str, torch.Tensor] | None:
    """Weights of the source run (the L2-SP anchor), also used to initialise the model.

    Users known to the source keep their learned ID parameters (returning
    users of a new domain). Tensors whose shape differs (another index space)
    are left out of the anchor, fall back to plain L2, and are logged.
    """
    if not config.source_run:
        return None
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


def source_inner_rates(config: TrainConfig, inner_lr: dict[str, torch.Tensor]) -> None:
    """Start learned inner learning rates from the source run's, where they fit.

    A source run with another inner solver is skipped (its rates are step sizes
    where this run needs prior variances, or the other way round).
    """
    if not config.source_run:
        return
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
