"""The ``data`` commands: describe prints a summary, bad input gives one line and a non-zero exit."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metarec_core.cli import main


def test_describe_prints_summary_and_warnings(tmp_path, ratings_csv, capsys):
    users = tmp_path / "users.csv"
    users.write_text("user_id,age,gender\n1,30,F\n2,40,M\n3,50,F\n4,20,M\n5,60,F\n")
    assert main(["data", "describe", "--interactions", str(ratings_csv), "--users", str(users), "--kind", "age=numeric"]) == 0
    out = capsys.readouterr().out
    assert "5 users (1 with no interactions)" in out and "7 ratings" in out
    assert "user-cold" in out and "users.age: numeric" in out
    assert "appear only in the user table" in out  # warnings are printed


def test_describe_json(ratings_csv, capsys):
    assert main(["data", "describe", "--interactions", str(ratings_csv), "--json", "--support-size", "1"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["n_ratings"] == 7 and summary["rating_histogram"]["4.0"] == 2
    assert {s["scenario"] for s in summary["scenarios"]} == {"warm", "user-cold", "item-cold", "both-cold"}


def test_describe_column_options(tmp_path, capsys):
    path = tmp_path / "r.csv"
    path.write_text("who,what,stars\n1,10,4\n2,10,2\n2,11,5\n")
    assert main(["data", "describe", "--interactions", str(path), "--user-col", "who", "--item-col", "what",
                 "--rating-col", "stars"]) == 0
    assert "3 ratings" in capsys.readouterr().out
    assert main(["data", "describe", "--interactions", str(path), "--user-col", "who", "--item-col", "what",
                 "--implicit"]) == 0
    assert "3 implicit interactions" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("user_id,item_id,rating\n1,10,x\n", "row 1"),
        ("user_id,item_id,rating\n1,10,3\n2,10,3\n", "every rating is 3"),
        ("a,b\n1,2\n", "no column of user IDs"),
    ],
)
def test_bad_input_is_one_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    assert main(["data", "describe", "--interactions", str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: file 'bad.csv'") and message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_missing_file_and_bad_kind(tmp_path, ratings_csv, capsys):
    assert main(["data", "describe", "--interactions", str(tmp_path / "none.csv")]) == 1
    assert "no such file" in capsys.readouterr().err
    assert main(["data", "describe", "--interactions", str(ratings_csv), "--kind", "age"]) == 1
    assert "COLUMN=KIND" in capsys.readouterr().err


def test_fetch_from_a_grouplens_folder_writes_csv(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "ml-100k"
    folder.mkdir()
    (folder / "u.data").write_text("1\t1\t5\t10\n2\t1\t3\t20\n")
    (folder / "u.user").write_text("1|24|M|technician|85711\n2|53|F|other|94043\n")
    (folder / "u.item").write_text("1|Toy Story (1995)|01-Jan-1995||http://x|" + "|".join(["0"] * 18 + ["1"]) + "\n")
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path / "cache"))
    out_dir = tmp_path / "out"
    assert main(["data", "fetch", "movielens-100k", "--grouplens-dir", str(folder), "--to", str(out_dir)]) == 0
    assert "2 users, 1 items" in capsys.readouterr().out
    assert (out_dir / "items.csv").read_text().splitlines() == ["item_id,title,year,genres", "1,Toy Story,1995,Western"]


def test_subprocess_exit_code_and_no_traceback(tmp_path):
    path = tmp_path / "bad.tsv"
    path.write_bytes(b"\x00\x01binary")
    done = subprocess.run(
        [sys.executable, "-m", "metarec_core", "data", "describe", "--interactions", str(path)],
        capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1], timeout=120,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr and "NUL bytes" in done.stderr


@pytest.mark.parametrize("scale, rc, expected", [
    (None, 1, "column 'rating', row 5: 1 rating(s) are beyond ±1,000,000 (first: 1e+30 in row 5)"),
    ("1,5", 1, "column 'rating', row 5: 1 rating(s) are beyond ±1,000,000"),  # absurd whatever the scale
    ("1,x", 1, "--rating-scale takes two numbers LO,HI"),
])
def test_describe_refuses_absurd_ratings_in_one_line(tmp_path, capsys, scale, rc, expected):
    path = tmp_path / "r.csv"
    path.write_text("user_id,item_id,rating\n1,10,4\n1,11,3\n2,10,5\n2,12,1\n3,11,1e30\n3,12,-50\n")
    args = ["data", "describe", "--interactions", str(path)] + (["--rating-scale", scale] if scale else [])
    assert main(args) == rc
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert captured.out == "" and len(lines) == 1 and expected in lines[0] and "unexpected" not in lines[0]
