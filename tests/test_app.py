"""The dashboard through streamlit.testing: every page renders, uploads work, errors are messages, training shows up."""
from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from metarec_core.synthetic import SyntheticConfig, make_synthetic

ROOT = Path(__file__).resolve().parent.parent
ENTRY = ROOT / "tests" / "app_entry.py"  # app.py, started where AppTest keeps it in st.navigation mode
PAGES = ("data", "train", "runs", "embeddings", "recommendations", "lab", "learn")
TIMEOUT = 60
#: A run trained in seconds on the tiny upload.
TINY = {"num_epochs": 1, "trans_epochs": 1, "meta_batch_size": 8, "support_size": 5, "query_size": 5, "eval_support_size": 5, "device": "cpu"}


def tiny_csv() -> bytes:
    """A small explicit-ratings file (80 users, 50 items) in the upload format."""
    data = make_synthetic(SyntheticConfig(n_users=80, n_items=50, ratings_per_user=(12, 25), seed=3)).dataset
    r = data.ratings
    return pd.DataFrame(
        {
            "userId": [data.users.external(int(u)) for u in r["user"]],
            "movieId": [data.items.external(int(i)) for i in r["item"]],
            "rating": r["rating"].astype(int),
            "timestamp": r["timestamp"],
        }
    ).to_csv(index=False).encode()


def new_app(dataset: str | None = "builtin:synthetic", *, run_id: str | None = None, entry: Path = ENTRY) -> AppTest:
    """The app at its first run on ``dataset`` (the synthetic one: no network needed), with ``run_id`` picked."""
    at = AppTest.from_file(str(entry), default_timeout=TIMEOUT)
    if dataset:
        at.session_state["dataset_key"] = dataset
    if run_id:
        at.session_state["run_id"] = run_id
    return at.run()


def open_page(at: AppTest, name: str) -> AppTest:
    return at.switch_page(str(ROOT / "pages" / f"{name}.py")).run()


def assert_clean(at: AppTest) -> None:
    """No exception element and no error box on the page."""
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def plotly_specs(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def values(array: object) -> np.ndarray:
    """A Plotly array from a figure spec (plain list, or binary ``{"dtype", "bdata"}``)."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]))
    return np.asarray(array)


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty run store and an empty data cache (so nothing is fetched by accident)."""
    monkeypatch.setenv("METAREC_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path / "data"))
    st.cache_resource.clear()
    st.cache_data.clear()
    yield tmp_path / "home"
    st.cache_resource.clear()


def test_a_page_opened_before_st_navigation_ran_comes_back_through_app_py(home: Path) -> None:
    """Started from app.py itself, AppTest runs a page file on its own (as a fresh server does for a first page URL)."""
    at = new_app(entry=ROOT / "app.py")
    open_page(at, "learn")
    assert_clean(at)
    assert at.sidebar.selectbox(key="sidebar_dataset").value == "builtin:synthetic"  # the shared sidebar is there
    assert at.title[0].value.startswith("Learn")  # and the page asked for, not the default one
    assert "_requested_page" not in at.session_state


def test_every_page_renders_without_a_run(home: Path) -> None:
    at = new_app()  # one session visits every page (a new AppTest costs about half a second of package scanning)
    for page in PAGES:
        open_page(at, page)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        assert at.title, f"{page}: every page has a title"
        assert at.sidebar.selectbox(key="sidebar_dataset").value == "builtin:synthetic", page
        if page in ("embeddings", "recommendations", "lab", "runs"):
            assert any(b.key == "onboard_train" for b in at.button), page  # one-click default training on offer


def test_key_widgets_exist(home: Path) -> None:
    at = new_app()
    assert len(at.file_uploader) == 3  # interactions, users, items (Data page is the default)
    open_page(at, "train")
    assert {s.key for s in at.slider} >= {"cfg_lambda_meta", "cfg_lambda_trans", "cfg_inner_steps"}
    from metarec_core.train_config import TrainConfig

    assert at.select_slider(key="cfg_lambda_l0").value == pytest.approx(TrainConfig().lambda_l0)
    assert at.segmented_control(key="cfg_schedule").value == "alternating"
    assert {n.key for n in at.number_input} >= {"cfg_num_epochs", "cfg_meta_epochs", "cfg_trans_epochs"}
    assert at.button(key="train_start")
    assert r"\mathcal{L}_{\mathrm{total}}" in at.latex[0].value
    timeline = plotly_specs(at)[0]
    assert {tr["name"] for tr in timeline["data"]} == {"meta", "transfer"}


def test_preset_and_sliders_drive_formula_and_timeline(home: Path) -> None:
    at = open_page(new_app(), "train")
    at.pills(key="train_preset").set_value("transfer only").run()
    assert at.slider(key="cfg_lambda_meta").value == 0.0
    assert "0\\cdot" in at.latex[0].value
    assert {tr["name"] for tr in plotly_specs(at)[0]["data"]} == {"transfer"}
    at.segmented_control(key="cfg_schedule").set_value("joint").run()
    at.slider(key="cfg_lambda_meta").set_value(0.5).run()
    assert {tr["name"] for tr in plotly_specs(at)[0]["data"]} == {"joint"}
    assert_clean(at)


def test_train_page_says_when_the_default_trains_for_new_items(home: Path) -> None:
    from metarec_core.store import RunStore

    at = open_page(new_app(), "train")  # the built-in synthetic data: every item rated, nothing to say
    assert at.session_state["cfg_scenario"] == "auto" and not any("no interactions yet" in i.value for i in at.info)
    catalogue = make_synthetic(SyntheticConfig(n_users=60, n_items=40, ratings_per_user=(5, 20), cold_items=10, seed=2)).dataset
    ref = "stored:" + RunStore(home).save_dataset(catalogue, name="new items")
    at = open_page(new_app(ref), "train")
    assert any("10 of 50 items in this dataset have no interactions yet" in i.value for i in at.info)
    assert_clean(at)


def test_language_switch_translates_every_page(home: Path) -> None:
    at = new_app()
    at.segmented_control(key="lang").set_value("zh").run()
    for page in PAGES:
        open_page(at, page)
        assert_clean(at)
        assert any("\u4e00" <= ch <= "\u9fff" for ch in at.title[0].value), page
    assert at.session_state["lang"] == "zh"


def test_upload_maps_columns_and_saves_a_dataset(home: Path) -> None:
    at = new_app()
    at.file_uploader(key="upload_interactions").upload("my ratings.csv", tiny_csv(), "text/csv").run()
    assert_clean(at)
    assert at.selectbox(key="map_user").value == "userId"
    assert at.selectbox(key="map_item").value == "movieId"
    assert at.selectbox(key="map_rating").value == "rating"
    assert any("80 users" in s.value for s in at.success)
    at.button(key="save_dataset").click().run()
    assert at.session_state["dataset_key"].startswith("stored:")
    assert any("Rating histogram" in m.value for m in at.markdown)
    assert at.sidebar.selectbox(key="sidebar_dataset").value == at.session_state["dataset_key"]
    assert_clean(at)


def test_changing_the_mapping_revalidates(home: Path) -> None:
    at = new_app()
    at.file_uploader(key="upload_interactions").upload("r.csv", tiny_csv(), "text/csv").run()
    at.selectbox(key="map_rating").set_value("—").run()
    # A rating-like column left unmapped: the data are not made implicit until the user says so.
    assert not at.success and any("look like ratings" in w.value for w in at.warning)
    at.checkbox(key="map_implicit_ok").check().run()
    assert any("implicit" in s.value for s in at.success)
    at.selectbox(key="map_item").set_value("userId").run()  # the same column for two roles
    assert at.error and "two roles" in at.error[0].value
    assert not at.exception


def test_a_declared_rating_scale_refuses_ratings_outside_it_with_their_row(home: Path) -> None:
    at = new_app()
    log = b"user,item,rating\n" + b"".join(f"u{u},i{i},{1 + (u + i) % 5}\n".encode() for u in range(12) for i in range(6))
    at.file_uploader(key="upload_interactions").upload("stars.csv", log, "text/csv").run()
    assert any("12 users" in s.value for s in at.success)
    at.number_input(key="map_scale_low").set_value(1.0).run()
    assert not at.success and any("both ends" in i.value for i in at.info)  # half a scale: nothing is built yet
    at.number_input(key="map_scale_high").set_value(4.0).run()  # 5-star ratings now lie outside the declared scale
    assert not at.success and at.error and "row" in at.error[0].value and "5" in at.error[0].value
    at.number_input(key="map_scale_high").set_value(5.0).run()
    assert any("12 users" in s.value for s in at.success)
    assert_clean(at)


def test_a_log_with_other_names_maps_every_column_and_names_come_from_product_name(home: Path) -> None:
    at = new_app()
    log = b"customer,sku,stars,ts\nc1,s1,4,1600000000\nc2,s1,2,1600000100\nc1,s2,5,1600000200\nc3,s2,1,1600000300\n"
    at.file_uploader(key="upload_interactions").upload("orders.csv", log, "text/csv").run()
    at.file_uploader(key="upload_items").upload("products.csv", b"sku,product_name,category\ns1,Red mug,kitchen\ns2,Blue pen,office\n", "text/csv").run()
    assert_clean(at)
    assert {k: at.selectbox(key=f"map_{k}").value for k in ("user", "item", "rating", "timestamp")} == {
        "user": "customer", "item": "sku", "rating": "stars", "timestamp": "ts"}
    assert at.selectbox(key="map_item_name").value == "product_name"
    assert any("3 users, 2 items, 4 ratings" in s.value for s in at.success)


def test_a_failed_guess_asks_in_the_apps_words_and_goes_once_chosen(home: Path) -> None:
    at = new_app()
    at.file_uploader(key="upload_interactions").upload("orders.csv", b"who,sku,stars,ts\na,x,4,1600000000\nb,x,2,1600000100\na,y,5,1600000200\n", "text/csv").run()
    assert [at.selectbox(key=f"map_{k}").value for k in ("user", "item", "rating", "timestamp")] == [None, "sku", "stars", "ts"]
    message = at.error[0].value
    assert "no column of user IDs" in message and "Column mapping" in message
    assert "ColumnMapping" not in message and "--user-col" not in message
    at.selectbox(key="map_user").set_value("who").run()
    assert_clean(at)  # the stale message is gone once the column is chosen
    assert any("2 users, 2 items, 3 ratings" in s.value for s in at.success)


def test_a_new_file_gets_its_own_detected_mapping_after_a_failed_one(home: Path) -> None:
    at = new_app()
    at.file_uploader(key="upload_interactions").upload("missing.csv", b"user_id,rating\n1,4\n2,5\n", "text/csv").run()
    assert at.error and at.selectbox(key="map_item").value is None
    at.file_uploader(key="upload_interactions").upload("good.csv", tiny_csv(), "text/csv").run()
    assert_clean(at)
    mapping = {k: at.selectbox(key=f"map_{k}").value for k in ("user", "item", "rating", "timestamp")}
    assert mapping == {"user": "userId", "item": "movieId", "rating": "rating", "timestamp": "timestamp"}
    assert any("ratings" in s.value and "implicit" not in s.value for s in at.success)


@pytest.mark.parametrize(
    "content, expected",
    [
        (b"", "empty"),
        (b"a,b,c\n1,2,3\n", "user IDs"),
        (b"user_id,item_id,rating\n1,10,4\n2,10,abc\n", "rating"),
        (b"user_id,item_id,rating\n1,10,4\n1,11,3\n2,10,5\n2,12,1\n3,11,999\n3,12,4\n", "far outside the scale of the others"),
        (b"user_id,item_id,rating\n1,10,4\n1,11,3\n2,10,1e30\n", "beyond ±1,000,000"),
        (b"user_id,item_id,rating\n1,10,4\n1,11,3\n1,12,5\n", "needs at least 2 users"),
    ],
)
def test_bad_upload_shows_an_error_not_a_traceback(home: Path, content: bytes, expected: str) -> None:
    at = new_app()
    at.file_uploader(key="upload_interactions").upload("bad.csv", content, "text/csv").run()
    assert not at.exception
    assert at.error, "a bad file must show an error"
    message = at.error[0].value.replace("\\", "")  # shown Markdown-escaped
    assert expected in message and "Traceback" not in message
    assert "Next step" in message or "rename" in message or "choose" in message
    assert not any("Valid" in s.value for s in at.success)


def test_an_upload_too_big_for_the_memory_says_how_big_and_what_to_do(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metarec_core import memory

    at = new_app()
    assert any("200 MB" in c.value and "command line" in c.value for c in at.caption)  # the upload limit, said up front
    content = tiny_csv()
    monkeypatch.setattr(memory, "available_ram", lambda: 2 * len(content))
    at.file_uploader(key="upload_interactions").upload("big.csv", content, "text/csv").run()
    assert not at.exception and at.error
    message = at.error[0].value
    assert "KB" in message and "command line" in message and "sample" in message and "more memory" in message


def test_a_row_error_says_which_line_of_the_file_it_is(home: Path) -> None:
    at = new_app()
    at.file_uploader(key="upload_interactions").upload("bad.csv", b"user_id,item_id,rating\n1,10,4\n2,10,abc\n", "text/csv").run()
    message = at.error[0].value
    assert "row 2" in message and "line 3" in message


def test_uploaded_text_is_never_markup(home: Path) -> None:
    at = new_app()
    evil = b"user_id,item_id,rating\n<b>1</b>,10,4\n2,10,5\n3,11,2\n"
    at.file_uploader(key="upload_interactions").upload("<script>x</script>.csv", evil, "text/csv").run()
    assert not at.exception
    assert not at.get("html")


@pytest.mark.slow
def test_an_implicit_run_is_shown_with_auc_not_rating_metrics(home: Path) -> None:
    from metarec_core import jobs
    from metarec_core.store import RunStore

    implicit = pd.read_csv(io.BytesIO(tiny_csv())).drop(columns=["rating"]).to_csv(index=False).encode()
    at = new_app()
    at.file_uploader(key="upload_interactions").upload("clicks.csv", implicit, "text/csv").run()
    assert any("implicit" in s.value for s in at.success)
    at.button(key="save_dataset").click().run()
    assert_clean(at)
    assert not any("Rating histogram" in m.value for m in at.markdown)  # one bar at 1 says nothing
    store = RunStore()
    run_id = jobs.submit(store, TINY, at.session_state["dataset_key"], name="clicks run")
    assert jobs.run_worker(store, run_id) == "completed"
    at.session_state["run_id"] = run_id
    at = open_page(at, "runs")
    assert_clean(at)
    table = at.dataframe[0].value
    assert "AUC" in table.columns and "MAE" not in table.columns and 0.0 < float(table["AUC"].iloc[0]) <= 1.0
    at = open_page(at, "lab")
    assert_clean(at)
    stars = [b for b in at.button if str(b.key).startswith("lab_star_")]
    assert len(stars) == 6 and all(b.label == "liked ★" for b in stars)  # one button per card: liked
    stars[0].click().run()
    assert_clean(at)
    assert any("items you liked" in c.value for c in at.caption)  # not the rating-query caption
    assert at.metric[0].label == "items you liked" and at.metric[0].value == "1"
    assert text_list(at, "lab-list-mine") is None and any(t.value.startswith("title\n") for t in at.text)  # no column of 1s
    at = open_page(at, "recommendations")
    assert_clean(at)
    assert "interactions" in at.subheader[-1].value and "rating" not in list(at.dataframe[-1].value.columns)


def test_failed_movielens_fetch_falls_back_to_synthetic_with_a_note(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from metarec_core import movielens
    from metarec_core.errors import DataError

    def offline(root):
        raise DataError("could not download recbole==1.2.1 (offline)")

    monkeypatch.setattr(movielens, "fetch_recbole_files", offline)
    monkeypatch.delenv("METAREC_ML100K_DIR", raising=False)
    at = new_app(dataset=None)
    assert not at.exception
    assert at.session_state["dataset_key"] == "builtin:synthetic"
    assert any("offline" in i.value for i in at.sidebar.info)
    assert [m.value for m in at.metric][:2] == ["300", "200"]  # the synthetic dataset is shown


# ---------------------------------------------------------------- with a trained run
@pytest.fixture(scope="session")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One store for the tests of trained runs: the tiny upload as a saved dataset and one run trained on it for one epoch."""
    from metarec_core import jobs
    from metarec_core.loaders import build_dataset, detect_columns, read_table
    from metarec_core.store import RunStore

    base = tmp_path_factory.mktemp("shared")
    store = RunStore(base / "home")
    table = read_table(tiny_csv(), name="tiny.csv")
    ref = "stored:" + store.save_dataset(build_dataset(table, columns=detect_columns(table), name="tiny"), name="tiny")
    run_id = jobs.submit(store, TINY, ref, name="tiny <b>run</b>")
    assert jobs.run_worker(store, run_id) == "completed"  # in this process: about a second
    return {"home": base / "home", "data": base / "data", "dataset": ref, "run_id": run_id}


@pytest.fixture(scope="module")
def trained(shared_store: dict) -> Iterator[dict]:
    """One app session on the shared store, with its dataset and run picked; tests that change the pick put it back."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("METAREC_HOME", str(shared_store["home"]))
        mp.setenv("METAREC_DATA_DIR", str(shared_store["data"]))
        yield {"at": new_app(shared_store["dataset"], run_id=shared_store["run_id"]), **shared_store}


@pytest.mark.slow
def test_a_run_started_on_the_train_page_trains_in_the_background_and_shows_its_metrics(home: Path) -> None:
    from metarec_core import jobs
    from metarec_core.store import RunStore

    at = new_app()
    at.file_uploader(key="upload_interactions").upload("tiny.csv", tiny_csv(), "text/csv").run()
    at.button(key="save_dataset").click().run()
    open_page(at, "train")
    for key, value in (("cfg_num_epochs", 1), ("cfg_meta_epochs", 1), ("cfg_trans_epochs", 1), ("cfg_eval_support_size", 5),
                       ("cfg_support_size", 5), ("cfg_query_size", 5)):
        at.number_input(key=key).set_value(value).run()
    at.text_input(key="train_run_name").set_value("tiny <b>run</b>").run()
    at.button(key="train_start").click().run()
    assert_clean(at)
    record = jobs.wait(RunStore(), at.session_state["run_id"], timeout=240)  # a worker process trains it
    assert record.status == "completed", record.error
    at = at.run()
    assert_clean(at)
    nodes = list(at.main)
    live = next(n for n, node in enumerate(nodes) if node.type == "header" and node.value == "Current run")
    start = next(n for n, node in enumerate(nodes) if node.type == "button" and node.key == "train_start")
    assert live < start  # its progress came first while it trained, and keeps its place once it has finished
    final = at.dataframe[-1].value
    assert {"MAE (test, new users)", "RMSE (test, new users)", "nDCG@3 (test, new users)"} <= set(final.columns)
    assert 0.0 < float(final["MAE (test, new users)"].iloc[0]) < 2.0
    specs = plotly_specs(at)
    loss = next(s for s in specs if any(tr.get("name") == "L_meta" for tr in s["data"]))
    assert len(values(loss["data"][0]["x"])) > 0  # the loss chart has points
    assert at.get("progress")[0].proto.value == 100


def test_runs_page_compares_and_lists_the_run(trained: dict) -> None:
    at = open_page(trained["at"], "runs")
    assert_clean(at)
    table = at.dataframe[0].value
    assert "tiny <b>run</b>" in set(table.iloc[:, 0])  # shown as text, not markup
    assert table["MAE"].map(lambda v: 0.0 < float(v) < 2.0).all()  # a number, not "None" or a dash
    assert at.multiselect(key="runs_selected").value[0] == trained["run_id"]
    names = [tr["name"] for s in plotly_specs(at) for tr in s["data"]]
    assert "L_meta" in names and "L_trans" in names


def test_runs_page_shows_baselines_beside_final_metrics_without_an_evaluation(trained: dict) -> None:
    at = open_page(trained["at"], "runs")
    assert_clean(at)
    final = next(d.value for d in at.dataframe if "MAE (test, new users)" in d.value.columns and "ID" not in d.value.columns)
    rows = set(final.index)
    assert {"bias (item + user offset)", "ALS + fold-in"} <= rows  # kept with the run when it completed
    assert final.loc["ALS + fold-in", "MAE (test, new users)"] > 0
    loss = next(s for s in plotly_specs(at) if any(tr.get("name") == "L_meta" for tr in s["data"]))
    labels = {a["text"] for a in loss["layout"].get("annotations", [])}
    assert labels & {"meta", "transfer"}  # the phases are shaded and named


def test_runs_page_filters_the_table_and_pins_a_default_run(trained: dict) -> None:
    from metarec_core import jobs
    from metarec_core.default_runs import default_run, pinned_run
    from metarec_core.store import RunStore

    store = RunStore()
    side = jobs.submit(store, {**TINY, "lambda_meta": 0.0}, trained["dataset"], name="transfer side run")
    assert jobs.run_worker(store, side) == "completed"
    assert default_run(store, trained["dataset"]) == trained["run_id"]  # newer, but not of the default kind
    at = open_page(trained["at"], "runs")
    assert any("New sessions open on this run" in c.value for c in at.caption)
    at.text_input(key="runs_filter").set_value("no such run").run()
    assert_clean(at)
    assert any("No run matches" in i.value for i in at.info)
    at.text_input(key="runs_filter").set_value("tiny").run()
    assert "tiny <b>run</b>" in set(at.dataframe[0].value.iloc[:, 0])
    at.text_input(key="runs_filter").set_value("").run()
    at.selectbox(key="manage_pick").set_value(side).run()
    at.button(key=f"default_{side}").click().run()
    assert_clean(at)
    try:
        assert pinned_run(store, trained["dataset"]) == side
    finally:
        store.delete(side)
        at.selectbox(key="manage_pick").set_value(trained["run_id"]).run()


def test_runs_page_says_when_it_shows_runs_of_other_datasets(trained: dict) -> None:
    at = trained["at"]
    at.session_state["dataset_key"] = "builtin:synthetic"  # a dataset with no runs
    try:
        at = open_page(at, "runs")
        assert_clean(at)
        assert any("No runs on the current dataset" in i.value for i in at.info)
        assert "tiny <b>run</b>" in set(at.dataframe[0].value.iloc[:, 0])
    finally:
        at.session_state["dataset_key"] = trained["dataset"]
        at.session_state["run_id"] = trained["run_id"]
    at = open_page(at, "runs")
    assert not any("No runs on the current dataset" in i.value for i in at.info)


def test_runs_page_deletes_a_run_and_keeps_the_others(trained: dict) -> None:
    from metarec_core import jobs
    from metarec_core.store import RunStore

    store = RunStore()
    doomed = jobs.submit(store, TINY, trained["dataset"], name="to delete")
    assert jobs.run_worker(store, doomed) == "completed"
    assert jobs.start_evaluation(store, doomed, shots=(1, 3, 5, 10))  # still running when the button is pressed
    pid = store.get_job(doomed, kind="evaluate").pid
    at = open_page(trained["at"], "runs")
    at.selectbox(key="manage_pick").set_value(doomed).run()
    at.checkbox(key=f"delete_confirm_{doomed}").check().run()
    at.button(key="delete_button").click().run()
    assert_clean(at)
    remaining = {r.id for r in store.list_runs()}
    assert doomed not in remaining and trained["run_id"] in remaining
    assert not jobs.pid_alive(pid, doomed)  # its evaluation was stopped, not left to write the folder back
    assert not store.run_dir(doomed).exists()


def test_shots_section_starts_on_the_run_picked_in_the_sidebar(trained: dict) -> None:
    from metarec_core import jobs
    from metarec_core.store import RunStore

    store = RunStore()
    newer = jobs.submit(store, TINY, trained["dataset"], name="newer run")
    assert jobs.run_worker(store, newer) == "completed"
    try:
        at = open_page(trained["at"], "runs")
        at.multiselect(key="runs_selected").set_value([newer, trained["run_id"]]).run()
        assert_clean(at)
        assert at.session_state["run_id"] == trained["run_id"]
        assert at.selectbox(key="shots_run").value == trained["run_id"]  # not the newest run
    finally:
        store.delete(newer)


def test_embeddings_page_shows_pca_and_search(trained: dict) -> None:
    at = open_page(trained["at"], "embeddings")
    assert_clean(at)
    scatter = plotly_specs(at)[0]
    assert all(tr["type"] == "scattergl" for tr in scatter["data"])
    assert sum(len(tr["text"]) for tr in scatter["data"]) == 50  # one point per item (x, y are binary-encoded)
    at.text_input(key="emb_search_items").set_value("1").run()
    assert_clean(at)
    neighbours = at.dataframe[-1].value
    assert len(neighbours) == 10
    at.segmented_control(key="emb_kind").set_value("users").run()
    assert sum(len(tr["text"]) for tr in plotly_specs(at)[0]["data"]) == 80
    assert_clean(at)


def test_recommendations_before_and_after_adaptation(trained: dict) -> None:
    at = open_page(trained["at"], "recommendations")
    assert_clean(at)
    assert at.segmented_control(key="recs_cohort").value == "new"
    tops = at.dataframe[0:2]  # before and after; the history comes last
    assert len(tops) == 2 and all(len(d.value) == 10 for d in tops)
    assert len(at.metric) == 2  # query MAE and nDCG@3 with their change


def star_buttons(at: AppTest) -> list:
    """The lab's star buttons, card by card (five per card on a 1-5 scale)."""
    return [b for b in at.button if str(b.key).startswith("lab_star_")]


def text_list(at: AppTest, key: str) -> pd.DataFrame | None:
    """A list the lab draws as two text columns in the container ``key`` (``None`` when there is none)."""
    from ui.lab import read_list

    try:
        block = at.main.get_by_key(key)
    except KeyError:
        return None
    return read_list(*[node.value for node in block if getattr(node, "type", "") == "text"])


def lab_lists(at: AppTest) -> list[pd.DataFrame]:
    """The lab's top lists (this run, the other run when there is one, popularity), not the list of your ratings."""
    found = [text_list(at, f"lab-list-{name}") for name in ("this", "other", "popular")]
    return [frame for frame in found if frame is not None]


def vega_charts(at: AppTest) -> list[tuple[dict, dict[str, pd.DataFrame]]]:
    """Each Vega-Lite chart's spec and its named datasets."""
    from streamlit import dataframe_util

    return [(json.loads(el.proto.spec), {d.name: dataframe_util.convert_arrow_bytes_to_pandas_df(d.data.data) for d in el.proto.datasets})
            for el in at.get("vega_lite_chart")]


def lab_chart(at: AppTest, dataset: str) -> tuple[dict, dict[str, pd.DataFrame]]:
    """The lab chart that draws the named dataset (``trail``: the map, ``losses``: the loss chart)."""
    return next((spec, data) for spec, data in vega_charts(at) if dataset in data)


def test_lab_adapts_on_every_rating(trained: dict) -> None:
    from metarec_core.train_config import TrainConfig

    at = open_page(trained["at"], "lab")
    assert_clean(at)
    start = lab_lists(at)[0]  # no ratings yet: the meta-learned start
    assert at.slider(key="lab_replay").proto.disabled  # there from the start, so nothing moves when it is needed
    rated = []
    for n in range(1, 4):
        buttons = star_buttons(at)
        assert len(buttons) == 6 * 5 and all(b.label.endswith("★") for b in buttons)  # six cards, 1★ … 5★ each
        button = buttons[5 * (n - 1) + (0 if n % 2 else 4)]  # the first star, then the fifth, of the next card
        rated.append(button.key)
        button.click().run()
        assert_clean(at)
        assert at.metric[0].value == str(n)
        assert float(at.metric[1].value.split()[0]) < 1000  # adapt + rank, milliseconds
        mine = text_list(at, "lab-list-mine")
        assert len(mine) == n and mine["rating"].tolist()[-1] == (1.0 if n % 2 else 5.0)  # your ratings
        losses = lab_chart(at, "losses")[1]["losses"]
        assert {"support", "query"} <= {name.split()[0] for name in losses["set"]}  # two lines from the first rating
    top = lab_lists(at)[0]
    assert not top.equals(start)  # the recommendations moved with the ratings
    y = losses[losses["set"].str.startswith("support")].sort_values("step")["loss"].to_numpy()
    assert len(y) == 1 + int(TrainConfig().inner_steps) and y[-1] <= y[0]  # adaptation lowers the support loss
    assert at.slider(key="lab_replay").value == 3 and not at.slider(key="lab_replay").proto.disabled
    spec, the_map = lab_chart(at, "trail")
    trail = the_map["trail"]
    xy = trail[["x", "y"]].to_numpy(float)
    assert xy.shape == (4, 2) and np.ptp(xy, axis=0).max() > 0  # one point per number of ratings, and it moves
    assert [v for v in trail["label"] if v] == ["3"]  # one label (the newest step): labels never overlap
    assert trail["hover"].tolist()[-1] == "you after 3 ratings" and trail["hover"].nunique() == 4  # each step's number on hover
    (x0, x1), (y0, y1) = the_map["frame"]["x"].tolist(), the_map["frame"]["y"].tolist()  # the view: zoomed in on the path
    assert x1 - x0 < np.ptp(the_map["items"]["x"]) or y1 - y0 < np.ptp(the_map["items"]["y"])
    assert ((x0 < xy[:, 0]) & (xy[:, 0] < x1) & (y0 < xy[:, 1]) & (xy[:, 1] < y1)).all()  # the whole path in view
    items = the_map["items"][["x", "y"]].to_numpy(float)
    gaps = np.sqrt(((items[:, None, :] - xy[None, :, :]) ** 2).sum(-1)).min(axis=1)
    near = items[np.argsort(gaps)[:20]]  # the 20 items nearest to the path are in view too
    assert ((x0 <= near[:, 0]) & (near[:, 0] <= x1) & (y0 <= near[:, 1]) & (near[:, 1] <= y1)).all()
    outlined = the_map["outlined"]
    assert len(outlined) == len(top) and set(outlined["title"]) == set(top["title"])  # the current top recommendations are outlined
    o = outlined[["x", "y"]].to_numpy(float)
    assert ((x0 <= o[:, 0]) & (o[:, 0] <= x1) & (y0 <= o[:, 1]) & (o[:, 1] <= y1)).all()
    chart_specs = [s for s, _ in vega_charts(at)]
    at.slider(key="lab_replay").set_value(2).run()
    assert [s for s, _ in vega_charts(at)] == chart_specs  # a new step is new data in the same charts, never a new chart
    at.slider(key="lab_replay").set_value(1).run()
    assert at.metric[0].value == "1" and len(lab_lists(at)[0]) == len(top)  # replay: the model after one rating
    at.button(key="lab_reset").click().run()
    assert at.metric[0].value == "0"


def test_lab_lists_ranked_in_a_stars_callback_are_those_a_rerun_ranks(trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from ui import lab

    calls = []
    rank = lab.ranked_lists
    monkeypatch.setattr(lab, "ranked_lists", lambda *args: calls.append(args) or rank(*args))
    at = open_page(trained["at"], "lab")
    at.button(key="lab_reset").click().run()
    for n in (4, 0):  # 5★ on the first card, then 1★ on the next
        calls.clear()
        star_buttons(at)[n].click().run()
        clicked = lab_lists(at)
        assert len(calls) == 1 and "lab_ranked" not in at.session_state  # ranked once, in the callback; taken by its rerun
        at.run()  # a rerun without a click ranks the same ratings afresh
        again = lab_lists(at)
        assert len(calls) == 2
        assert len(clicked) == len(again) and all(a.equals(b) for a, b in zip(clicked, again))
    assert at.metric[0].value == "2"
    at.button(key="lab_reset").click().run()


def test_lab_gives_new_lists_a_head_start_and_unchanged_lists_none(trained: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    import time
    import types

    from ui import lab

    waits = []  # the lab module's own sleeps only (the test harness sleeps too)
    monkeypatch.setattr(lab, "time", types.SimpleNamespace(sleep=waits.append, perf_counter=time.perf_counter))
    at = open_page(trained["at"], "lab")
    at.button(key="lab_reset").click().run()
    waits.clear()
    star_buttons(at)[4].click().run()
    assert waits == [lab.LISTS_HEAD_START_S]  # a rating: new lists, sent ahead of the rest
    at.toggle(key="lab_zoom").set_value(False).run()
    at.run()
    assert waits == [lab.LISTS_HEAD_START_S]  # the zoom toggle and a plain rerun leave the lists as they were: no wait
    at.toggle(key="lab_zoom").set_value(True).run()
    at.button(key="lab_reset").click().run()
    assert waits == [lab.LISTS_HEAD_START_S] * 2  # no ratings: the lists change again


def test_lab_asks_first_about_the_items_the_core_ranks_most_informative(trained: dict) -> None:
    from metarec_core import elicitation
    from ui import cache, lab

    at = open_page(trained["at"], "lab")
    at.button(key="lab_reset").click().run()
    data = lab.lab_data(trained["run_id"], cache.weights_stamp(trained["run_id"]))

    def cards() -> list[int]:
        """Item rows of the cards in reading order (two columns: row by row, left to right)."""
        rows = [int(str(b.key).split("_")[2]) for b in star_buttons(at)][::5]
        left, right = rows[: (len(rows) + 1) // 2], rows[(len(rows) + 1) // 2:]
        return [r for pair in zip(left, right + [None]) for r in pair if r is not None]

    def expected(rated: list[int]) -> list[int]:
        among = np.flatnonzero(data.known_share > 0)
        return elicitation.next_items(data.item_vectors, data.known_share, rated, prior=data.prior, noise_var=data.noise_var,
                                      k=6, among=among)["item"].tolist()

    assert cards() == expected([]) and any(c.value.startswith("Ask me next") for c in at.caption)
    first = cards()[0]
    star_buttons(at)[3].click().run()  # 4★ on the first suggestion
    assert first not in cards() and cards() == expected([first])  # asked once, then the next most informative
    at.text_input(key="lab_search").set_value("1").run()  # a search shows its hits instead, most rated first
    hits = cards()
    assert hits and all("1" in data.items["label"].iat[r] for r in hits)
    assert any("matching" in c.value for c in at.caption)
    assert [b.proto.label for b in at.get("download_button")] == ["Lists (CSV)"]
    at.text_input(key="lab_search").set_value("").run()
    at.button(key="lab_reset").click().run()


#: Titles that Markdown, HTML or LaTeX would turn into an image fetch, a link, bold text or a formula.
PAYLOADS = ("![pic](http://127.0.0.1:1/x.png) item13", "[clickme](http://127.0.0.1:1/) item2", r"$\href{http://127.0.0.1:1/}{tex}$ item3",
            "<b>bold</b> item4", "**star** _under_ item5")


def test_uploaded_titles_are_plain_text_everywhere_in_the_lab(home: Path) -> None:
    from metarec_core import jobs
    from metarec_core.loaders import build_dataset, read_table
    from metarec_core.store import RunStore
    from ui.markup import plain

    ratings = pd.read_csv(io.BytesIO(tiny_csv()))
    popular = ratings["movieId"].value_counts().index[: len(PAYLOADS)]  # on every top list, and searchable
    items = pd.DataFrame({"movieId": ratings["movieId"].unique()})
    items["title"] = [PAYLOADS[list(popular).index(i)] if i in popular else f"item {i}" for i in items["movieId"]]
    store = RunStore()
    dataset = build_dataset(read_table(tiny_csv(), name="r.csv"), None, read_table(items.to_csv(index=False).encode(), name="i.csv"), name="evil")
    ref = "stored:" + store.save_dataset(dataset, name="evil")
    run_id = jobs.submit(store, TINY, ref, name="evil run")
    assert jobs.run_worker(store, run_id) == "completed"
    at = open_page(new_app(ref, run_id=run_id), "lab")
    star_buttons(at)[0].click().run()
    elsewhere = jobs.submit(store, TINY, "builtin:synthetic", name="elsewhere")
    assert jobs.run_worker(store, elsewhere) == "completed"
    at.session_state["dataset_key"], at.session_state["run_id"] = "builtin:synthetic", elsewhere
    at = open_page(at, "lab")  # a run on another catalogue: the ratings of this one's items do not carry over
    assert_clean(at)
    assert at.metric[0].value == "0"
    at.session_state["dataset_key"], at.session_state["run_id"] = ref, run_id
    at = open_page(at, "lab")
    for payload in PAYLOADS:
        at.text_input(key="lab_search").set_value(payload.split()[-1]).run()  # its card
        assert_clean(at)
        rendered = [e.value for kind in ("markdown", "caption", "info", "warning", "subheader") for e in at.get(kind)]
        rendered += [str(cell) for table in at.table for cell in np.ravel(table.value.to_numpy())]  # st.table reads Markdown
        assert not [text for text in rendered if payload in text], payload  # never raw where Markdown is read
        assert not [text for text in rendered if plain(payload) in text], payload  # nor escaped: a bare URL still becomes a link
        assert payload in [e.value.split("\n")[0] for e in at.get("text")], payload  # its card shows it as plain text
        assert any(payload in set(frame.iloc[:, 0]) for frame in lab_lists(at))  # the lists show it as it is
        spec, the_map = lab_chart(at, "trail")
        assert payload in set(the_map["items"]["title"])  # the map's data hold it as it is: Vega draws text, never markup
        assert all(layer["mark"]["type"] != "text" or layer["data"]["name"] == "trail" for layer in spec["layer"])


def test_lab_labels_each_column_by_what_its_run_is(trained: dict) -> None:
    from metarec_core import jobs
    from metarec_core.store import RunStore
    from ui.markup import plain

    store = RunStore()
    tiny = {**TINY, "lambda_meta": 0.0}
    transfer = jobs.submit(store, tiny, trained["dataset"], name="only transfer")
    assert jobs.run_worker(store, transfer) == "completed"
    try:
        at = trained["at"]
        at.session_state["run_id"] = transfer
        at = open_page(at, "lab")
        assert_clean(at)
        text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
        assert "Transfer only (λ1 = 0) (this run" in text
        assert "Meta + transfer (another run" in text and plain("tiny <b>run</b>") in text  # compared with the meta + transfer run
        assert len(lab_lists(at)) == 3 and not at.table  # this run, the other run, popularity
        at.session_state["run_id"] = trained["run_id"]
        at = at.run()
        text = " ".join(m.value for m in at.markdown) + " ".join(c.value for c in at.caption)
        assert "Meta + transfer (this run" in text and "Transfer only (λ1 = 0) (another run" in text and "only transfer" in text
    finally:
        store.delete(transfer)
        trained["at"].session_state["run_id"] = trained["run_id"]


def test_lab_does_not_offer_a_second_comparison_run_while_one_is_queued(trained: dict) -> None:
    from metarec_core import jobs
    from metarec_core.store import RunStore

    store = RunStore()
    tiny = {**TINY, "lambda_meta": 0.0}
    queued = jobs.submit(store, tiny, trained["dataset"], name="queued transfer")  # queued, not started
    try:
        at = open_page(trained["at"], "lab")
        assert_clean(at)
        assert any("is queued or training" in c.value for c in at.caption)
        assert not [b for b in at.button if b.key == "lab_train_other"]
    finally:
        store.delete(queued)
    at = open_page(trained["at"], "lab")
    assert [b for b in at.button if b.key == "lab_train_other"]  # none queued, none finished: offered again


def test_lab_shows_the_comparison_run_once_the_one_it_waits_for_has_finished(trained: dict) -> None:
    from metarec_core import jobs
    from metarec_core.store import RunStore
    from ui import lab

    store = RunStore()
    queued = jobs.submit(store, {**TINY, "lambda_meta": 0.0}, trained["dataset"], name="awaited transfer")
    try:
        at = open_page(trained["at"], "lab")
        assert_clean(at)
        assert at.session_state[lab.WAITING] == queued  # the page looks for the run's end
        assert any("is queued or training" in c.value for c in at.caption)
        at = at.run()  # still queued: the page keeps waiting and shows no list for it
        assert at.session_state[lab.WAITING] == queued and len(lab_lists(at)) == 2
        assert jobs.run_worker(store, queued) == "completed"
        at = at.run()  # what the page's poller does next: the run has ended, so it reruns the page and stops waiting
        assert_clean(at)
        assert lab.WAITING not in at.session_state
        assert len(lab_lists(at)) == 3 and any("awaited transfer" in c.value for c in at.caption)
    finally:
        store.delete(queued)


def test_learn_page_shows_the_run(trained: dict) -> None:
    at = open_page(trained["at"], "learn")
    assert_clean(at)
    assert any(r"\lambda_1=1" in l.value for l in at.latex)



def test_side_tables_and_feature_kinds(home: Path, tiny_scenario) -> None:
    data = tiny_scenario.dataset
    r = data.ratings
    ratings = pd.DataFrame({
        "user_id": [data.users.external(int(u)) for u in r["user"]],
        "item_id": [data.items.external(int(i)) for i in r["item"]],
        "rating": r["rating"],
    }).to_csv(index=False).encode()
    items = data.item_table.assign(item_id=list(data.items.external_ids))[["item_id", "title", "tags", "price"]]
    at = new_app()
    at.file_uploader(key="upload_interactions").upload("ratings.csv", ratings, "text/csv")
    at.file_uploader(key="upload_items").upload("items.csv", items.to_csv(index=False).encode(), "text/csv").run()
    assert_clean(at)
    assert {s.key for s in at.selectbox} >= {"kind_items_title", "kind_items_tags", "kind_items_price"}
    at.selectbox(key="kind_items_tags").set_value("ignore").run()
    assert_clean(at)
    at.button(key="save_dataset").click().run()
    from metarec_core.store import RunStore

    saved = RunStore().load_dataset(at.session_state["dataset_key"].split(":", 1)[1])
    assert [s.name for s in saved.item_features] == ["title", "price"]  # tags ignored as asked
    assert saved.n_items == data.n_items  # side-table-only items kept as cold items


#: Keys the core records that a person must never read as they are (metric, method and setting names).
RAW_KEYS = ("test_mae", "test_rmse", "test_ndcg@3", "valid_mae", "valid_ndcg@3", "valid_rmse", "best_epoch",
            "catalogue_ndcg@10", "hit_rate@10", "global-mean", "item-mean", "lambda_meta", "lambda_trans", "lambda_l0")


def shown_text(at: AppTest) -> list[str]:
    """Every string the page shows: text elements, widget labels and options, table headers and cells, chart labels."""
    out: list[str] = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "success", "error"):
        out += [str(e.value) for e in at.get(kind)]
    for metric in at.metric:
        out += [str(metric.label), str(metric.value)]
    for kind in ("selectbox", "multiselect", "radio", "segmented_control", "pills", "select_slider"):
        for widget in at.get(kind):
            out += [str(widget.label)] + [str(o) for o in getattr(widget, "options", [])]
    for frame in [*at.dataframe, *at.table]:
        value = frame.value
        out += [str(c) for c in value.columns] + [str(i) for i in value.index]
        out += [str(v) for v in value.select_dtypes(exclude="number").to_numpy().ravel()]
    for spec in plotly_specs(at):
        layout = spec.get("layout", {})
        out += [str(tr.get("name", "")) for tr in spec["data"]]
        out += [str(a.get("text", "")) for a in layout.get("annotations", [])]
        for axis in ("xaxis", "yaxis"):
            title = layout.get(axis, {}).get("title", {})
            out.append(str(title.get("text", "") if isinstance(title, dict) else title))
    return out


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_no_raw_key_reaches_a_page(trained: dict, lang: str) -> None:
    at = trained["at"]
    at.session_state["lang"] = lang
    try:
        for page in PAGES:
            if page == "lab":
                continue  # the lab is checked by its own tests
            at = open_page(at, page)
            assert_clean(at)
            text = "\n".join(shown_text(at))
            # The Learn page teaches the settings' own names (for Python and the command line) in its settings table.
            found = [raw for raw in RAW_KEYS if raw in text and not (page == "learn" and raw.startswith("lambda_"))]
            assert not found, (lang, page, found)
            cells = set(shown_text(at))
            assert not cells & {"mf", "bias", "M", "F"}, (lang, page)  # method and feature values shown bare
    finally:
        at.session_state["lang"] = "en"
        open_page(at, "data")


@pytest.mark.parametrize("damage", ["junk", "zero length beside run folders"])
def test_a_damaged_store_gets_its_message_and_a_way_back_on_every_page(home: Path, damage: str) -> None:
    from metarec_core.store import RunStore
    from tests.store_fakes import CONFIG

    home.mkdir(parents=True)
    if damage == "junk":
        (home / "store.sqlite3").write_bytes(b"junk\n")
    else:
        store = RunStore(home)
        run_id = store.create_run(CONFIG, "builtin:synthetic", name="kept run")
        store.close()
        (home / "store.sqlite3").write_bytes(b"")
    at = new_app()
    for page in PAGES:
        open_page(at, page)
        assert not at.exception, (page, [e.value for e in at.exception])
        assert len(at.error) == 1, page
        text = at.error[0].value.replace("\\", "")  # shown Markdown-escaped
        assert "store.sqlite3" in text and "runs recover" in text and "Next step" in text, page
        assert "Something went wrong" not in text and "Traceback" not in text, page
        assert [b.key for b in at.button] == ["store_recover"], page
    at.button(key="store_recover").click().run()
    assert not at.exception and not at.error
    assert "The store was rebuilt from its folders" in at.success[0].value
    aside = list(home.glob("store.sqlite3.damaged-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == (b"junk\n" if damage == "junk" else b"")
    if damage != "junk":
        assert RunStore(home).get_run(run_id).name == "kept run"
    open_page(at, "data")
    assert_clean(at)


def test_the_sidebar_picks_a_run_that_has_its_files(home: Path) -> None:
    import shutil

    from metarec_core.store import RunStore
    from tests.store_fakes import CONFIG, finish_fake_run

    store = RunStore(home)
    older = store.create_run(CONFIG, "builtin:synthetic", name="older")
    newer = store.create_run(CONFIG, "builtin:synthetic", name="newer")
    for run_id in (older, newer):
        finish_fake_run(store, run_id)
    shutil.rmtree(store.run_dir(newer))  # deleted behind the store's back
    at = new_app()
    assert not at.exception
    assert at.session_state["run_id"] == older
    picker = at.sidebar.selectbox(key="sidebar_run")
    assert any(o.startswith("newer") and "files missing" in o for o in picker.options)
    assert not any(o.startswith("older") and "files missing" in o for o in picker.options)


def test_a_store_damaged_while_the_app_runs_gets_the_recover_button(home: Path) -> None:
    from metarec_core.store import RunStore
    from tests.store_fakes import CONFIG

    store = RunStore(home)
    store.create_run(CONFIG, "builtin:synthetic", name="a run")
    store.close()
    at = new_app()
    open_page(at, "runs")
    assert not at.exception and not any(b.key == "store_recover" for b in at.button)
    (home / "store.sqlite3").write_bytes(b"junk " * 1000)  # damaged behind the running app's back
    for name in ("-wal", "-shm"):
        (home / f"store.sqlite3{name}").unlink(missing_ok=True)
    open_page(at, "runs")
    assert not at.exception
    assert [b.key for b in at.button] == ["store_recover"]
    assert "is damaged" in at.error[0].value and "Something went wrong" not in at.error[0].value
