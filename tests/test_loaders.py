"""Loaders: formats, encodings, column detection and every validation rule, on tiny in-memory files."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest

from metarec_core.errors import DataError
from metarec_core.loaders import ColumnMapping, build_dataset, detect_columns, load_dataset, read_table

GOOD = "user_id,item_id,rating,timestamp\n1,10,4,100\n1,11,3,101\n2,10,5,102\n2,12,1,103\n"


def load(text: str | bytes, **kwargs):
    raw = text.encode() if isinstance(text, str) else text
    return load_dataset(raw, source_names={"interactions": "ratings.csv"}, **kwargs)


# ----------------------------------------------------------------- formats and encodings


def test_csv_from_path_and_bytes_agree(ratings_csv):
    a = load_dataset(ratings_csv)
    b = load_dataset(ratings_csv.read_bytes())
    assert a.fingerprint == b.fingerprint
    assert (a.n_users, a.n_items, len(a.ratings)) == (4, 3, 7)
    assert a.name == "ratings" and b.name == "uploaded"
    assert list(a.ratings.columns) == ["user", "item", "rating", "timestamp"]
    assert a.ratings.dtypes.tolist() == [np.int64, np.int64, np.float32, np.int64]


@pytest.mark.parametrize("delimiter", ["\t", ";", "|"])
def test_other_delimiters_are_sniffed(delimiter):
    data = load(GOOD.replace(",", delimiter))
    assert len(data.ratings) == 4 and data.ratings["rating"].tolist() == [4, 3, 5, 1]


def test_tsv_extension(tmp_path):
    path = tmp_path / "r.tsv"
    path.write_text(GOOD.replace(",", "\t"))
    assert len(load_dataset(path).ratings) == 4


def test_parquet_path_and_bytes(tmp_path):
    frame = pd.read_csv(io.StringIO(GOOD))
    path = tmp_path / "r.parquet"
    frame.to_parquet(path)
    a = load_dataset(path)
    b = load_dataset(path.read_bytes(), source_names={"interactions": "upload.bin"})  # sniffed by magic bytes
    assert a.fingerprint == b.fingerprint and len(a.ratings) == 4


def test_utf8_bom_and_latin1_and_utf16():
    items = "item_id,title\n10,Amélie\n11,Léon\n12,Plain\n"
    for raw, warns in (
        (b"\xef\xbb\xbf" + items.encode("utf-8"), False),
        (items.encode("latin-1"), True),
        (items.encode("utf-16"), False),
    ):
        data = load_dataset(GOOD.encode(), items=raw, source_names={"items": "items.csv"})
        assert data.item_table["title"].tolist() == ["Amélie", "Léon", "Plain"]
        assert any("Latin-1" in w for w in data.warnings) == warns


def test_read_table_sets_source_and_strips_names():
    frame = read_table(b" user_id , item_id \n1,2\n", name="x.csv")
    assert list(frame.columns) == ["user_id", "item_id"]
    assert frame.attrs["source"] == "x.csv"


# ----------------------------------------------------------------- file-level errors


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "empty"),
        (b"   \n\n", "empty"),
        (b"user_id,item_id,rating\n", "no data rows"),
        (b"1,10,4\n2,10,3\n", "no header row"),
        (b"user_id,user_id,rating\n1,2,3\n", "more than once"),
        (b"\x00\x01\x02binary\x00", "NUL bytes"),
        (b"PK\x03\x04rest-of-a-zip", "Excel"),
        (b"user_id,item_id,rating\n1,2,3\n1,2,3,4,5\n", "cannot parse"),
    ],
)
def test_file_errors_name_the_file(content, message):
    with pytest.raises(DataError, match=message) as info:
        load(content)
    assert "ratings.csv" in str(info.value)


def test_bad_parquet():
    with pytest.raises(DataError, match="Parquet"):
        load_dataset(b"PAR1 not really", source_names={"interactions": "r.parquet"})


def test_size_limit(tmp_path, ratings_csv):
    with pytest.raises(DataError, match="over the limit"):
        load_dataset(ratings_csv, max_bytes=20)
    with pytest.raises(DataError, match="over the limit"):
        read_table(b"x" * 100, max_bytes=10)


def test_too_big_says_how_big_and_the_three_ways_out(tmp_path, ratings_csv, monkeypatch):
    from metarec_core import memory

    size = ratings_csv.stat().st_size
    with pytest.raises(DataError) as info:
        load_dataset(ratings_csv, max_bytes=20)
    message = str(info.value)
    assert f"the file is {size} bytes, over the limit of 20 bytes" in message and "\n" not in message
    assert "command line (python -m metarec_core train --interactions FILE --max-mb 1)" in message
    assert "sample of the rows" in message and "machine with more memory" in message
    # Within the limit, but reading it (about 10x its size) would not fit in the memory left.
    monkeypatch.setattr(memory, "available_ram", lambda: 5 * size)
    for source in (ratings_csv, ratings_csv.read_bytes()):
        with pytest.raises(DataError) as info:
            read_table(source, name="ratings.csv")
        message = str(info.value)
        assert message.startswith("file 'ratings.csv': the ") and f"but the machine has {5 * size} bytes available" in message
        assert "command line" in message and "sample" in message and "more memory" in message
    monkeypatch.setattr(memory, "available_ram", lambda: 11 * size)
    assert len(read_table(ratings_csv)) == 7
    monkeypatch.setattr(memory, "available_ram", lambda: None)  # the system does not say: only the size limit applies
    assert len(read_table(ratings_csv)) == 7


def test_missing_path_and_folder(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="folder"):
        load_dataset(tmp_path)


def test_upload_name_is_never_a_path(tmp_path):
    data = load_dataset(GOOD.encode(), source_names={"interactions": "../../etc/passwd"})
    assert len(data.ratings) == 4


# ----------------------------------------------------------------- column detection


@pytest.mark.parametrize(
    "header",
    ["userId,movieId,rating,timestamp", "uid,iid,score,ts", "user,item,rating,time", "User ID,Item-ID,Rating,Timestamp",
     "user_id:token,item_id:token,rating:float,timestamp:float"],
)
def test_usual_names_are_detected(header):
    body = GOOD.split("\n", 1)[1]
    data = load(header + "\n" + body)
    assert len(data.ratings) == 4 and not data.implicit and data.ratings["timestamp"].tolist() == [100, 101, 102, 103]


def test_mapping_overrides_detection():
    text = "shopper,product,points,when\n1,10,4,5\n2,10,2,6\n"
    with pytest.raises(DataError, match="no column of user IDs"):
        load(text)
    data = load(text, columns=ColumnMapping(user="shopper", item="product", rating="points", timestamp="when"))
    assert data.ratings["rating"].tolist() == [4, 2] and data.ratings["timestamp"].tolist() == [5, 6]
    with pytest.raises(DataError, match="'nope'.*not in the table"):
        load(text, columns=ColumnMapping(user="nope", item="product"))


def test_ambiguous_and_missing_id_columns():
    with pytest.raises(DataError, match="ambiguous item IDs.*'item_id', 'movieId'"):
        load("user_id,item_id,movieId,rating\n1,2,3,4\n2,2,3,5\n")
    with pytest.raises(DataError, match="no column of item IDs.*'user_id', 'rating'"):
        load("user_id,rating\n1,2\n2,3\n")
    with pytest.raises(DataError, match="two roles"):
        load("a,b,rating\n1,2,3\n2,2,4\n", columns=ColumnMapping(user="a", item="a"))


def test_detect_columns_for_the_app():
    frame = pd.DataFrame({"userId": [1], "movieId": [2], "rating": [3.0], "extra": [1]})
    mapping = detect_columns(frame)
    assert (mapping.user, mapping.item, mapping.rating, mapping.timestamp) == ("userId", "movieId", "rating", None)


# ----------------------------------------------------------------- ratings


def test_non_numeric_rating_names_the_row():
    with pytest.raises(DataError, match="not numbers.*'great'") as info:
        load("user_id,item_id,rating\n1,10,4\n2,10,great\n3,10,2\n")
    assert info.value.row == 2 and info.value.column == "rating" and "row 2" in str(info.value)


def test_missing_rating_names_the_row():
    with pytest.raises(DataError, match="missing or not finite") as info:
        load("user_id,item_id,rating\n1,10,4\n2,10,3\n3,10,\n")
    assert info.value.row == 3
    with pytest.raises(DataError, match="not finite"):
        build_dataset(pd.DataFrame({"user": [1, 2], "item": [1, 1], "rating": [1.0, np.inf]}))


def test_all_equal_ratings():
    with pytest.raises(DataError, match="every rating is 5.*implicit"):
        load("user_id,item_id,rating\n1,10,5\n2,11,5\n")


def test_no_rating_column_means_implicit():
    data = load("user_id,item_id\n1,10\n2,10\n2,11\n")
    assert data.implicit and (data.ratings["rating"] == 1.0).all()
    assert any("implicit" in w for w in data.warnings)
    forced = load("user_id,item_id,rating\n1,10,5\n2,11,5\n", columns=ColumnMapping(implicit=True))
    assert forced.implicit and not any("no rating column" in w for w in forced.warnings)


def test_any_numeric_scale():
    data = load("user_id,item_id,rating\n1,10,-2.5\n2,10,97\n")
    assert data.rating_range == (-2.5, 97.0)


# ----------------------------------------------------------------- duplicates and timestamps


def test_duplicates_keep_latest_by_timestamp_and_are_counted():
    text = "user_id,item_id,rating,timestamp\n1,10,1,300\n1,10,5,100\n2,10,2,5\n1,10,3,200\n1,11,4,1\n"
    data = load(text)
    r = data.ratings
    assert len(r) == 3
    assert r[(r["user"] == 0) & (r["item"] == 0)]["rating"].item() == 1  # timestamp 300 wins
    warning = next(w for w in data.warnings if "more than once" in w)
    assert "1 (user, item) pair" in warning and "dropped 2" in warning


def test_duplicates_without_timestamp_keep_last():
    data = load("user_id,item_id,rating\n1,10,1\n1,10,5\n1,10,3\n2,10,2\n")
    r = data.ratings
    assert r[(r["user"] == 0)]["rating"].item() == 3
    assert any("the last row" in w and "dropped 2" in w for w in data.warnings)


def test_date_timestamps_and_bad_ones():
    data = load("user_id,item_id,rating,timestamp\n1,10,4,2020-01-01\n2,10,3,2020-01-02 12:00\n")
    assert data.ratings["timestamp"].tolist() == [1577836800, 1577966400]
    with pytest.raises(DataError, match="neither numbers nor dates.*'soon'") as info:
        load("user_id,item_id,rating,timestamp\n1,10,4,2020-01-01\n2,10,3,soon\n")
    assert info.value.row == 2
    partial = load("user_id,item_id,rating,timestamp\n1,10,4,5\n2,10,3,\n")
    assert partial.ratings["timestamp"].tolist() == [5, -1]
    assert any("no timestamp" in w for w in partial.warnings)


# ----------------------------------------------------------------- IDs


def test_mixed_id_types_name_a_row():
    body = "".join(f"{i},10,{1 + i % 5}\n" for i in range(1, 20)) + "u20,10,3\n"
    with pytest.raises(DataError, match="mixed types.*'u20'") as info:
        load("user_id,item_id,rating\n" + body)
    assert info.value.row == 20 and info.value.column == "user_id"
    ok = load("user_id,item_id,rating\n" + body, columns=ColumnMapping(allow_mixed_ids=True))
    assert "u20" in ok.users and ok.n_users == 20
    with pytest.raises(DataError, match="mixed types"):
        build_dataset(pd.DataFrame({"user": [1, "a", 2], "item": [1, 1, 1], "rating": [1, 2, 3]}, dtype=object))


def test_missing_id_names_the_row():
    with pytest.raises(DataError, match="no user ID") as info:
        load("user_id,item_id,rating\n1,10,4\n,10,3\n")
    assert info.value.row == 2


def test_ids_are_normalised_and_sorted_numerically():
    frame = pd.DataFrame({"user": [10.0, 2.0, 2.0], "item": [" a", "a", "b"], "rating": [1, 2, 3]})
    data = build_dataset(frame)
    assert data.users.external_ids == ("2", "10")
    assert data.items.external_ids == ("a", "b")
    assert data.ratings["item"].tolist() == [0, 0, 1]


def test_unused_columns_are_reported():
    data = load("user_id,item_id,rating,title\n1,10,4,x\n2,10,2,y\n")
    assert any("'title'" in w and "not used" in w for w in data.warnings)


# ----------------------------------------------------------------- side tables


USERS = "user_id,age,gender\n1,30,F\n2,40,M\n9,50,F\n"
ITEMS = "item_id,title,genres,price\n10,A,Action|Comedy,1.5\n11,B,Drama,2.5\n12,C,Action,3.5\n13,D,Drama|War,4.5\n"


def test_side_tables_align_to_indices_and_keep_cold_entities():
    data = load_dataset(GOOD.encode(), USERS.encode(), ITEMS.encode())
    assert data.users.external_ids == ("1", "2", "9")  # '9' has no interactions: a cold user
    assert data.user_table["age"].tolist() == [30, 40, 50]
    assert data.items.external_ids == ("10", "11", "12", "13")
    assert data.item_table.loc[data.items.index("13"), "title"] == "D"
    kinds = {s.name: s.kind for s in data.item_features}
    assert kinds["genres"] == "multilabel" and kinds["price"] == "numeric"
    assert any("appear only in the user table" in w for w in data.warnings)
    assert "user_id" not in data.user_table.columns


def test_interaction_entities_missing_from_side_table_are_reported():
    data = load_dataset(GOOD.encode(), b"user_id,age\n1,30\n")
    assert np.isnan(data.user_table.loc[data.users.index("2"), "age"])
    assert any("1 of 2 users" in w and "no row in the user table" in w for w in data.warnings)


def test_side_table_matching_nothing_is_an_error():
    with pytest.raises(DataError, match="none of the 2 IDs.*item table") as info:
        load_dataset(GOOD.encode(), items=b"item_id,title\n98,A\n99,B\n", source_names={"items": "items.csv"})
    assert "items.csv" in str(info.value)


def test_side_table_id_column_detection():
    # The interactions' own column name is accepted in a side table.
    data = load_dataset(
        b"customer,item_id,rating\n1,10,4\n2,10,2\n", users=b"customer,age\n1,3\n2,4\n",
        columns=ColumnMapping(user="customer"),
    )
    assert data.user_table["age"].tolist() == [3, 4]
    with pytest.raises(DataError, match="no user ID column in the user table"):
        load_dataset(GOOD.encode(), users=b"name,age\n1,3\n")
    data = load_dataset(GOOD.encode(), users=b"name,age\n1,3\n2,4\n", columns=ColumnMapping(user_table_id="name"))
    assert data.user_table["age"].tolist() == [3, 4]


def test_duplicate_side_rows_keep_last_with_warning():
    data = load_dataset(GOOD.encode(), users=b"user_id,age\n1,30\n1,31\n2,40\n")
    assert data.user_table["age"].tolist() == [31, 40]
    assert any("more than one row" in w for w in data.warnings)


def test_feature_kind_overrides():
    data = load_dataset(
        GOOD.encode(), USERS.encode(), ITEMS.encode(),
        feature_kinds={"age": "categorical", "items.title": "text", "price": "ignore"},
    )
    assert {s.name: s.kind for s in data.user_features}["age"] == "categorical"
    assert {s.name: s.kind for s in data.item_features}["title"] == "text"
    assert "price" not in data.item_table.columns
    with pytest.raises(DataError, match="neither the user nor the item table"):
        load_dataset(GOOD.encode(), USERS.encode(), feature_kinds={"colour": "categorical"})
    with pytest.raises(DataError, match="unknown"):
        load_dataset(GOOD.encode(), USERS.encode(), feature_kinds={"age": "fancy"})


def test_empty_interactions_frame():
    with pytest.raises(DataError, match="no interactions"):
        build_dataset(pd.DataFrame({"user": [], "item": [], "rating": []}))


# ----------------------------------------------------------------- guessing each role on its own


def test_a_log_with_other_names_maps_every_role():
    text = "customer,sku,stars,ts\nc1,s1,4,1600000000\nc2,s1,2,1600000100\nc1,s2,5,1600000200\n"
    data = load(text)
    assert not data.implicit and data.ratings["rating"].tolist() == [4, 2, 5]
    assert sorted(data.ratings["timestamp"].tolist()) == [1600000000, 1600000100, 1600000200]
    assert not any("not used" in w for w in data.warnings)


def test_a_role_that_fails_leaves_the_others_guessed():
    from metarec_core.loaders import guess_columns

    frame = pd.DataFrame({"who": ["a", "b"], "sku": ["x", "y"], "stars": [1, 5], "ts": [1600000000, 1600000009]})
    guess = guess_columns(frame, source="orders.csv")
    assert guess.mapping.user is None and set(guess.problems) == {"user"}
    assert (guess.mapping.item, guess.mapping.rating, guess.mapping.timestamp) == ("sku", "stars", "ts")
    problem = guess.problems["user"]
    assert problem.setting == "user" and "--user-col" in str(problem) and "--user-col" not in problem.problem
    assert "ColumnMapping" not in problem.problem and "orders.csv" in problem.problem


def test_ratings_and_times_are_recognised_by_their_values():
    from metarec_core.loaders import guess_columns

    frame = pd.DataFrame(
        {"user_id": [1, 2, 3], "item_id": [7, 8, 9], "v": [1.0, 4.5, 3.0], "when_it": ["2024-05-01", "2024-05-02 13:00", "2024-06-01"]}
    )
    guess = guess_columns(frame)
    assert (guess.mapping.rating, guess.mapping.timestamp) == ("v", "when_it")
    assert guess.how == {"user": "name", "item": "name", "rating": "content", "timestamp": "content"}
    seconds = pd.DataFrame({"user_id": [1, 2], "item_id": [7, 8], "rating": [3, 4], "t": [1_600_000_000, 1_600_000_500]})
    assert guess_columns(seconds).mapping.timestamp == "t"
    # IDs on a small scale are not ratings, a count of 1,000 distinct values is not either.
    counts = pd.DataFrame({"user_id": np.arange(30) % 3, "item_id": np.arange(30), "clicks": np.arange(30) * 37})
    assert guess_columns(counts).mapping.rating is None and guess_columns(counts).rating_like == ()


def test_an_unused_rating_like_column_is_named_in_the_implicit_warning():
    frame = pd.DataFrame({"user_id": [1, 2, 3], "item_id": [7, 8, 9], "a": [1, 2, 3], "b": [2, 3, 4]})
    implicit = build_dataset(frame)  # two candidates: none is picked, and the warning says which ones
    assert implicit.implicit and any("'a', 'b' look like ratings" in w for w in implicit.warnings)


def test_a_chosen_name_column_is_kept_and_checked():
    items = b"sku,product_name,category\ns1,Red mug,kitchen\ns2,Blue pen,office\n"
    data = load_dataset(b"customer,sku,stars\nc1,s1,4\nc2,s2,2\n", items=items, columns=ColumnMapping(item_name="category"))
    assert data.item_name_column == "category"
    with pytest.raises(DataError, match="'colour' chosen for item names") as info:
        load_dataset(b"customer,sku,stars\nc1,s1,4\nc2,s2,2\n", items=items, columns=ColumnMapping(item_name="colour"))
    assert info.value.setting == "item_name"


# ----------------------------------------------------------------- rating scale, nested values, too few users

SCALE = "user_id,item_id,rating\n" + "".join(f"{u},{10 + i},{1 + (u + i) % 5}\n" for u in range(1, 9) for i in range(4))


def with_rating(value: str, row: int = 6) -> str:
    lines = SCALE.splitlines()
    user, item, _ = lines[row].split(",")
    lines[row] = f"{user},{item},{value}"
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    "value, expected",
    [
        ("999", "1 rating(s) are far outside the scale of the others (those are 1 to 5; first: 999 in row 6)"),
        ("-50", "1 rating(s) are far outside the scale of the others (those are 1 to 5; first: -50 in row 6)"),
        ("1e30", "1 rating(s) are beyond ±1,000,000 (first: 1e+30 in row 6)"),
        ("-2e7", "1 rating(s) are beyond ±1,000,000 (first: -2e+07 in row 6)"),
        ("inf", "1 rating(s) are missing or not finite"),
        ("nan", "1 rating(s) are missing or not finite"),
    ],
)
def test_absurd_ratings_are_refused_naming_the_row_and_the_range(value, expected):
    with pytest.raises(DataError) as caught:
        load(with_rating(value))
    message = str(caught.value)
    assert message.startswith("file 'ratings.csv', column 'rating', row 6: ") and expected in message
    assert caught.value.row == 6 and len(message.splitlines()) == 1


def test_a_declared_scale_accepts_what_it_covers_and_refuses_the_rest():
    assert load(with_rating("999"), rating_scale=(0, 1000)).ratings["rating"].max() == 999
    with pytest.raises(DataError, match=r"row 6: 1 rating\(s\) are outside the declared scale 1 to 5 \(first: 6 in row 6\)"):
        load(with_rating("6"), rating_scale=(1, 5))  # near the others, but not on the scale the user gave
    with pytest.raises(DataError, match="from a lower to a higher"):
        load(SCALE, rating_scale=(5, 1))


def test_a_long_tail_of_large_ratings_is_a_warning_not_a_refusal():
    # 8 of 40 ratings are play counts far above the rest: real values, not typos.
    lines = SCALE.splitlines()[1:] + [f"{u},20,{500 + u}" for u in range(1, 9)]
    data = load("user_id,item_id,rating\n" + "\n".join(lines) + "\n")
    assert any("8 rating(s) lie far outside the middle of the others" in w for w in data.warnings)
    plain = load(SCALE)  # every value in 1..5 on a 1..5 scale: nothing to say
    assert not any("far outside" in w for w in plain.warnings)


def test_a_single_user_is_refused_with_the_minimum():
    with pytest.raises(DataError, match=r"column 'user_id': the interactions have 1 user\(s\); a cold-start split needs at least 2 users"):
        load("user_id,item_id,rating\n1,10,4\n1,11,3\n1,12,5\n")


def _parquet(table) -> bytes:
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    return buffer.getvalue()


def _nested_tables():
    import pyarrow as pa

    ratings = pa.table({"user_id": [1, 1, 2, 2, 3, 3], "item_id": [10, 11, 10, 12, 11, 12], "rating": [4, 3, 5, 1, 2, 4]})
    return pa, ratings


@pytest.mark.parametrize("kind", ["struct", "map", "nested list"])
def test_record_columns_in_a_side_table_are_refused_naming_the_column(kind):
    pa, ratings = _nested_tables()
    values = {
        "struct": pa.array([None, {"a": 1}, {"a": 2}]),
        "map": pa.array([None, [("k", 1)], [("j", 2)]], type=pa.map_(pa.string(), pa.int64())),
        "nested list": pa.array([None, [[1], [2]], [[3]]]),
    }[kind]
    items = pa.table({"item_id": [10, 11, 12], "info": values})
    with pytest.raises(DataError) as caught:
        load_dataset(_parquet(ratings), items=_parquet(items), source_names={"interactions": "r.parquet", "items": "items.parquet"})
    assert str(caught.value).startswith("file 'items.parquet', column 'info', row 2: the column holds records")
    assert "one column per field" in str(caught.value)


@pytest.mark.parametrize("table", ["interactions", "items"])
def test_a_list_typed_id_column_is_refused(table):
    pa, ratings = _nested_tables()
    items = pa.table({"item_id": [10, 11, 12], "year": [1990, 1991, 1992]})
    if table == "interactions":
        ratings = ratings.set_column(0, "user_id", pa.array([[1], [1], [2], [2], [3], [3]]))
    else:
        items = items.set_column(0, "item_id", pa.array([[10], [11], [12]]))
    with pytest.raises(DataError) as caught:
        load_dataset(_parquet(ratings), items=_parquet(items), source_names={"interactions": "r.parquet", "items": "items.parquet"})
    role = "user" if table == "interactions" else "item"
    name = "r.parquet" if table == "interactions" else "items.parquet"
    assert str(caught.value).startswith(f"file '{name}', column '{role}_id', row 1: the {role} ID column holds lists")


def test_a_list_of_labels_in_a_side_table_becomes_a_multilabel_feature():
    pa, ratings = _nested_tables()
    items = pa.table({"item_id": [10, 11, 12], "genres": pa.array([["Action", "Drama"], ["Comedy"], None])})
    data = load_dataset(_parquet(ratings), items=_parquet(items), source_names={"items": "items.parquet"})
    assert [(s.name, s.kind) for s in data.item_features] == [("genres", "multilabel")]
    assert data.item_table["genres"].tolist()[:2] == ["Action|Drama", "Comedy"]
    assert any("column 'genres' holds lists; read as '|'-separated labels" in w for w in data.warnings)
    from metarec_core.summary import summarize

    assert summarize(data).n_items == 3  # what the Data page draws (it failed on unhashable values)


def test_gbk_text_is_read_as_chinese_and_latin1_stays_latin1():
    ratings = "user,item,rating\n张三,电影一,4\n李四,电影二,3\n张三,电影二,5\n王五,电影一,2\n"
    for codec in ("gbk", "gb18030"):
        data = load_dataset(ratings.encode(codec), source_names={"interactions": "评分.csv"})
        assert data.users.external_ids == ("张三", "李四", "王五") and data.items.external_ids == ("电影一", "电影二")
        assert any("read it as GB18030 (GBK) Chinese text" in w for w in data.warnings)
    latin = load_dataset("user,item,rating\ncafé,1,4\nnaïve,2,3\ncafé,2,5\n".encode("latin-1"))
    assert latin.users.external_ids == ("café", "naïve") and any("Latin-1" in w for w in latin.warnings)
