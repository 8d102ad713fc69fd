"""Tests of metarec_core.transfer: a source run's weights as start and L2-SP anchor, and its inner rates where they fit."""
import dataclasses
import json
import logging
import shutil

import torch

from metarec_core.artifacts import load_run, load_weights
from metarec_core.models import PreferenceModel
from metarec_core.presets import GRADIENT_STEPS
from metarec_core.train_config import TrainConfig
from metarec_core.transfer import source_anchor, source_inner_rates

CPU = torch.device("cpu")


def fresh_model(result, **shape_changes) -> PreferenceModel:
    shape = dataclasses.replace(result.artifacts.shape, **shape_changes)
    torch.manual_seed(5)
    return PreferenceModel(shape, result.artifacts.config.model)


def test_no_source_run_means_no_anchor_and_an_untouched_model(tiny_run):
    result, _, _ = tiny_run
    model = fresh_model(result)
    before = {n: v.clone() for n, v in model.state_dict().items()}
    assert source_anchor(TrainConfig(), model, CPU) is None
    assert all(torch.equal(v, before[n]) for n, v in model.state_dict().items())


def test_source_weights_start_the_model_and_anchor_it(tiny_run):
    result, run_dir, _ = tiny_run
    source = load_weights(run_dir)
    model = fresh_model(result)
    assert not torch.equal(model.item_factor.weight, source["item_factor.weight"])  # a fresh start differs
    anchor = source_anchor(TrainConfig(source_run=str(run_dir)), model, CPU)
    own = dict(model.named_parameters())
    assert set(anchor) == set(own)
    for name, value in own.items():
        assert torch.equal(value.detach(), source[name]) and torch.equal(anchor[name], source[name]), name
    # Users known to the source keep their learned ID parameters (returning users).
    assert torch.equal(model.user_known, source["user_known"]) and bool(model.user_known.any())


def test_tensors_of_another_shape_are_left_out_of_the_anchor_and_logged(tiny_run, caplog):
    result, run_dir, _ = tiny_run
    source = load_weights(run_dir)
    model = fresh_model(result, n_items=result.artifacts.shape.n_items + 5)  # another item index space
    start = model.item_factor.weight.detach().clone()
    with caplog.at_level(logging.WARNING, logger="metarec_core.transfer"):
        anchor = source_anchor(TrainConfig(source_run=str(run_dir)), model, CPU)
    assert {"item_factor.weight", "item_bias.weight"}.isdisjoint(anchor)
    assert torch.equal(model.item_factor.weight.detach(), start)  # not overwritten
    assert torch.equal(model.user_factor.weight.detach(), source["user_factor.weight"])  # the rest still transfers
    assert "item_factor.weight" in caplog.text and "plain L2" in caplog.text


def rates_after(config: TrainConfig, source: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    rates = {name: torch.full_like(value, 0.123) for name, value in source.items()}
    source_inner_rates(config, rates)
    return rates


def test_source_inner_rates_are_reused_only_under_the_same_solver(tiny_run):
    result, run_dir, _ = tiny_run
    assert result.artifacts.config.inner_solver == "newton"
    source = load_run(run_dir).inner_lr
    assert source and not any(torch.all(v == 0.123) for v in source.values())
    same = rates_after(TrainConfig(source_run=str(run_dir)), source)
    assert all(torch.allclose(same[n], source[n]) for n in source)
    other = rates_after(TrainConfig(**GRADIENT_STEPS, source_run=str(run_dir)), source)
    assert all(torch.all(v == 0.123) for v in other.values())
    untouched = rates_after(TrainConfig(), source)
    assert all(torch.all(v == 0.123) for v in untouched.values())


def test_a_source_saved_before_the_newton_solver_counts_as_gradient_steps(tiny_run, tmp_path):
    _, run_dir, _ = tiny_run
    legacy = tmp_path / "legacy"
    shutil.copytree(run_dir, legacy)
    values = json.loads((legacy / "config.json").read_text())
    del values["inner_solver"]
    (legacy / "config.json").write_text(json.dumps(values))
    source = load_run(run_dir).inner_lr
    newton = rates_after(TrainConfig(source_run=str(legacy)), source)
    assert all(torch.all(v == 0.123) for v in newton.values())
    gradient = rates_after(TrainConfig(**GRADIENT_STEPS, source_run=str(legacy)), source)
    assert all(torch.allclose(gradient[n], source[n]) for n in source)
