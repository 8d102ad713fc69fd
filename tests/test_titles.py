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
