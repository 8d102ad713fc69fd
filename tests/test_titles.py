"""Item display names: a run's saved titles first, then the dataset's title feature, then the ID."""
from __future__ import annotations

import dataclasses

import numpy as np

from metarec_core.artifacts import load_run
from metarec_core.titles import dataset_titles, run_titles


def test_dataset_titles_fall_back_to_the_id_where_there_is_no_title(tiny_scenario) -> None:
    data = tiny_scenario.dataset
    titles = dataset_titles(data)
    assert len(titles) == data.n_items and titles.iloc[0] == data.item_table["title"].iloc[0]
    table = data.item_table.copy()
    table.loc[2, "title"] = np.nan
    assert dataset_titles(dataclasses.replace(data, item_table=table)).iloc[2] == data.items.external(2)
    untitled = dataclasses.replace(data, item_table=data.item_table.drop(columns=["title"]))
    assert list(dataset_titles(untitled)) == list(data.items.external_ids)


def test_run_titles_prefer_the_titles_saved_with_the_run(tiny_scenario, tiny_run) -> None:
    data = tiny_scenario.dataset
    run = load_run(tiny_run[1])
    saved = run.meta["item_titles"]
    assert run_titles(run) == [saved[i] for i in run.items.external_ids]
    run.meta = {**run.meta, "item_titles": {}}  # a run saved without titles
    by_id = dict(zip(data.items.external_ids, dataset_titles(data)))
    assert run_titles(run, data) == [by_id[i] for i in run.items.external_ids]
    assert run_titles(run) == list(run.items.external_ids)  # no dataset at hand: the IDs


def test_the_name_column_is_found_by_name_then_ending_then_content() -> None:
    import pandas as pd

    from metarec_core.titles import name_column

    assert name_column(pd.DataFrame({"category": ["a", "b"], "product_name": ["Mug", "Pen"]})) == "product_name"
    assert name_column(pd.DataFrame({"category": ["a", "b"], "brand_name": ["Acme", "Bolt"]})) == "brand_name"
    unique_text = pd.DataFrame({"category": ["a", "a", "b"], "label_text": ["Red mug", "Blue pen", "Green cup"]})
    assert name_column(unique_text) == "label_text"
    long_text = pd.DataFrame({"about": ["a long description of this product, " * 3 + str(i) for i in range(5)]})
    assert name_column(long_text) is None
    assert name_column(pd.DataFrame({"code": ["1", "2", "3"], "price": [1.0, 2.0, 3.0]})) is None


def test_names_come_from_the_chosen_column_and_none_shows_ids(tiny_scenario) -> None:
    data = tiny_scenario.dataset
    table = data.item_table.assign(product_name=[f"P{i}" for i in range(data.n_items)]).drop(columns=["title"])
    named = dataclasses.replace(data, item_table=table)
    assert dataset_titles(named).iloc[3] == "P3"
    assert list(dataset_titles(dataclasses.replace(named, item_name_column=""))) == list(data.items.external_ids)
    assert dataclasses.replace(named, item_name_column="").fingerprint != named.fingerprint
