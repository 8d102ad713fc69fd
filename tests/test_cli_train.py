"""Tests of the train, score and recommend sub-commands on small files."""
import json

import pandas as pd
import pytest

from metarec_core.cli import main
from metarec_core.synthetic import SyntheticConfig, make_synthetic


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    data = make_synthetic(SyntheticConfig(n_users=120, n_items=60, seed=5)).dataset
    ratings = data.ratings
    pd.DataFrame({
        "user_id": data.users.externals(ratings["user"]), "item_id": data.items.externals(ratings["item"]),
        "rating": ratings["rating"], "timestamp": ratings["timestamp"],
    }).to_csv(root / "ratings.csv", index=False)
    items = data.item_table.assign(item_id=data.items.external_ids)
    items.to_csv(root / "items.csv", index=False)
    run = root / "run"
    code = main(["train", "--interactions", str(root / "ratings.csv"), "--items", str(root / "items.csv"),
                 "--set", "num_epochs=1", "--set", "model.hidden=[8]", "--quiet", "--out", str(run)])
    assert code == 0
    return root, run


def test_train_writes_a_complete_run_directory(files):
    _, run = files
    for name in ("config.json", "model.json", "weights.safetensors", "context.safetensors", "metrics.jsonl", "result.json"):
        assert (run / name).exists(), name
    config = json.loads((run / "config.json").read_text())
    assert config["num_epochs"] == 1 and config["model"]["hidden"] == [8]


def test_score_adapts_new_and_known_users(files, tmp_path):
    _, run = files
    (tmp_path / "s.csv").write_text("user_id,item_id,rating\nnewbie,1,5\nnewbie,2,1\nnewbie,3,5\n")
    (tmp_path / "p.csv").write_text("user_id,item_id\nnewbie,4\nnewbie,5\n7,4\nstranger,4\n")
    assert main(["score", "--run", str(run), "--support", str(tmp_path / "s.csv"), "--pairs", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o.csv")]) == 0
    out = pd.read_csv(tmp_path / "o.csv", dtype={"user_id": str, "item_id": str})
    assert list(out.columns) == ["user_id", "item_id", "score"]
    assert len(out) == 4 and out["score"].between(1, 5).all()
    # A new user with support is scored differently from one with none (the meta-learned start).
    assert out.loc[0, "score"] != out.loc[3, "score"]


def test_recommend_json_excludes_support_items(files, tmp_path, capsys):
    _, run = files
    (tmp_path / "s.csv").write_text("user_id,item_id,rating\nnewbie,1,5\nnewbie,2,1\n")
    assert main(["recommend", "--run", str(run), "--user", "newbie", "--support", str(tmp_path / "s.csv"), "--k", "5", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    ids = [row["item_id"] for row in payload["items"]]
    assert len(ids) == 5 and "1" not in ids and "2" not in ids
    assert payload["support_size"] == 2 and payload["known_user"] is False


@pytest.mark.parametrize(
    "support, message",
    [
        ("user_id,item_id,rating\nnewbie,1,abc\n", "row 1"),
        ("user_id,item,rating\nnewbie,1,4\n", "item_id"),
        ("user_id,item_id,rating\nnewbie,99999,4\n", "99999"),
    ],
)
def test_bad_support_file_gives_one_line_error(files, tmp_path, capsys, support, message):
    _, run = files
    (tmp_path / "s.csv").write_text(support)
    (tmp_path / "p.csv").write_text("user_id,item_id\nnewbie,4\n")
    code = main(["score", "--run", str(run), "--support", str(tmp_path / "s.csv"), "--pairs", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o.csv")])
    err = capsys.readouterr().err
    assert code == 1
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_missing_run_directory_is_a_clear_error(tmp_path, capsys):
    code = main(["recommend", "--run", str(tmp_path / "nope"), "--user", "1"])
    err = capsys.readouterr().err
    assert code == 1 and "does not exist" in err and "Traceback" not in err
    code = main(["recommend", "--run", str(tmp_path), "--user", "1"])  # a folder, but not a run
    err = capsys.readouterr().err
    assert code == 1 and "is not a run directory" in err


def test_recommend_says_when_the_user_is_unknown(files, tmp_path, capsys):
    _, run = files
    assert main(["recommend", "--run", str(run), "--user", "nobdoy", "--k", "3"]) == 0  # a typo is still a valid new user
    captured = capsys.readouterr()
    assert "not a user of this run" in captured.err and "new user nobdoy" in captured.out
    assert main(["recommend", "--run", str(run), "--user", "7", "--k", "3"]) == 0  # a known user: no note
    assert "note" not in capsys.readouterr().err


def test_score_refuses_a_folder_as_output(files, tmp_path, capsys):
    _, run = files
    (tmp_path / "s.csv").write_text("user_id,item_id,rating\nnewbie,1,5\n")
    (tmp_path / "p.csv").write_text("user_id,item_id\nnewbie,4\nghost,4\n")
    code = main(["score", "--run", str(run), "--support", str(tmp_path / "s.csv"), "--pairs", str(tmp_path / "p.csv"), "--out", str(tmp_path)])
    assert code == 1 and "is a folder" in capsys.readouterr().err
    assert main(["score", "--run", str(run), "--support", str(tmp_path / "s.csv"), "--pairs", str(tmp_path / "p.csv"), "--out", str(tmp_path / "o.csv")]) == 0
    assert "1 user(s)" in capsys.readouterr().err  # 'ghost' has no support rows and is not a user of the run


def test_unknown_setting_is_rejected(files, capsys):
    root, _ = files
    code = main(["train", "--interactions", str(root / "ratings.csv"), "--set", "lamda=1", "--out", str(root / "x")])
    assert code == 1 and "unknown setting" in capsys.readouterr().err


def test_train_reads_files_whose_columns_are_named_on_the_command_line(files, tmp_path):
    from metarec_core.artifacts import load_run

    root, _ = files
    frame = pd.read_csv(root / "ratings.csv").rename(columns={"user_id": "u", "item_id": "i", "rating": "stars", "timestamp": "t"})
    frame.to_csv(tmp_path / "odd.csv", index=False)
    code = main(["train", "--interactions", str(tmp_path / "odd.csv"), "--user-col", "u", "--item-col", "i", "--rating-col", "stars",
                 "--timestamp-col", "t", "--set", "num_epochs=1", "--quiet", "--out", str(tmp_path / "run")])
    assert code == 0
    run = load_run(tmp_path / "run")
    assert run.loss == "mse" and not run.implicit  # the ratings were used, not dropped as implicit data


def test_a_setting_of_the_wrong_type_is_a_one_line_error(files, capsys):
    root, _ = files
    code = main(["train", "--interactions", str(root / "ratings.csv"), "--set", "use_text=no", "--out", str(root / "y")])
    err = capsys.readouterr().err
    assert code == 1 and "use_text" in err and "true or false" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("k", ["0", "-5", "ten"])
def test_recommend_refuses_a_k_below_one_in_one_line(files, capsys, k):
    _, run = files
    with pytest.raises(SystemExit) as stop:
        main(["recommend", "--run", str(run), "--user", "7", "--k", k])
    assert stop.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--k" in err and "at least 1" in err and "Traceback" not in err


def test_recommend_all_users_writes_every_users_top_k(files, tmp_path, capsys):
    root, run = files
    out = tmp_path / "recs.csv"
    assert main(["recommend", "--run", str(run), "--all-users", "--k", "4", "--out", str(out)]) == 0
    recs = pd.read_csv(out, dtype={"user_id": str, "item_id": str})
    assert list(recs.columns) == ["user_id", "rank", "item_id", "name", "score"]
    ranks = recs.groupby("user_id")["rank"].apply(list)
    # Ranks from 1; a user who has rated all but a few of the 60 items gets fewer than 4, one who rated all none (and is counted).
    missing = 120 - recs["user_id"].nunique()
    assert missing < 3 and all(r == list(range(1, len(r) + 1)) for r in ranks)
    assert (ranks.str.len() == 4).mean() > 0.8
    assert (f"{missing} user(s) have no list" in capsys.readouterr().err) == (missing > 0)
    assert recs.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing).all()
    items = pd.read_csv(root / "items.csv", dtype={"item_id": str}).set_index("item_id")["title"]
    assert (recs["name"] == recs["item_id"].map(items)).all()  # names, not IDs twice
    # A known user's list is the one `recommend --user` prints for them.
    capsys.readouterr()
    assert main(["recommend", "--run", str(run), "--user", "7", "--k", "4", "--json"]) == 0
    single = [row["item_id"] for row in json.loads(capsys.readouterr().out)["items"]]
    assert recs.loc[recs["user_id"] == "7", "item_id"].tolist() == single


def test_recommend_for_a_cohort_and_a_users_file(files, tmp_path, capsys):
    _, run = files
    out = tmp_path / "new.csv"
    assert main(["recommend", "--run", str(run), "--all-users", "--cohort", "new", "--k", "2", "--out", str(out)]) == 0
    new = pd.read_csv(out, dtype={"user_id": str})
    assert 0 < new["user_id"].nunique() < 120
    capsys.readouterr()
    (tmp_path / "u.csv").write_text("user_id\n7\nnewbie\n7\n")
    assert main(["recommend", "--run", str(run), "--users-file", str(tmp_path / "u.csv"), "--k", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "user_id,rank,item_id,name,score" and len(lines) == 1 + 2 * 3


@pytest.mark.parametrize(
    "extra, message",
    [(["--user", "7", "--out", "x.csv"], "--out go with --all-users"), (["--all-users", "--json"], "--json prints one user"),
     (["--users-file", "u.csv", "--cohort", "new"], "--cohort picks among")],
)
def test_recommend_many_refuses_mixed_options_in_one_line(files, tmp_path, capsys, extra, message):
    _, run = files
    (tmp_path / "u.csv").write_text("user_id\n7\n")
    extra = [str(tmp_path / e) if e.endswith(".csv") else e for e in extra]
    assert main(["recommend", "--run", str(run), *extra]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_train_says_when_it_trains_for_new_items_and_records_it(files, tmp_path, capsys):
    root, _ = files
    items = pd.read_csv(root / "items.csv")
    new = items.head(15).assign(item_id=[90_000 + i for i in range(15)])  # 15 of 75 items listed without any rating
    pd.concat([items, new]).to_csv(tmp_path / "items.csv", index=False)
    code = main(["train", "--interactions", str(root / "ratings.csv"), "--items", str(tmp_path / "items.csv"),
                 "--set", "num_epochs=1", "--set", "text_encoder=hashing", "--quiet", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 0 and "note: 15 of 75 items have no interactions" in err and "scenario=item-cold" in err
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["scenario"] == "item-cold" and config["use_text"] and config["model"]["item_id_dropout"] == 0.5
