"""Synthetic scenarios: seeded datasets with a known taste-group structure, for teaching and tests."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd

from metarec_core.dataset import Dataset
from metarec_core.features import FeatureSpec
from metarec_core.idmap import IdMap

#: Category themes: a tag name and the words its descriptions and titles are made of.
THEMES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("space", ("galaxy", "rocket", "planet", "orbit", "alien", "star", "astronaut", "nebula", "comet", "cosmic")),
    ("romance", ("love", "heart", "kiss", "wedding", "romance", "letter", "darling", "passion", "sweetheart", "rose")),
    ("crime", ("detective", "murder", "heist", "gangster", "police", "crime", "clue", "alibi", "suspect", "robbery")),
    ("comedy", ("funny", "joke", "laugh", "prank", "silly", "comic", "party", "goofy", "blunder", "mischief")),
    ("nature", ("forest", "river", "mountain", "wildlife", "ocean", "jungle", "bird", "wolf", "glacier", "desert")),
    ("history", ("empire", "king", "war", "castle", "ancient", "dynasty", "revolution", "knight", "pharaoh", "medieval")),
    ("sports", ("team", "goal", "champion", "match", "coach", "stadium", "race", "trophy", "league", "score")),
    ("music", ("song", "band", "guitar", "concert", "melody", "rhythm", "singer", "piano", "jazz", "tour")),
    ("horror", ("ghost", "haunted", "zombie", "scream", "monster", "curse", "vampire", "shadow", "nightmare", "blood")),
    ("cooking", ("recipe", "kitchen", "chef", "bake", "flavor", "spice", "dinner", "feast", "bread", "garden")),
)
NOISE_WORDS: tuple[str, ...] = (
    "the", "story", "life", "day", "world", "new", "old", "great", "little", "journey",
    "people", "time", "city", "night", "family", "home", "way", "friends", "secret", "last",
)
OCCUPATIONS: tuple[str, ...] = ("student", "engineer", "artist", "teacher", "doctor", "writer", "retired", "sales")

_START_TIME = 1_000_000_000  # seconds (September 2001)
_SPAN = 365 * 24 * 3600
#: Above this many user x item cells (or this many items) the rated items are drawn per rating instead of
#: ranking every item for every user, so memory and time grow with the ratings, not with users x items.
LARGE_CELLS = 1 << 25
LARGE_ITEMS = 8192


@dataclass(frozen=True)
class SyntheticConfig:
    """Settings of a synthetic scenario (build with :func:`~metarec_core.configs.config_from_dict`).

    Parameters
    ----------
    n_users, n_items
        Users and items with interactions.
    cold_users, cold_items
        Extra users / items that appear only in the side tables (no interactions).
    n_groups
        User taste groups; users of a group share their category affinities.
    n_categories
        Item categories (themes of titles, descriptions and tags).
    ratings_per_user
        Inclusive (min, max) number of interactions per user: the sparsity.
    popularity_skew
        Zipf exponent of item popularity (0 = uniform; larger = longer tail).
    affinity
        Spread of the group x category affinities (the latent signal).
    user_bias_std, item_bias_std
        Spread of per-user offsets and per-item biases.
    noise
        Standard deviation of rating noise before rounding.
    rating_scale
        Inclusive integer (lowest, highest) rating.
    implicit
        Produce implicit data (rating 1; users pick items they like).
    two_domains
        Give items a ``domain`` column, ``source`` or ``target``, each domain with
        its own affinities over the same user groups.
    domain_similarity
        Correlation of the target domain's affinities with the source's.
    feature_signal
        Probability that a user's occupation is their group's (demographics carry signal).
    text_signal
        Share of description words drawn from the item's category (the rest is noise).
    seed
        Seed of the ``numpy.random.Generator``.
    """

    n_users: int = 300
    n_items: int = 200
    cold_users: int = 0
    cold_items: int = 0
    n_groups: int = 4
    n_categories: int = 5
    ratings_per_user: tuple[int, int] = (20, 60)
    popularity_skew: float = 0.8
    affinity: float = 1.0
    user_bias_std: float = 0.3
    item_bias_std: float = 0.3
    noise: float = 0.4
    rating_scale: tuple[int, int] = (1, 5)
    implicit: bool = False
    two_domains: bool = False
    domain_similarity: float = 0.5
    feature_signal: float = 0.7
    text_signal: float = 0.6
    seed: int = 0

    def __post_init__(self) -> None:
        if self.n_users < 2 or self.n_items < 2:
            raise ValueError("n_users and n_items must be at least 2")
        if self.cold_users < 0 or self.cold_items < 0:
            raise ValueError("cold_users and cold_items must be >= 0")
        if self.n_groups < 1 or self.n_categories < 1:
            raise ValueError("n_groups and n_categories must be at least 1")
        lo, hi = (tuple(self.ratings_per_user) + (None, None))[:2]
        if lo is None or hi is None or len(self.ratings_per_user) != 2 or not 1 <= lo <= hi:
            raise ValueError(f"ratings_per_user must be (min, max) with 1 <= min <= max, got {self.ratings_per_user}")
        if hi > self.n_items:
            raise ValueError(f"ratings_per_user max {hi} exceeds n_items {self.n_items}")
        if len(self.rating_scale) != 2 or not self.rating_scale[0] < self.rating_scale[1]:
            raise ValueError(f"rating_scale must be (lowest, highest) with lowest < highest, got {self.rating_scale}")
        for name in ("noise", "affinity", "user_bias_std", "item_bias_std", "popularity_skew"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        for name in ("domain_similarity", "feature_signal", "text_signal"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")


@dataclass(frozen=True)
class SyntheticScenario:
    """A synthetic dataset and the latent structure that generated it.

    Attributes
    ----------
    dataset
        The data, external IDs ``"1"..`` in index order (side-table-only users and
        items last).
    user_group
        Taste group of each user index.
    item_category
        Category of each item index.
    item_domain
        ``"source"`` / ``"target"`` per item index when ``two_domains``, else None.
    affinity
        ``(n_domains, n_groups, n_categories)`` group x category affinity.
    user_offset, item_bias
        Per-user offsets and per-item biases.
    config
        The settings used.
    """

    dataset: Dataset
    user_group: np.ndarray
    item_category: np.ndarray
    item_domain: np.ndarray | None
    affinity: np.ndarray
    user_offset: np.ndarray
    item_bias: np.ndarray
    config: SyntheticConfig

    def expected_rating(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Noise-free (unrounded, unclipped) rating of user/item index pairs."""
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        domain = _domain_index(self.item_domain, items)
        lo, hi = self.config.rating_scale
        base = (lo + hi) / 2.0 + 0.5
        return (
            base
            + self.user_offset[users]
            + self.item_bias[items]
            + self.affinity[domain, self.user_group[users], self.item_category[items]]
        )


def _domain_index(item_domain: np.ndarray | None, items: np.ndarray) -> np.ndarray:
    if item_domain is None:
        return np.zeros(len(items), dtype=np.int64)
    return (item_domain[items] == "target").astype(np.int64)


def make_synthetic(config: SyntheticConfig | None = None) -> SyntheticScenario:
    """Generate a seeded synthetic scenario with taste groups and item categories.

    Ratings are ``clip(round(mid + user offset + item bias + affinity[group,
    category] + noise))``; which items a user rates follows item popularity (and,
    for implicit data, the user's affinity). Users' age, gender and occupation
    depend on their group; items get a ``title`` and a ``description`` (text
    built from category words and noise words), ``tags`` (multi-label), a
    ``price`` and, with two domains, a ``domain``.

    Parameters
    ----------
    config
        Settings (default: 300 users, 200 items, 4 groups, 5 categories).

    Returns
    -------
    SyntheticScenario

    Examples
    --------
    >>> scenario = make_synthetic(SyntheticConfig(n_users=50, n_items=40, ratings_per_user=(5, 10)))
    >>> scenario.dataset.n_users, len(scenario.user_group)
    (50, 50)
    """
    config = config or SyntheticConfig()
    rng = np.random.default_rng(config.seed)
    n_u_all = config.n_users + config.cold_users
    n_i_all = config.n_items + config.cold_items
    G, C = config.n_groups, config.n_categories

    user_group = rng.permutation(np.arange(n_u_all) % G).astype(np.int64)
    item_category = rng.permutation(np.arange(n_i_all) % C).astype(np.int64)
    item_domain = None
    if config.two_domains:
        item_domain = np.where(rng.permutation(np.arange(n_i_all) % 2) == 0, "source", "target").astype(object)
    affinity = _affinities(rng, config)
    user_offset = rng.normal(0.0, config.user_bias_std, n_u_all)
    item_bias = rng.normal(0.0, config.item_bias_std, n_i_all)
    popularity = rng.permutation((np.arange(config.n_items) + 1.0) ** -config.popularity_skew)

    lo, hi = config.ratings_per_user
    counts = rng.integers(lo, hi + 1, size=config.n_users)
    log_pop = np.log(popularity)
    dom = _domain_index(item_domain, np.arange(config.n_items))
    if config.n_users * config.n_items > LARGE_CELLS or config.n_items > LARGE_ITEMS:
        users, items = _draw_rated_items(rng, config, counts, log_pop, affinity, dom, user_group, item_category)
    else:
        users, items = _rank_rated_items(rng, config, counts, log_pop, affinity, dom, user_group, item_category)

    # The latent structure first (its expected_rating draws the ratings); the dataset is filled in below.
    scenario_partial = SyntheticScenario(
        dataset=None,  # type: ignore[arg-type]
        user_group=user_group,
        item_category=item_category,
        item_domain=item_domain,
        affinity=affinity,
        user_offset=user_offset,
        item_bias=item_bias,
        config=config,
    )
    if config.implicit:
        rating = np.ones(len(users), dtype=np.float32)
    else:
        raw = scenario_partial.expected_rating(users, items) + rng.normal(0.0, config.noise, len(users))
        rating = np.clip(np.round(raw), *config.rating_scale).astype(np.float32)
    timestamp = _timestamps(rng, users, counts, config.n_users)
    # A quarter of the items are released late in the year: nobody rates them before (time-based item cold start).
    release = np.full(config.n_items, _START_TIME, dtype=np.int64)
    late = rng.random(config.n_items) < 0.25
    release[late] += rng.integers(int(0.5 * _SPAN), _SPAN, size=int(late.sum()))
    timestamp = np.maximum(timestamp, release[items] + rng.integers(0, 7 * 86400, size=len(items)))

    ratings = pd.DataFrame({"user": users, "item": items, "rating": rating, "timestamp": timestamp})
    ratings = ratings.sort_values(["user", "timestamp"], kind="stable").reset_index(drop=True)
    user_table = _user_table(rng, user_group, config)
    item_table = _item_table(rng, item_category, item_domain, config)
    item_specs = [
        FeatureSpec("title", "text"),
        FeatureSpec("description", "text"),
        FeatureSpec("tags", "multilabel"),
        FeatureSpec("price", "numeric"),
    ]
    if item_domain is not None:
        item_specs.append(FeatureSpec("domain", "categorical"))
    name = "synthetic" + ("-implicit" if config.implicit else "") + ("-2domains" if config.two_domains else "")
    dataset = Dataset(
        name=name,
        ratings=ratings,
        users=IdMap(str(i + 1) for i in range(n_u_all)),
        items=IdMap(str(i + 1) for i in range(n_i_all)),
        user_table=user_table,
        item_table=item_table,
        user_features=(
            FeatureSpec("age", "numeric"),
            FeatureSpec("gender", "categorical"),
            FeatureSpec("occupation", "categorical"),
        ),
        item_features=tuple(item_specs),
        implicit=config.implicit,
    )
    return dataclasses.replace(scenario_partial, dataset=dataset)


def _item_logits(config: SyntheticConfig, log_pop: np.ndarray, affinity: np.ndarray, dom: np.ndarray, groups: np.ndarray, item_category: np.ndarray) -> np.ndarray:
    """``(len(groups), n_items)`` log-weights of picking each item: popularity, plus taste on implicit data."""
    logits = np.broadcast_to(log_pop, (len(groups), config.n_items)).copy()
    if config.implicit:
        logits += 2.0 * affinity[dom[None, :], groups[:, None], item_category[None, : config.n_items]]
    return logits


def _rank_rated_items(rng, config, counts, log_pop, affinity, dom, user_group, item_category) -> tuple[np.ndarray, np.ndarray]:
    """Who rates what, exactly: Gumbel top-k sampling without replacement over every item, chunked over users."""
    users_out: list[np.ndarray] = []
    items_out: list[np.ndarray] = []
    for start in range(0, config.n_users, 1024):
        chunk = np.arange(start, min(start + 1024, config.n_users))
        logits = _item_logits(config, log_pop, affinity, dom, user_group[chunk], item_category)
        keys = logits + rng.gumbel(size=logits.shape)
        order = np.argsort(-keys, axis=1)
        for row, u in enumerate(chunk):
            items_out.append(rng.permutation(order[row, : counts[u]]))
            users_out.append(np.full(counts[u], u, dtype=np.int64))
    return np.concatenate(users_out), np.concatenate(items_out).astype(np.int64)


def _draw_rated_items(rng, config, counts, log_pop, affinity, dom, user_group, item_category) -> tuple[np.ndarray, np.ndarray]:
    """Who rates what, for large sizes: each rating draws an item by the same weights, and a user's repeats are drawn again.

    Memory is a few arrays of one number per rating (no users x items matrix)
    and time grows with the ratings. Redrawing the repeats until every user's
    items are distinct samples them without replacement, as the exact path
    does (up to the order in which repeats are resolved). With
    ``ratings_per_user`` close to ``n_items`` repeats may remain after many
    rounds; those are filled from the user's unrated items, heaviest first.
    """
    users = np.repeat(np.arange(config.n_users, dtype=np.int64), counts)
    items = np.empty(len(users), dtype=np.int64)
    group_of_row = user_group[users]
    groups = np.unique(group_of_row) if config.implicit else np.zeros(1, dtype=np.int64)
    cdfs = {}
    for g in groups:
        weights = np.exp(_item_logits(config, log_pop, affinity, dom, np.array([g]), item_category)[0])
        cdfs[int(g)] = np.cumsum(weights / weights.sum())

    def draw(rows: np.ndarray) -> None:
        for g, cdf in cdfs.items():
            mine = rows if not config.implicit else rows[group_of_row[rows] == g]
            picked = np.searchsorted(cdf, rng.random(len(mine)) * cdf[-1], side="right")
            items[mine] = np.minimum(picked, config.n_items - 1)

    pending = np.arange(len(users))
    for _ in range(64):
        draw(pending)
        key = users * config.n_items + items
        order = np.argsort(key, kind="stable")
        repeat = np.zeros(len(key), dtype=bool)
        repeat[order[1:]] = key[order[1:]] == key[order[:-1]]
        pending = np.flatnonzero(repeat)
        if not len(pending):
            return users, items
    for row in pending:  # a user who wants nearly every item: fill from their unrated items, heaviest first
        u = users[row]
        taken = set(items[users == u].tolist())
        cdf = cdfs[int(group_of_row[row]) if config.implicit else 0]
        weights = np.diff(np.concatenate([[0.0], cdf]))
        items[row] = next(int(i) for i in np.argsort(-weights) if int(i) not in taken)
    return users, items


def _affinities(rng: np.random.Generator, config: SyntheticConfig) -> np.ndarray:
    """``(n_domains, G, C)`` affinities: a favourite category per group plus random taste, rows centred."""
    G, C = config.n_groups, config.n_categories

    def one() -> np.ndarray:
        a = rng.standard_normal((G, C))
        a[np.arange(G), (np.arange(G) + rng.integers(C)) % C] += 2.0
        a -= a.mean(axis=1, keepdims=True)
        std = a.std()
        return a / std if std > 0 else a

    source = one()
    if not config.two_domains:
        return (config.affinity * source)[None]
    rho = config.domain_similarity
    target = rho * source + np.sqrt(1.0 - rho**2) * one()
    target -= target.mean(axis=1, keepdims=True)
    target /= max(target.std(), 1e-12)
    return config.affinity * np.stack([source, target])


def _timestamps(rng: np.random.Generator, users: np.ndarray, counts: np.ndarray, n_users: int) -> np.ndarray:
    """Each user starts at a random time in the first 80% of a year and rates about once a day."""
    start = _START_TIME + rng.integers(0, int(0.8 * _SPAN), size=n_users)
    gaps = rng.exponential(86400.0, size=len(users))
    # Cumulative gaps within each user's block (rows are grouped by user).
    offsets = np.cumsum(gaps)
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])
    base = np.repeat(offsets[first] - gaps[first], counts)
    return (start[users] + (offsets - base)).astype(np.int64)


def _user_table(rng: np.random.Generator, user_group: np.ndarray, config: SyntheticConfig) -> pd.DataFrame:
    n = len(user_group)
    G = config.n_groups
    mean_age = 20.0 + 40.0 * (np.arange(G) / max(G - 1, 1))
    age = np.clip(np.round(rng.normal(mean_age[user_group], 5.0)), 15, 80).astype(np.int64)
    p_female = 0.2 + 0.6 * (np.arange(G) % 2)
    gender = np.where(rng.random(n) < p_female[user_group], "F", "M")
    own = np.array(OCCUPATIONS, dtype=object)[user_group % len(OCCUPATIONS)]
    other = np.array(OCCUPATIONS, dtype=object)[rng.integers(len(OCCUPATIONS), size=n)]
    occupation = np.where(rng.random(n) < config.feature_signal, own, other)
    return pd.DataFrame({"age": age, "gender": gender, "occupation": occupation.astype(str)})


def _theme(category: int) -> tuple[str, tuple[str, ...]]:
    if category < len(THEMES):
        return THEMES[category]
    tag = f"theme{category + 1}"
    return tag, tuple(f"{tag}word{j + 1}" for j in range(10))


def _item_table(
    rng: np.random.Generator, item_category: np.ndarray, item_domain: np.ndarray | None, config: SyntheticConfig
) -> pd.DataFrame:
    n = len(item_category)
    titles: list[str] = []
    descriptions: list[str] = []
    tags: list[str] = []
    seen: dict[str, int] = {}
    tag_names = [_theme(c)[0] for c in range(config.n_categories)]
    noise = np.array(NOISE_WORDS, dtype=object)
    for i in range(n):
        tag, words = _theme(int(item_category[i]))
        w = rng.choice(len(words), size=2, replace=False)
        title = f"{words[w[0]].capitalize()} {rng.choice(noise).capitalize()} {words[w[1]].capitalize()}"
        seen[title] = seen.get(title, 0) + 1
        titles.append(title if seen[title] == 1 else f"{title} {seen[title]}")
        n_words = int(rng.integers(8, 14))
        from_theme = rng.random(n_words) < config.text_signal
        chosen = np.where(from_theme, np.array(words, dtype=object)[rng.integers(len(words), size=n_words)],
                          noise[rng.integers(len(noise), size=n_words)])
        descriptions.append(" ".join(chosen).capitalize() + ".")
        item_tags = [tag] if rng.random() < 0.9 else []
        for extra in rng.choice(len(tag_names), size=int(rng.integers(0, 3)), replace=False):
            if tag_names[extra] not in item_tags:
                item_tags.append(tag_names[extra])
        tags.append("|".join(item_tags) if item_tags else None)  # type: ignore[arg-type]
    price = np.round(np.exp(np.log(5.0 + 3.0 * (item_category % 5)) + rng.normal(0.0, 0.3, n)), 2)
    table = pd.DataFrame(
        {
            "title": pd.Series(titles),
            "description": pd.Series(descriptions),
            "tags": pd.Series(tags),
            "price": price,
        }
    )
    if item_domain is not None:
        table["domain"] = pd.Series(item_domain.astype(str))
    return table
