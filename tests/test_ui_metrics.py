"""Metric, method and setting names on screen: every key in words, in both languages; a zero change is neutral."""
from __future__ import annotations

import pytest

from ui.metrics import change, kind_label, method_label, metric_label, setting_label


@pytest.fixture(params=["en", "zh"])
def lang(request, monkeypatch):
    monkeypatch.setattr("ui.i18n.language", lambda: request.param)
    return request.param


def test_metric_keys_read_as_words(lang) -> None:
    for key in ("test_mae", "valid_ndcg@3", "catalogue_ndcg@10", "best_epoch", "test_hit_rate@10", "valid_auc"):
        label = metric_label(key)
        assert "_" not in label and label != key, (lang, key, label)
    assert "@3" in metric_label("valid_ndcg@3")
    assert metric_label("something_new") == "something_new"  # an unknown key is shown, not hidden


def test_methods_settings_and_kinds_read_as_words(lang) -> None:
    for name in ("mf", "global-mean", "bias", "item-mean"):
        assert method_label(name) != name
    assert method_label("my run, no adaptation").startswith("my run, ") and "no adaptation" not in method_label("x, no adaptation") or lang == "en"
    assert method_label("my run") == "my run"
    for key in ("lambda_meta", "num_epochs", "model.hidden", "inner_steps"):
        assert setting_label(key) != key, key
    assert kind_label("transfer") != "transfer" and kind_label(None) == "—"


def test_a_change_that_rounds_to_zero_is_neutral() -> None:
    assert change(0.0001) == {"delta": "±0.000", "delta_color": "off", "delta_arrow": "off"}
    assert change(-0.0004, lower_is_better=True)["delta_color"] == "off"
    assert change(-0.02, lower_is_better=True) == {"delta": "-0.020", "delta_color": "inverse"}
    assert change(0.02)["delta"] == "+0.020"
