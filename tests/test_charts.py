"""Figure builders: the data in each figure is the data given, in the right place."""
from __future__ import annotations

import pandas as pd
import pytest

from pages import charts, common


def test_concept_map_has_every_term_in_both_languages() -> None:
    strings = common.load_strings()
    dot = charts.concept_map_dot(strings, "zh")
    for term in ("推荐系统", "元学习", "迁移学习", "模型元学习", "任务元学习", "经验重放", "领域自适应",
                 "特征映射", "对抗训练", "零样本学习", "原型网络", "迁移模型", "推荐模型"):
        assert term in dot
    assert "Meta-learning" in dot
    assert dot.count("->") == len(charts.CONCEPT_EDGES)
    # The chosen language comes first on each node.
    assert '"元学习\nMeta-learning"' in dot
    assert '"Meta-learning\n元学习"' in charts.concept_map_dot(strings, "en")


def test_alternating_schedule_interleaves_phases() -> None:
    seg = charts.schedule_segments("alternating", 2, 1, 3)
    assert list(seg["phase"]) == ["meta", "transfer", "meta", "transfer"]
    assert list(seg["start"]) == [0, 1, 4, 5]
    assert list(seg["end"]) == [1, 4, 5, 8]


def test_sequential_schedule_runs_transfer_first_and_ablation_drops_a_phase() -> None:
    seg = charts.schedule_segments("sequential", 2, 1, 3)
    assert list(seg["phase"]) == ["transfer", "transfer", "meta", "meta"]
    assert seg["end"].iloc[-1] == 2 * 3 + 2 * 1
    only_transfer = charts.schedule_segments("alternating", 3, 1, 2, lambda_meta=0.0)
    assert set(only_transfer["phase"]) == {"transfer"}
    assert only_transfer["end"].iloc[-1] == 6


def test_joint_schedule_has_one_bar_per_epoch() -> None:
    seg = charts.schedule_segments("joint", 4, 1, 2)
    assert list(seg["phase"]) == ["joint"] * 4
    assert seg["end"].iloc[-1] == 8
    with pytest.raises(ValueError, match="unknown schedule"):
        charts.schedule_segments("random", 1, 1, 1)


def test_schedule_figure_draws_one_trace_per_phase() -> None:
    seg = charts.schedule_segments("alternating", 2, 1, 3)
    fig = charts.schedule_figure(seg, {"meta": "M", "transfer": "T"}, x_title="passes")
    assert [tr.name for tr in fig.data] == ["M", "T"]
    meta = fig.data[0]
    assert list(meta.base) == [0, 4] and list(meta.x) == [1, 1]
    assert fig.layout.xaxis.title.text == "passes"
