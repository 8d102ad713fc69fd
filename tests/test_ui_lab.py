"""The lab's pure parts: the CSV of the lab user's lists, the lists as text and the star buttons' labels."""
from __future__ import annotations

import io

import pandas as pd

from ui import lab


def test_the_lists_csv_holds_the_ratings_then_each_list_in_rank_order() -> None:
    lists = {"this run": pd.DataFrame({"item_id": ["b", "c"], "value": [4.5, 4.25]}),
             "popularity": pd.DataFrame({"item_id": ["c", "a"], "value": [30, 20]})}
    titles = {"a": "Alpha, the film", "b": "=HYPERLINK(\"http://x\")", "c": "[link](http://x) c"}
    out = pd.read_csv(io.BytesIO(lab.lists_csv(lists, [("a", 5.0)], titles)), dtype=str, keep_default_na=False)
    assert out["list"].tolist() == ["ratings", "this run", "this run", "popularity", "popularity"]
    assert out["rank"].tolist() == ["1", "1", "2", "1", "2"] and out["item_id"].tolist() == ["a", "b", "c", "c", "a"]
    assert out["value"].tolist() == ["5", "4.5", "4.25", "30", "20"]
    assert out["title"].tolist()[0] == "Alpha, the film"  # commas quoted, text kept as it is
    assert out["title"].tolist()[1] == "'=HYPERLINK(\"http://x\")"  # a spreadsheet must not run it as a formula
    assert out["title"].tolist()[2] == "[link](http://x) c"


def test_every_star_label_ends_in_a_star() -> None:
    assert [lab.star_label(v, False) for v in (1.0, 4.0, 5.0)] == ["1★", "4★", "5★"]
    assert lab.star_label(1.0, True).endswith(" ★")


def test_a_top_list_is_two_text_columns_one_line_per_item() -> None:
    frame = pd.DataFrame({"item_id": ["a", "b", "c"], "value": [4.5, 4.257, 3.0]})
    titles = {"a": "**bold** [x](http://y)", "b": "two\nlines\r\nhere"}
    names, values = lab.list_columns(frame, titles, ("title", "score"), "%.2f")
    assert names.split("\n") == ["title", "**bold** [x](http://y)", "two lines here", "c"]  # as it is, one line each
    assert values.split("\n") == ["score", "4.50", "4.26", "3.00"]
    back = lab.read_list(names, values)
    assert list(back.columns) == ["title", "score"] and back["score"].tolist() == [4.5, 4.26, 3.0]
    counts = lab.list_columns(frame.assign(value=[583, 509, 7]), {}, ("title", "ratings"), "%d")[1]
    assert counts.split("\n")[1:] == ["583", "509", "7"]


def test_streamlit_reads_the_apps_config_without_a_full_collection_after_each_run() -> None:
    """``streamlit run app.py`` from the repository root reads ``.streamlit/config.toml``: no ``gc.collect(2)`` per run."""
    import tomllib
    from pathlib import Path

    from streamlit import config

    settings = tomllib.loads((Path(__file__).resolve().parents[1] / ".streamlit" / "config.toml").read_text())
    assert settings["runner"]["postScriptGC"] is False
    assert "runner.postScriptGC" in config.get_config_options()  # an option this Streamlit still knows
