"""ID maps: external ID <-> index, normalisation, immutability, JSON round trip."""
from __future__ import annotations

import numpy as np
import pytest

from metarec_core.idmap import IdMap, normalise_id


def test_index_and_external_round_trip():
    ids = IdMap(["u1", "u2", "u3"])
    assert len(ids) == 3
    assert [ids.index(x) for x in ids.external_ids] == [0, 1, 2]
    assert ids.externals([2, 0]) == ["u3", "u1"]
    assert ids.external(np.int64(1)) == "u2"
    with pytest.raises(KeyError):
        ids.index("nobody")
    assert ids.get("nobody") == -1 and ids.get("nobody", 99) == 99


def test_normalisation_makes_csv_and_parquet_ids_equal():
    assert normalise_id(3) == normalise_id(3.0) == normalise_id(np.int64(3)) == normalise_id(" 3 ") == "3"
    assert normalise_id(b"x ") == "x"
    assert normalise_id(2.5) == "2.5"
    ids = IdMap([1, 2, 10])
    assert ids.index("10") == 2 and 2.0 in ids and "7" not in ids
    assert ids.lookup([10, "1", 5.0, "zz"]).tolist() == [2, 0, -1, -1]
    assert ids.lookup([]).dtype == np.int64


def test_duplicates_are_rejected():
    with pytest.raises(ValueError, match="duplicate external ID '1'"):
        IdMap([1, "2", 1.0])


def test_extended_keeps_old_indices_and_appends_new_ones():
    ids = IdMap(["a", "b"])
    more = ids.extended(["b", "c", "a", "d", "c"])
    assert more.external_ids == ("a", "b", "c", "d")
    assert ids.external_ids == ("a", "b")  # the original is unchanged
    assert more.index("a") == ids.index("a")


def test_json_equality_and_hash():
    ids = IdMap(["x", "y"])
    again = IdMap.from_json(ids.to_json())
    assert again == ids and hash(again) == hash(ids)
    assert again != IdMap(["y", "x"])
    assert "2 ids" in repr(ids)
