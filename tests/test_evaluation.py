"""Tests of metarec_core.evaluation and the ``evaluate`` command: shots curves, baselines, per-user gains, protocols."""
import dataclasses
import json

import numpy as np
import pandas as pd
import pytest
import torch

from metarec_core.artifacts import load_run
from metarec_core.baselines import BiasBaseline, ItemMean, MatrixFactorization, MFConfig, tune_fold_in
from metarec_core.cli import main
from metarec_core.configs import config_from_dict
from metarec_core.errors import ConfigError, DataError
from metarec_core.evaluation_report import BASELINES, EvaluationConfig, EvaluationResult, parse_baselines
from metarec_core.evaluation import UnadaptedScores, evaluate_baselines, evaluate_run, evaluate_split, mf_validation
from metarec_core.splits import recbole_protocol_split
from metarec_core.loaders import load_dataset
from metarec_core.metrics import mae, mean_ndcg_at_k, rmse
from metarec_core.splits import SplitConfig, split_cold_start
from metarec_core.synthetic import SyntheticConfig, make_synthetic
from metarec_core.train_config import TrainConfig
from metarec_core.training import fit
from metarec_core.training_data import prepare_data

FAST = {"num_epochs": 2, "meta_epochs": 1, "trans_epochs": 1, "batch_size": 256, "inner_steps": 3}
#: K of the shared tiny run's evaluation (its users have 5-20 ratings; it was trained and tested with K = 5).
SHOTS = (1, 3, 5, 10)
K_RUN = 5
RUN = "meta+transfer"
NO_ADAPT = "meta+transfer, no adaptation"


@pytest.fixture(scope="module")
def dataset(tiny_run):
    return tiny_run[2]


@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run[1]


@pytest.fixture(scope="module")
def result(run_dir, dataset) -> EvaluationResult:
    return evaluate_run(run_dir, dataset, EvaluationConfig(shots=SHOTS))


@pytest.fixture(scope="module")
def trained_result(tmp_path_factory) -> EvaluationResult:
    """A run trained long enough to learn, evaluated against the non-personalised baselines (several seconds)."""
    torch.set_num_threads(1)
    data = make_synthetic(SyntheticConfig(n_users=200, n_items=100)).dataset
    out = tmp_path_factory.mktemp("trained")
    fit(config_from_dict(TrainConfig, FAST), data, out_dir=out)
    return evaluate_run(out, data, EvaluationConfig(shots=(1, 5, 10, 20), baselines=("global-mean", "item-mean")))


def value(result: EvaluationResult, method: str, shots: int, metric: str) -> float:
    f = result.frame
    row = f[(f["method"] == method) & (f["shots"] == shots) & (f["metric"] == metric)]
    assert len(row) == 1
    return float(row["value"].iloc[0])


def test_every_method_and_shot_has_every_metric(result):
    methods = [RUN, NO_ADAPT, *BASELINES]
    assert result.methods == methods
    expected_metrics = {"mae", "rmse", "mae_per_user", "ndcg@1", "ndcg@3", "ndcg@5", "ndcg@10",
                        "catalogue_ndcg@10", "recall@10", "hit_rate@10"}
    assert set(result.metrics) == expected_metrics
    f = result.frame
    assert list(f.columns) == ["method", "scenario", "shots", "seed", "metric", "value"]
    counts = f.groupby(["method", "shots"]).size()
    assert set(counts.index) == {(m, k) for m in methods for k in SHOTS}
    assert (counts == len(expected_metrics)).all()
    assert set(f["scenario"]) == {"user-cold"} and set(f["seed"]) == {0}
    assert np.isfinite(f["value"]).all()
    ranking = f[f["metric"].str.contains("ndcg|recall|hit_rate")]["value"]
    assert ranking.between(0, 1).all()


@pytest.mark.slow
def test_more_shots_lower_error_and_adaptation_beats_its_start(trained_result):
    result = trained_result
    run_mae = {k: value(result, RUN, k, "mae") for k in (1, 5, 10, 20)}
    assert run_mae[20] < run_mae[5] < run_mae[1] - 0.03
    for k in (5, 10, 20):
        assert value(result, RUN, k, "mae") < value(result, NO_ADAPT, k, "mae") - 0.03
    # The meta-learned model beats the non-personalised baselines at every K.
    for k in (1, 5, 10, 20):
        assert value(result, RUN, k, "mae") < value(result, "item-mean", k, "mae")
        assert value(result, RUN, k, "mae") < value(result, "global-mean", k, "mae")


@pytest.mark.slow
def test_most_new_users_gain_from_adapting(trained_result):
    pu = trained_result.per_user(RUN, 10)
    assert (pu["gain"] > 0).mean() > 0.6  # most new users gain from adapting on 10 ratings


def test_run_numbers_match_training_test_metrics(result, run_dir):
    final = json.loads((run_dir / "result.json").read_text())["final_metrics"]
    # Training evaluated the same held-out users with K = eval_support_size through the same adapt.
    assert load_run(run_dir).config.eval_support_size == K_RUN
    assert value(result, RUN, K_RUN, "mae") == pytest.approx(final["test_mae"], abs=1e-5)
    assert value(result, RUN, K_RUN, "ndcg@3") == pytest.approx(final["test_ndcg@3"], abs=1e-5)


def test_each_split_alone_gives_the_numbers_of_the_evaluation_that_reuses_scores(result, run_dir, dataset):
    # evaluate_run scores the run's starting point once for every K and reads "before" from it; one split
    # evaluated on its own (fresh kept scores) must give the same metrics and the same per-user before and after.
    run = load_run(run_dir)
    split = split_cold_start(dataset, SplitConfig(support_size=3, seed=run.config.seed, cold_fraction=run.config.cold_fraction))
    alone = evaluate_split(split, dataset, EvaluationConfig(shots=(3,)), run=run, shots=3)
    both = result.frame[result.frame["shots"] == 3].merge(alone.frame, on=["method", "metric"], suffixes=("", "_alone"))
    assert len(both) == len(alone.frame) > 0
    np.testing.assert_allclose(both["value"], both["value_alone"], rtol=1e-6)
    for method in (RUN, NO_ADAPT):
        kept, fresh = result.per_user(method, 3).sort_values("user"), alone.per_user(method, 3).sort_values("user")
        np.testing.assert_allclose(kept["mae_before"], fresh["mae_before"], rtol=1e-6)
        np.testing.assert_allclose(kept["mae_after"], fresh["mae_after"], rtol=1e-6)
    # Before adapting, the run is its no-adaptation variant.
    np.testing.assert_allclose(
        alone.per_user(RUN, 3).sort_values("user")["mae_before"], alone.per_user(NO_ADAPT, 3).sort_values("user")["mae_after"], rtol=1e-6,
    )


def test_unadapted_scores_computes_only_users_it_does_not_keep(run_dir):
    run, other = load_run(run_dir), load_run(run_dir)
    asked: list[list[int]] = []

    def compute(users):
        asked.append(users.tolist())
        return np.stack([np.full(4, float(u)) for u in users])

    kept = UnadaptedScores()
    np.testing.assert_array_equal(kept.get(run, "user-cold", np.array([5, 2]), compute)[:, 0], [5, 2])
    np.testing.assert_array_equal(kept.get(run, "user-cold", np.array([2, 9, 5]), compute)[:, 0], [2, 9, 5])
    kept.get(other, "user-cold", np.array([2]), compute)  # another run, and another scenario, are kept apart
    kept.get(run, "warm", np.array([2]), compute)
    assert asked == [[2, 5], [9], [2], [2]]


@pytest.mark.parametrize("name, make", [("bias", BiasBaseline), ("item-mean", ItemMean)])
@pytest.mark.parametrize("shots", [3, 10])
def test_baselines_give_the_numbers_of_a_direct_call(result, dataset, name, make, shots):
    split = split_cold_start(dataset, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=shots, seed=0))
    model = make().fit(split.train, dataset.n_users, dataset.n_items)
    scores = np.clip(model.predict_tasks(split.support, split.query), *dataset.rating_range)
    y = split.query["rating"].to_numpy(np.float64)
    users = split.query["user"].to_numpy()
    assert value(result, name, shots, "mae") == pytest.approx(mae(y, scores), abs=1e-12)
    assert value(result, name, shots, "rmse") == pytest.approx(rmse(y, scores), abs=1e-12)
    assert value(result, name, shots, "ndcg@3") == pytest.approx(mean_ndcg_at_k(users, y, scores, 3), abs=1e-12)


def test_mf_baseline_fold_in_penalties_are_chosen_on_validation_users():
    """The ``mf`` row is ALS refitted on the training rows with the fold-in penalties tuned on validation users."""
    data = make_synthetic(SyntheticConfig(n_users=300, n_items=200, seed=0)).dataset
    result = evaluate_baselines(data, EvaluationConfig(shots=(5, 10), baselines=("mf",)))
    for k in (5, 10):
        split = split_cold_start(data, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=k, seed=0))
        valid = mf_validation(split, data, None, k)
        # the validation users are fit's, drawn from the training users (the default TrainConfig, the split's seed)
        fits_own = prepare_data(TrainConfig(seed=0, eval_support_size=k), data, split=split)
        valid_users = set(valid.valid_query["user"])
        assert valid_users == set(fits_own.valid_query["user"]) and len(valid_users) >= 10
        assert valid_users <= set(split.train["user"]) and not valid_users & set(split.query["user"])
        assert not valid_users & set(valid.train["user"])
        assert (valid.valid_support.groupby("user").size() == k).all()
        best, table = tune_fold_in(MFConfig(), valid.train, valid.valid_support, valid.valid_query, data.n_users, data.n_items)
        y = split.query["rating"].to_numpy(np.float64)

        def test_mae(config: MFConfig) -> float:
            model = MatrixFactorization(config).fit(split.train, data.n_users, data.n_items)
            return mae(y, np.clip(model.predict_tasks(split.support, split.query), *data.rating_range))

        assert value(result, "mf", k, "mae") == pytest.approx(test_mae(best), abs=1e-12)
        # on this scenario the tuned penalties are not the defaults, so the row shows which were used
        assert (best.fold_in_reg, best.fold_in_bias_reg) != (MFConfig().fold_in_reg, MFConfig().fold_in_bias_reg)
        assert abs(value(result, "mf", k, "mae") - test_mae(MFConfig())) > 1e-4
    assert not result.warnings


def test_mf_baseline_of_a_run_is_tuned_on_the_runs_own_validation_users(result, run_dir, dataset):
    run = load_run(run_dir)
    split = split_cold_start(dataset, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=K_RUN, seed=0))
    valid = mf_validation(split, dataset, run.config, K_RUN)
    fits_own = prepare_data(run.config, dataset)  # what fit validated on (its valid_fraction, seed, K)
    pd.testing.assert_frame_equal(valid.valid_support, fits_own.valid_support)
    pd.testing.assert_frame_equal(valid.valid_query, fits_own.valid_query)
    best, _ = tune_fold_in(MFConfig(), valid.train, valid.valid_support, valid.valid_query, dataset.n_users, dataset.n_items)
    model = MatrixFactorization(best).fit(split.train, dataset.n_users, dataset.n_items)
    scores = np.clip(model.predict_tasks(split.support, split.query), *dataset.rating_range)
    assert value(result, "mf", K_RUN, "mae") == pytest.approx(mae(split.query["rating"].to_numpy(np.float64), scores), abs=1e-12)
    no_valid = dataclasses.replace(run.config, valid_fraction=0.0)
    assert mf_validation(split, dataset, no_valid, K_RUN) is None
    assert mf_validation(split, dataset, run.config, 0) is None


def test_test_users_are_the_runs_held_out_users(result, run_dir):
    run = load_run(run_dir)
    held_out = set(run.meta["cold_users"])
    users = set(result.per_user(RUN, K_RUN)["user"])
    assert users <= held_out and len(users) >= 0.9 * len(held_out)
    assert not run.model.user_known.numpy()[sorted(users)].any()


def test_per_user_breakdown_aligns_with_query_users(result, dataset):
    split = split_cold_start(dataset, SplitConfig(scenario="user-cold", cold_fraction=0.2, support_size=K_RUN, seed=0))
    pu = result.per_user(RUN, K_RUN)
    assert list(pu.columns) == ["seed", "user", "user_id", "n_support", "n_query", "mae_before", "mae_after", "gain"]
    counts = split.query.groupby("user").size()
    assert sorted(pu["user"]) == sorted(counts.index)
    assert (pu.set_index("user")["n_query"] == counts.reindex(pu["user"]).to_numpy()).all()
    assert (pu["n_support"] == K_RUN).all()
    assert list(pu["user_id"]) == dataset.users.externals(pu["user"].to_numpy())
    assert np.allclose(pu["gain"], pu["mae_before"] - pu["mae_after"])
    assert pu["gain"].is_monotonic_decreasing
    # The per-user MAE averages to the frame's per-user MAE; "before" is the run without adaptation.
    assert pu["mae_after"].mean() == pytest.approx(value(result, RUN, K_RUN, "mae_per_user"))
    start = result.per_user(NO_ADAPT, K_RUN).set_index("user")
    assert np.allclose(pu.set_index("user")["mae_before"], start.loc[pu["user"], "mae_after"])
    assert np.allclose(start["gain"], 0.0)


def test_save_and_load_round_trip(result, tmp_path):
    from metarec_core.evaluation_report import EvaluationResult

    result.save(tmp_path / "evaluation")
    result.save(tmp_path / "evaluation")  # replacing an existing result works too
    back = EvaluationResult.load(tmp_path / "evaluation")
    pd.testing.assert_frame_equal(back.frame, result.frame, check_dtype=False)
    pd.testing.assert_frame_equal(back.per_user_frame, result.per_user_frame, check_dtype=False)
    assert back.config == result.config and back.warnings == result.warnings
    with pytest.raises(DataError, match="evaluate the run again"):
        EvaluationResult.load(tmp_path / "missing")
    saved = tmp_path / "evaluation"
    for name, damage in (("results.parquet", b"PAR1 cut short"), ("config.json", b"[]"), ("config.json", b'{"config": {"no_such": 1}}')):
        good = (saved / name).read_bytes()
        (saved / name).write_bytes(damage)
        with pytest.raises(DataError, match=r"cannot read the evaluation in .*; evaluate the run again"):
            EvaluationResult.load(saved)
        (saved / name).write_bytes(good)


def test_summary_curve_and_concat_average_over_seeds(result):
    other = dataclasses.replace(
        result,
        frame=result.frame.assign(seed=1, value=result.frame["value"] + 0.1),
        config=dataclasses.replace(result.config, seeds=(1,)),
    )
    both = EvaluationResult.concat([result, other])
    s = both.summary()
    row = s[(s["metric"] == "mae") & (s["method"] == RUN) & (s["shots"] == 10)].iloc[0]
    assert row["mean"] == pytest.approx(value(result, RUN, 10, "mae") + 0.05)
    assert row["std"] == pytest.approx(0.1 / np.sqrt(2))
    assert row["n_seeds"] == 2
    curve = both.shots_curve("mae")
    assert list(curve.columns) == ["method", "shots", "mean", "std", "n_seeds"]
    assert len(curve) == len(result.methods) * len(SHOTS)
    table = both.table(["mae", "ndcg@3"])
    assert list(table.columns) == [f"K={k}" for k in SHOTS]
    assert "±" in table.loc[("user-cold", "mae", RUN), "K=10"]
    with pytest.raises(ConfigError, match="unknown metric"):
        both.shots_curve("precision")
    payload = json.loads(json.dumps(both.to_dict()))
    assert {r["method"] for r in payload["results"]} == set(result.methods)


def test_run_is_only_evaluated_on_its_own_split(run_dir, dataset):
    run = load_run(run_dir)
    with pytest.raises(ConfigError, match="own split"):
        evaluate_run(run, dataset, EvaluationConfig(seeds=(1,), shots=(5,)))
    with pytest.raises(ConfigError, match="scenario"):
        evaluate_run(run, dataset, EvaluationConfig(scenario="item-cold", shots=(5,)))
    with pytest.raises(ConfigError, match="cold_fraction"):
        evaluate_run(run, dataset, EvaluationConfig(cold_fraction=0.3, shots=(5,)))
    other_split = split_cold_start(dataset, SplitConfig(scenario="user-cold", support_size=5, seed=1))
    with pytest.raises(DataError, match="training users"):
        evaluate_split(other_split, dataset, run=run)
    other_data = make_synthetic(
        SyntheticConfig(n_users=60, n_items=40, ratings_per_user=(5, 20), cold_users=3, cold_items=3, seed=5)
    ).dataset  # tiny_scenario's shape, other ratings
    with pytest.raises(DataError, match="fingerprint"):
        evaluate_run(run, other_data)


def test_warm_run_is_scored_only_on_rows_it_never_trained_on(tmp_path):
    torch.set_num_threads(1)
    data = make_synthetic(SyntheticConfig(n_users=80, n_items=60, ratings_per_user=(9, 30), seed=6)).dataset
    fit(config_from_dict(TrainConfig, {**FAST, "num_epochs": 1, "scenario": "warm"}), data, out_dir=tmp_path / "warm")
    result = evaluate_run(tmp_path / "warm", data, EvaluationConfig(shots=(1, 10), baselines=("bias",)))
    own = split_cold_start(data, SplitConfig(scenario="warm", support_size=10, seed=0))
    trained = set(map(tuple, own.train[["user", "item"]].to_numpy()))
    for k in (1, 10):
        pu = result.per_user(RUN, k)
        split = split_cold_start(data, SplitConfig(scenario="warm", support_size=k, seed=0))
        held_out = split.query[split.query.index.isin(own.query.index)]
        assert not trained & set(map(tuple, held_out[["user", "item"]].to_numpy()))
        assert sorted(pu["user"]) == sorted(held_out["user"].unique())
        assert pu["n_query"].sum() == len(held_out)
    assert any("warm, K=1" in w and "not evaluated" in w for w in result.warnings)


def test_config_rejects_bad_values():
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_dict(EvaluationConfig, {"shot": [1]})
    with pytest.raises(ConfigError, match="unknown baseline"):
        EvaluationConfig(baselines=("als",))
    with pytest.raises(ConfigError, match="shots"):
        EvaluationConfig(shots=(-1,))
    assert config_from_dict(EvaluationConfig, {"shots": [1, 2]}).shots == (1, 2)
    assert parse_baselines("all") == tuple(BASELINES)
    assert parse_baselines("none") == ()
    assert parse_baselines("bias, mf") == ("bias", "mf")
    with pytest.raises(ConfigError, match="unknown baseline"):
        parse_baselines("bias,knn")


def test_recbole_protocol_split():
    data = make_synthetic(SyntheticConfig(n_users=200, n_items=150, ratings_per_user=(6, 120), seed=2)).dataset
    split = recbole_protocol_split(data, seed=0)
    counts = data.ratings.groupby("user").size()
    kept = counts[(counts >= 13) & (counts <= 100)]
    assert sorted(split.excluded["user"]) == sorted(set(counts.index) - set(kept.index))
    assert len(split.excluded) > 0
    test_users = split.eval_users
    assert len(test_users) == pytest.approx(0.1 * len(kept), abs=1)
    assert (split.query.groupby("user").size() == 10).all()
    support = split.support.groupby("user").size()
    assert (support == kept.loc[support.index] - 10).all()
    train_users = set(split.train["user"])
    assert not train_users & set(split.cold_users)
    assert len(train_users) == pytest.approx(0.8 * len(kept), abs=1)
    assert set(split.support.index).isdisjoint(split.query.index)
    validation = set(split.cold_users) - set(test_users)
    assert not validation & (set(split.support["user"]) | set(split.query["user"]))
    assert split.n_unused == len(data.ratings) - len(split.train) - len(split.support) - len(split.query)
    again = recbole_protocol_split(data, seed=0)
    assert again.query.index.equals(split.query.index)
    assert not recbole_protocol_split(data, seed=1).query.index.equals(split.query.index)
    result = evaluate_split(split, data, EvaluationConfig(baselines=("item-mean", "bias")))
    assert result.frame["shots"].isna().all()
    assert list(result.table(["ndcg@5"]).columns) == ["K=rest"]
    assert value_any(result, "bias", "mae") < value_any(result, "item-mean", "mae") + 0.02


def value_any(result: EvaluationResult, method: str, metric: str) -> float:
    f = result.frame
    return float(f[(f["method"] == method) & (f["metric"] == metric)]["value"].iloc[0])


def test_implicit_data_reports_auc_and_skips_rating_baselines():
    data = make_synthetic(SyntheticConfig(n_users=120, n_items=80, implicit=True, seed=4)).dataset
    result = evaluate_baselines(data, EvaluationConfig(shots=(5,), baselines=("global-mean", "item-mean", "bias")))
    assert result.methods == ["global-mean", "item-mean"]
    assert any("'bias' needs explicit ratings" in w for w in result.warnings)
    assert set(result.metrics) == {"auc", "catalogue_ndcg@10", "recall@10", "hit_rate@10"}
    assert value_any(result, "global-mean", "auc") == pytest.approx(0.5)
    assert value_any(result, "item-mean", "auc") > 0.6  # popularity ranks held-out items above unseen ones
    pu = result.per_user("item-mean", 5)
    assert {"auc_before", "auc_after"} <= set(pu.columns) and np.allclose(pu["gain"], 0.0)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("csvrun")
    scenario = make_synthetic(SyntheticConfig(n_users=120, n_items=60, seed=7)).dataset
    r = scenario.ratings
    csv = folder / "ratings.csv"
    pd.DataFrame({
        "user_id": scenario.users.externals(r["user"].to_numpy()),
        "item_id": scenario.items.externals(r["item"].to_numpy()),
        "rating": r["rating"].to_numpy(),
        "timestamp": r["timestamp"].to_numpy(),
    }).to_csv(csv, index=False)
    fit(config_from_dict(TrainConfig, {**FAST, "num_epochs": 1}), load_dataset(csv), out_dir=folder / "run")
    return folder / "run", csv


def test_cli_evaluate_json(csv_run, capsys):
    run, csv = csv_run
    code = main(["evaluate", "--run", str(run), "--interactions", str(csv), "--shots", "1,5", "--baselines", "bias", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    payload = json.loads(out)
    assert payload["config"]["shots"] == [1, 5]
    assert {r["method"] for r in payload["results"]} == {RUN, NO_ADAPT, "bias"}
    assert {r["shots"] for r in payload["summary"]} == {1, 5}
    assert all(s["n_users"] > 0 for s in payload["splits"])


def test_cli_evaluate_table(csv_run, capsys):
    run, csv = csv_run
    assert main(["evaluate", "--run", str(run), "--interactions", str(csv), "--shots", "3", "--baselines", "none",
                 "--metrics", "mae,ndcg@3"]) == 0
    out = capsys.readouterr().out
    assert "K=3" in out and NO_ADAPT in out and "ndcg@3" in out and "rmse" not in out


@pytest.mark.parametrize("extra, message", [
    ([], "not built in"),
    (["--dataset", "synthetic"], "not the data run"),
    (["--shots", "1,x"], "--shots"),
    (["--baselines", "knn"], "unknown baseline"),
])
def test_cli_evaluate_errors_are_one_line(csv_run, capsys, extra, message):
    run, _ = csv_run
    assert main(["evaluate", "--run", str(run), *extra]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and message in err and "\n" not in err


def test_run_label_names_the_method_by_the_configs_kind():
    from types import SimpleNamespace

    from metarec_core.evaluation import run_label

    labels = {kind: run_label(SimpleNamespace(config=TrainConfig(**weights)))
              for kind, weights in (("both", {}), ("meta", {"lambda_trans": 0.0}), ("transfer", {"lambda_meta": 0.0}))}
    assert labels == {"both": "meta+transfer", "meta": "meta only", "transfer": "transfer only"}
