"""Feature kinds: inference rules, overrides, and encoding into arrays (0 = missing or unseen)."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from metarec_core.features import FeatureEncoder, FeatureSpec, infer_feature_specs, infer_kind


def test_inference_rules():
    n = 40
    table = pd.DataFrame(
        {
            "id": np.arange(n),
            "flag": [True, False] * (n // 2),
            "stars": [1, 2, 3, 4] * (n // 4),  # few distinct integers
            "age": np.arange(18, 18 + n),  # many distinct integers
            "price": np.linspace(1.0, 9.5, n),
            "genres": ["Action|Comedy", "Drama"] * (n // 2),
            "title": [f"Movie number {i}" for i in range(n)],
            "colour": ["red", "blue", "green", "red"] * (n // 4),
        }
    )
    specs = infer_feature_specs(table, id_column="id")
    assert {s.name: s.kind for s in specs} == {
        "flag": "categorical", "stars": "categorical", "age": "numeric", "price": "numeric",
        "genres": "multilabel", "title": "text", "colour": "categorical",
    }
    assert [s.name for s in specs][0] == "flag"  # table order, ID skipped


def test_overrides_and_ignore():
    table = pd.DataFrame({"age": [20, 30, 40], "zip": ["1", "2", "3"]})
    specs = infer_feature_specs(table, overrides={"age": "numeric", "zip": "ignore"})
    assert [(s.name, s.kind) for s in specs] == [("age", "numeric")]
    with pytest.raises(ValueError, match="not in the table: nope"):
        infer_feature_specs(table, overrides={"nope": "text"})
    with pytest.raises(ValueError, match="kind must be one of"):
        FeatureSpec("x", "image")  # type: ignore[arg-type]


def test_missing_values_and_empty_columns():
    assert infer_kind(pd.Series([None, None], dtype=object)) == "categorical"
    assert infer_kind(pd.Series([1.5, None, 2.5])) == "numeric"


def test_encoder_reserves_zero_for_missing_and_unseen():
    train = pd.DataFrame({"gender": ["M", "F", None], "genres": ["A|B", "B", None], "age": [20.0, 40.0, np.nan]})
    specs = (FeatureSpec("gender", "categorical"), FeatureSpec("genres", "multilabel"), FeatureSpec("age", "numeric"))
    enc = FeatureEncoder.fit(train, specs)
    out = enc.transform(train)
    assert out.categorical[:, 0].tolist() == [2, 1, 0]  # vocabulary sorted: F=1, M=2
    assert out.multilabel[0].tolist() == [[1, 2], [2, 0], [0, 0]]
    assert np.allclose(out.numeric[:, 0], [-1.0, 1.0, 0.0])
    new = enc.transform(pd.DataFrame({"gender": ["X"], "genres": ["C|A"], "age": [30.0]}))
    assert new.categorical.tolist() == [[0]] and new.multilabel[0].tolist() == [[0, 1]]
    assert new.numeric.tolist() == [[0.0]]
    assert out.n_rows == 3


def test_encoder_without_table_and_json_round_trip():
    specs = (FeatureSpec("gender", "categorical"), FeatureSpec("title", "text"))
    enc = FeatureEncoder.fit(pd.DataFrame({"gender": ["M", "F"], "title": ["a", "b"]}), specs)
    empty = enc.transform(None, n_rows=4)
    assert empty.categorical.shape == (4, 1) and (empty.categorical == 0).all()
    assert empty.text_columns == ("title",)
    again = FeatureEncoder.from_json(enc.to_json())
    table = pd.DataFrame({"gender": ["F", "M"], "title": ["x", "y"]})
    assert np.array_equal(again.transform(table).categorical, enc.transform(table).categorical)
    assert enc.of_kind("categorical")[0].size == 3


def test_encoder_on_pandas_string_columns(small_scenario):
    data = small_scenario.dataset
    enc = FeatureEncoder.fit(data.item_table, data.item_features)
    out = enc.transform(data.item_table)
    assert out.multilabel[0].shape[0] == data.n_items and out.multilabel[0].max() >= 1
    assert out.numeric.shape == (data.n_items, 1) and abs(float(out.numeric.mean())) < 1e-5
    assert out.text_columns == ("title", "description")
