"""Figure builders: the data in each figure is the data given, in the right place."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from metarec_core import training
from metarec_core.train_config import SCHEDULES, TrainConfig
from ui import charts
from ui.i18n import load_strings


def test_concept_map_has_every_term_in_both_languages() -> None:
    strings = load_strings()
    dot = charts.concept_map_dot(strings, "zh")
    for term in ("推荐系统", "元学习", "迁移学习", "模型元学习", "任务元学习", "经验重放", "领域自适应",
                 "特征映射", "对抗训练", "零样本学习", "原型网络", "迁移模型", "推荐模型"):
        assert term in dot
    assert "Meta-learning" in dot
    assert dot.count("->") == len(charts.CONCEPT_EDGES)
    # The chosen language comes first on each node.
    assert '"元学习\nMeta-learning"' in dot
    assert '"Meta-learning\n元学习"' in charts.concept_map_dot(strings, "en")


def schedule(**settings) -> TrainConfig:
    return TrainConfig(**settings)


def test_alternating_schedule_interleaves_phases() -> None:
    seg = charts.schedule_segments(schedule(num_epochs=2, meta_epochs=1, trans_epochs=3))
    assert list(seg["phase"]) == ["meta", "transfer", "meta", "transfer"]
    assert list(seg["start"]) == [0, 1, 4, 5]
    assert list(seg["end"]) == [1, 4, 5, 8]
    assert list(seg["epoch"]) == [1, 1, 2, 2]


def test_sequential_schedule_runs_transfer_first_and_ablation_drops_a_phase() -> None:
    seg = charts.schedule_segments(schedule(schedule="sequential", num_epochs=2, meta_epochs=1, trans_epochs=3))
    assert list(seg["phase"]) == ["transfer", "transfer", "meta", "meta"]
    assert list(seg["epoch"]) == [1, 2, 3, 4]  # the meta epochs come after the transfer ones, as training counts them
    assert seg["end"].iloc[-1] == 2 * 3 + 2 * 1
    only_transfer = charts.schedule_segments(schedule(num_epochs=3, meta_epochs=1, trans_epochs=2, lambda_meta=0.0))
    assert set(only_transfer["phase"]) == {"transfer"}
    assert only_transfer["end"].iloc[-1] == 6


def test_joint_schedule_has_one_bar_per_epoch() -> None:
    seg = charts.schedule_segments(schedule(schedule="joint", num_epochs=4, meta_epochs=1, trans_epochs=2))
    assert list(seg["phase"]) == ["joint"] * 4
    assert seg["end"].iloc[-1] == 8
    assert charts.schedule_segments(schedule(num_epochs=0)).empty


@pytest.mark.parametrize("kind", SCHEDULES)
def test_schedule_segments_are_the_passes_training_runs(kind: str) -> None:
    """Every bar is a run of consecutive passes of one phase in one epoch of the plan ``fit`` follows (``training.plan``)."""
    for num, meta, trans, lambdas in itertools.product((1, 3), (0, 1, 2), (0, 1, 3), ((1.0, 1.0), (0.0, 1.0), (1.0, 0.0))):
        config = schedule(schedule=kind, num_epochs=num, meta_epochs=meta, trans_epochs=trans, lambda_meta=lambdas[0], lambda_trans=lambdas[1])
        passes = [(epoch + 1, phase) for epoch, phase, _ in training.plan(config, n_meta_steps=1, n_trans_steps=1)]
        seg = charts.schedule_segments(config)
        drawn = [(row.epoch, row.phase) for row in seg.itertuples() for _ in range(row.end - row.start)]
        assert drawn == passes, config
        assert list(seg["start"]) == [0, *seg["end"].iloc[:-1]][: len(seg)]  # bars follow each other without gaps


def test_schedule_figure_draws_one_trace_per_phase() -> None:
    seg = charts.schedule_segments(schedule(num_epochs=2, meta_epochs=1, trans_epochs=3))
    fig = charts.schedule_figure(seg, {"meta": "M", "transfer": "T"}, x_title="passes")
    assert [tr.name for tr in fig.data] == ["M", "T"]
    meta = fig.data[0]
    assert list(meta.base) == [0, 4] and list(meta.x) == [1, 1]
    assert fig.layout.xaxis.title.text == "passes"


# ---------------------------------------------------------------- curves
def metrics_frame() -> pd.DataFrame:
    rows = []
    for step in range(1, 11):
        rows.append(("meta", 1, step, "meta", 2.0 / step, 100.0 + step))
        rows.append(("meta", 1, step, "total", 3.0 / step, 100.0 + step))
        rows.append(("transfer", 1, step, "trans", 1.0 / step, 100.5 + step))
    rows.append(("validate", 1, 10, "valid_mae", 0.9, 111.0))
    rows.append(("validate", 2, 20, "valid_mae", 0.8, 121.0))
    return pd.DataFrame(rows, columns=["phase", "epoch", "step", "key", "value", "time"])


def test_smooth_is_a_debiased_moving_average() -> None:
    assert list(charts.smooth(np.array([1.0, 1.0, 1.0]), 0.9)) == pytest.approx([1.0, 1.0, 1.0])
    out = charts.smooth(np.array([0.0, 10.0]), 0.5)
    assert out[0] == 0.0 and out[1] == pytest.approx((0.5 * 0 * 0.5 + 0.5 * 10) / (1 - 0.25))
    assert list(charts.smooth(np.array([3.0, 1.0]), 0.0)) == [3.0, 1.0]
    with pytest.raises(ValueError):
        charts.smooth(np.array([1.0]), 1.0)


def test_loss_figure_draws_training_terms_only() -> None:
    fig = charts.loss_figure(metrics_frame(), keys=("meta", "trans"), key_labels={"meta": "M", "trans": "T"})
    assert [tr.name for tr in fig.data] == ["M", "T"]
    assert list(fig.data[0].y) == pytest.approx([2.0 / s for s in range(1, 11)])
    timed = charts.loss_figure(metrics_frame(), keys=("trans",), x="time")
    assert timed.data[0].x[0] == pytest.approx(0.5)  # seconds since the run's first point (of any term)
    with pytest.raises(ValueError):
        charts.loss_figure(metrics_frame(), x="epoch")


def test_loss_figure_overlays_runs_with_escaped_names() -> None:
    two = pd.concat([metrics_frame().assign(run="a"), metrics_frame().assign(run="b")], ignore_index=True)
    fig = charts.loss_figure(two, keys=("meta",), run_labels={"a": "<i>mine</i>", "b": "theirs"})
    assert [tr.name for tr in fig.data] == ["&lt;i&gt;mine&lt;/i&gt; · meta", "theirs · meta"]
    assert fig.data[0].line.color != fig.data[1].line.color


def test_validation_figure_plots_per_epoch() -> None:
    fig = charts.validation_figure(metrics_frame(), "valid_mae")
    assert list(fig.data[0].x) == [1.0, 2.0] and list(fig.data[0].y) == [0.9, 0.8]


# ---------------------------------------------------------------- dataset summary
def test_summary_figures_carry_the_counts() -> None:
    hist = charts.rating_histogram({1.0: 5, 3.0: 2, 2.0: 7})
    assert list(hist.data[0].x) == [1.0, 2.0, 3.0] and list(hist.data[0].y) == [5, 7, 2]
    tail = charts.long_tail_figure(np.array([1, 9, 4]), np.array([0, 2]), labels={"items": "I", "users": "U"})
    assert list(tail.data[0].y) == [9, 4, 1] and list(tail.data[1].y) == [2, 0.5]  # zeros kept visible on log axis
    assert tail.layout.yaxis.type == "log"
    scenarios = pd.DataFrame({"scenario": ["warm", "user-cold"], "cold_users": [0, 20], "cold_items": [5, 0]})
    shares = charts.cold_share_figure(scenarios, 100, 50, scenario_labels={"warm": "W"}, labels={})
    assert list(shares.data[0].x) == ["W", "user-cold"]
    assert list(shares.data[0].y) == [0.0, 0.2] and list(shares.data[1].y) == [0.1, 0.0]


# ---------------------------------------------------------------- embeddings
def points(n: int = 30) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "x": rng.normal(size=n), "y": rng.normal(size=n), "label": [f"item {i}" for i in range(n)],
        "cohort": ["warm"] * (n - 5) + ["new"] * 5, "price": np.arange(n, dtype=float), "genre": [f"g{i % 20}" for i in range(n)],
    })


def test_embedding_figure_is_webgl_with_one_group_per_value() -> None:
    fig = charts.embedding_figure(points(), color="cohort", hover=["cohort"], group_colours=charts.COHORT_COLOURS)
    assert [tr.type for tr in fig.data] == ["scattergl", "scattergl"]
    assert {tr.name: len(tr.x) for tr in fig.data} == {"warm": 25, "new": 5}
    assert fig.data[1].marker.color == charts.COHORT_COLOURS["new"]


def test_embedding_figure_groups_rare_values_and_scales_numbers() -> None:
    grouped = charts.embedding_figure(points(), color="genre", other_label="other")
    assert len(grouped.data) == charts.MAX_GROUPS and grouped.data[-1].name == "other"
    assert sum(len(tr.x) for tr in grouped.data) == 30
    numeric = charts.embedding_figure(points(), color="price")
    assert len(numeric.data) == 1 and numeric.data[0].marker.showscale


def test_embedding_figure_escapes_data_and_draws_highlights_and_trail() -> None:
    frame = points()
    frame.loc[0, "label"] = "<script>alert(1)</script>"
    trail = pd.DataFrame({"x": [0.0, 1.0], "y": [0.0, 1.0], "label": ["0", "1"]})
    fig = charts.embedding_figure(frame, hover=["genre"], highlight=[0, 3], trail=trail, trail_label="you")
    assert "<script>" not in fig.data[0].text[0] and "&lt;script&gt;" in fig.data[0].text[0]
    assert len(fig.data[1].x) == 2 and fig.data[1].marker.size == 13
    assert fig.data[2].name == "you" and list(fig.data[2].marker.size) == [9, 18]
    assert fig.data[2].type == "scatter"  # SVG: its step labels render without WebGL
    assert fig.layout.xaxis.range is None  # the whole map unless asked to focus


def test_embedding_figure_focus_zooms_on_the_trail() -> None:
    frame = points()
    trail = pd.DataFrame({"x": [0.0, 0.01], "y": [0.0, 0.02], "label": ["0", "1"]})
    fig = charts.embedding_figure(frame, highlight=[0], trail=trail, focus=True)
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    for x, y in [(0.0, 0.0), (0.01, 0.02)]:
        assert x0 <= x <= x1 and y0 <= y <= y1
    assert x1 - x0 < np.ptp(frame["x"])  # zoomed in
    assert x1 - x0 >= np.ptp(frame["x"]) / 5 - 1e-9  # never narrower than a fifth of the map


def test_embedding_figure_legend_uses_group_labels_but_keeps_colours() -> None:
    frame = points().assign(cohort=["warm"] * 25 + ["new"] * 5)
    fig = charts.embedding_figure(frame, color="cohort", group_colours=charts.COHORT_COLOURS, group_labels={"new": "新"})
    assert {tr.name for tr in fig.data} == {"warm", "新"}
    assert next(tr for tr in fig.data if tr.name == "新").marker.color == charts.COHORT_COLOURS["new"]


# ---------------------------------------------------------------- evaluation and lab
def test_shots_figure_one_line_per_method_on_a_log_axis() -> None:
    curve = pd.DataFrame({
        "method": ["run"] * 3 + ["run, no adaptation"] * 3 + ["bias"] * 3,
        "shots": [1, 5, 10] * 3, "mean": [0.9, 0.8, 0.7, 0.85, 0.85, 0.85, 0.88, 0.8, 0.75], "std": [np.nan] * 9,
    })
    fig = charts.shots_figure(curve, highlight="run")
    assert [tr.name for tr in fig.data] == ["run", "run, no adaptation", "bias"]
    assert fig.data[0].line.width == 4 and fig.data[1].line.dash == "dot"
    assert not fig.data[0].error_y.visible
    assert fig.layout.xaxis.type == "log"


def test_inner_loss_chart_and_gain_figure() -> None:
    losses = pd.DataFrame({"set": ["support"] * 3 + ["query"] * 3, "step": [0, 1, 2] * 2, "loss": [1.0, 0.5, 0.2, 2.0, 1.5, 1.4]})
    labels = {"support": "S", "query": "Q"}
    rows = charts.inner_loss_data(losses, labels)
    assert rows[rows["set"] == "Q"]["loss"].tolist() == [2.0, 1.5, 1.4] and set(rows["set"]) == {"S", "Q"}
    spec = charts.inner_loss_spec(labels, x_title="step", y_title="loss")
    assert spec["data"] == {"name": "losses"} and spec["encoding"]["color"]["scale"]["domain"] == ["S", "Q"]
    assert spec == charts.inner_loss_spec(labels, x_title="step", y_title="loss")  # no data in it: the same on every rating
    empty = charts.inner_loss_data(None, labels)
    assert list(empty.columns) == ["set", "step", "loss"] and not len(empty)  # before the first rating: an empty chart
    hist = charts.gain_histogram(np.array([0.1, -0.2, np.nan, 0.3]))
    assert len(hist.data[0].x) == 3


def test_loss_curves_break_where_the_other_phase_ran() -> None:
    rows = [("meta", 1, s, "meta", 1.0, float(s)) for s in (1, 2, 3, 7, 8)]
    fig = charts.loss_figure(pd.DataFrame(rows, columns=["phase", "epoch", "step", "key", "value", "time"]), keys=("meta",))
    x = np.asarray(fig.data[0].x, dtype=float)
    assert np.isnan(x[3]) and list(x[~np.isnan(x)]) == [1, 2, 3, 7, 8]


def test_loss_figure_names_each_phase_once_on_a_line_of_its_own() -> None:
    # Alternating meta / transfer epochs: narrow meta bands, each followed by a transfer band.
    rows = []
    for epoch in range(3):
        base = 10 * epoch
        rows += [("meta", epoch + 1, base + s, "meta", 1.0, float(base + s)) for s in (1, 2)]
        rows += [("transfer", epoch + 1, base + s, "trans", 1.0, float(base + s)) for s in range(3, 11)]
    fig = charts.loss_figure(pd.DataFrame(rows, columns=["phase", "epoch", "step", "key", "value", "time"]), keys=("meta", "trans"),
                             phase_names={"meta": "元学习", "transfer": "迁移"})
    shaded = [shape for shape in fig.layout.shapes if shape.type == "rect"]
    assert len(shaded) == 6  # every span is still shaded
    named = {a.text: a.yshift or 0 for a in fig.layout.annotations}
    assert set(named) == {"元学习", "迁移"} and len(fig.layout.annotations) == 2  # named once each, not once per epoch
    assert named["元学习"] != named["迁移"]  # on different lines: a narrow band's name cannot run into the next one's


def test_validation_figure_ticks_whole_epochs() -> None:
    metrics = pd.DataFrame({"phase": ["validate"] * 2, "key": ["valid_mae"] * 2, "epoch": [1, 2], "step": [10, 20], "value": [0.8, 0.78]})
    fig = charts.validation_figure(metrics, "valid_mae")
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"


def lab_points() -> pd.DataFrame:
    return pd.DataFrame({"x": [0.0, 1.0, 2.0, 9.0], "y": [0.0, 1.0, 0.5, 9.0], "title": ["<b>a</b>", "b", "c", "far"],
                         "group": ["warm", "new", "warm", "warm"]})


def test_lab_map_spec_is_data_free_and_its_view_is_the_frame() -> None:
    spec = charts.lab_map_spec({"warm": "#8d99ae", "new": "#e63946"}, you="you", height=200)
    assert "datasets" not in spec and spec == charts.lab_map_spec({"warm": "#8d99ae", "new": "#e63946"}, you="you", height=200)
    names = [layer["data"]["name"] for layer in spec["layer"]]
    assert set(names) == set(charts.LAB_MAP_DATASETS)
    for layer in spec["layer"]:
        scale = layer["encoding"]["x"]["scale"]
        assert "frame" in scale["domainMin"]["expr"] and "frame" in scale["domainMax"]["expr"]  # the view comes from data
    items = next(layer for layer in spec["layer"] if layer["data"]["name"] == "items")
    assert items["encoding"]["tooltip"] == {"field": "title", "type": "nominal"}  # hover: the title only, as plain text
    assert items["encoding"]["color"]["scale"]["domain"] == ["warm", "new", "you"]


def test_lab_map_datasets_label_only_the_newest_step_and_hold_the_window() -> None:
    trail = pd.DataFrame({"x": [0.1, 0.2, 0.3], "y": [0.1, 0.1, 0.2], "label": ["0", "1", "2"]})
    data = charts.lab_map_datasets(lab_points(), trail, outlined=[2], window=((-1.0, 3.0), (-1.0, 2.0)),
                                   step_hover=["after 0", "after 1", "after <i>2</i>"])
    you = data["trail"]
    assert you["label"].tolist() == ["", "", "2"]  # only the newest step is labelled: labels cannot overlap
    assert you["hover"].tolist()[-1] == "after <i>2</i>" and you["step"].tolist() == [0, 1, 2]
    assert you["size"].iloc[-1] > you["size"].iloc[0]
    assert data["outlined"]["title"].tolist() == ["c"]
    assert data["frame"]["x"].tolist() == [-1.0, 3.0] and data["frame"]["y"].tolist() == [-1.0, 2.0]
    whole = charts.lab_map_datasets(lab_points(), trail)["frame"]  # no window: everything, a little padded
    assert whole["x"].iloc[0] < 0.0 and whole["x"].iloc[1] > 9.0 and whole["y"].iloc[1] > 9.0
