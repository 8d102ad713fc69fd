"""The Cold-start lab's parts: the lab user's state, the cached run data, item cards, top lists, map, losses and the download."""
from __future__ import annotations

import io
import logging
import re
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from metarec_core import elicitation, embedding_views, popularity, projection
from metarec_core.errors import MetarecError
from ui import cache, charts, datasets, runs, state
from ui.errors import guard
from ui.i18n import cohort_labels, language, t, worded
from ui.markup import plain

_LOG = logging.getLogger(__name__)

RATINGS = "lab_ratings"  # list of (item_id, rating) in the order given; demographics live in the lab_feat_* widgets
REPLAY = "lab_replay"
DATASET_OF = "lab_dataset"  # the dataset the lab user's ratings are of
MEMOS = ("lab_loss_memo", "lab_trail_memo")  # per-step losses and trail positions computed so far
RANKED = "lab_ranked"  # the three lists a star's callback ranked for the rerun it starts (taken by that rerun)
WAITING = "lab_waiting_for"  # the ID of the queued or training run of the other kind, until it ends
WAIT_POLL_S = 2.0  # how often the page looks whether that run has ended
TOP_K = 6  # rows of each top list: all three lists, the map and the rating cards fit one 1440x900 screen
N_CARDS = 6
LISTED = "lab_listed"  # the key (ranked_key) of the lists the browser was last sent
#: How long the fragment waits after sending three new lists before it computes and sends the rest. Without the wait
#: the rest's elements reach the browser while it is still drawing the lists, and their React render (50-100 ms) often
#: comes before the frame that shows them: the lists' median was 121-184 ms without it and 82-111 ms with it
#: (benchmarks/results/lab.md, "head start" rows), the page settling up to 50 ms later.
LISTS_HEAD_START_S = 0.04
MAP_HEIGHT = 262  # the map and the loss chart, legends and axes included
LOSS_HEIGHT = 262
UNKNOWN = "—"
#: The run each kind is compared with, and the preset that trains one.
COMPARED_KIND = {"both": "transfer", "meta": "transfer", "transfer": "both"}
PRESET_OF_KIND = {"transfer": "transfer only", "both": "new users (meta + transfer)"}
#: Characters that make a spreadsheet read a cell as a formula.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


#: The lab's layout at 1440x900: less padding around the page, compact item cards and star buttons (static, no data).
STYLE = """<style>
[data-testid="stMainBlockContainer"] { padding: 2.4rem 2rem 1rem 2rem; }
.st-key-lab-rate [class*="st-key-lab-card-"] { padding: 0.4rem 0.5rem; flex-wrap: wrap; }
.st-key-lab-rate [class*="st-key-lab-card-"] > div:first-child { flex: 1 0 100%; min-width: 0; }
.st-key-lab-rate [class*="st-key-lab-card-"] button { min-height: 1.8rem; padding: 0 0.32rem; }
.st-key-lab-recommendations [data-testid="stMarkdownContainer"] p { font-size: 0.88rem; min-height: 3.2em; }
[class*="st-key-lab-list-"] { flex-wrap: nowrap; }
[class*="st-key-lab-list-"] > div:first-child { min-width: 0; flex: 1 1 0; }
/* Lines of plain text (st.text): one line each, cut with an ellipsis; the first line (a title, a header) in bold. */
.st-key-lab-rate [class*="st-key-lab-card-"] [data-testid="stText"] > span, [class*="st-key-lab-list-"] [data-testid="stText"] > span {
  display: block; min-width: 0; flex: 1 1 auto; white-space: pre; overflow: hidden; text-overflow: ellipsis; font-size: 0.875rem; line-height: 1.6; }
.st-key-lab-rate [class*="st-key-lab-card-"] [data-testid="stText"] > span::first-line { font-weight: 600; font-size: 1rem; }
[class*="st-key-lab-list-"] [data-testid="stText"] > span::first-line { font-weight: 600; }
</style>"""


def style() -> None:
    """Apply the lab's layout (a style element takes no space on the page)."""
    st.html(STYLE)


# ---------------------------------------------------------------- the lab user
def reset() -> None:
    """Forget the lab user (ratings and demographics)."""
    st.session_state[RATINGS] = []
    for key in MEMOS:
        st.session_state.pop(key, None)
    for key in [k for k in st.session_state if str(k).startswith("lab_feat_")]:
        del st.session_state[key]
    st.session_state.pop(REPLAY, None)
    st.session_state.pop(RANKED, None)


def add_rating(item_id: str, rating: float) -> None:
    """Add (or replace) the lab user's rating of an item, and show the model after all of them."""
    ratings = [(i, r) for i, r in st.session_state.get(RATINGS, []) if i != item_id]
    st.session_state[RATINGS] = ratings + [(item_id, float(rating))]
    st.session_state[REPLAY] = len(st.session_state[RATINGS])
    # Rank the lists here, in the callback: it runs before the fragment's container is sent, so the browser gets the
    # container and the three lists in one batch and draws them in one pass (instead of a pass for the emptied
    # container first).
    try:
        run = state.current_run()
        rec = state.current_recommender() if run is not None else None
        if rec is not None and st.session_state.get(DATASET_OF) == run.dataset_ref:
            st.session_state[RANKED] = ranked_lists(run, rec, list(st.session_state[RATINGS]), stated_features(rec))
    except Exception:  # the fragment ranks them again, and says what went wrong
        _LOG.exception("ranking the lab's lists in the star's callback failed")


def memo(name: str, run_id: str, stamp: float) -> dict:
    """A session's store of results for one run and weights version (a run still training gets fresh ones)."""
    held = st.session_state.get(name)
    if not held or held[0] != (run_id, stamp):
        held = st.session_state[name] = ((run_id, stamp), {})
    return held[1]


def rating_scale(rec: Any) -> list[float]:
    """The rating values a user can give (1..5 on ML-100K; just "liked" on implicit data)."""
    if rec.run.implicit:
        return [1.0]
    lo, hi = rec.run.rating_range
    return [float(v) for v in np.arange(np.ceil(lo), np.floor(hi) + 1)] or [lo, hi]


def star_label(value: float, implicit: bool) -> str:
    """A star button's label: ``4★`` (every star button's label ends in ★), ``liked ★`` on implicit data."""
    return f"{t('lab.liked')} ★" if implicit else f"{value:g}★"


# ---------------------------------------------------------------- cached per run
@dataclass(frozen=True)
class LabData:
    """What the lab reads of a run on every rating, computed once per run and weights version."""

    items: pd.DataFrame  # the run's item frame with ``x``, ``y`` (PCA) and ``blurb``
    titles: dict[str, str]
    n_ratings: dict[str, int]
    row_of: dict[str, int]
    pca: projection.PCAProjection
    known_share: np.ndarray  # share of the dataset's users who rated each item
    prior: np.ndarray  # covariance of the run's users' taste vectors
    noise_var: float
    item_vectors: np.ndarray


@st.cache_resource(show_spinner=False, max_entries=4)
def lab_data(run_id: str, weights_mtime: float) -> LabData:
    """The run's items, their map coordinates and the elicitation's prior, for one version of its weights."""
    run = cache.store().get_run(run_id)
    embeddings = cache.run_embeddings(run_id, weights_mtime)
    dataset = cache.load_dataset_ref(run.dataset_ref)
    coords = projection.cached_projection(cache.store().run_dir(run_id), "items", "pca", embeddings.item_vectors)
    items = pd.concat([coords[["x", "y"]].reset_index(drop=True), embeddings.items.reset_index(drop=True)], axis=1)
    items["blurb"] = embedding_views.item_blurbs(embeddings.items)
    ids = items["id"].tolist()
    ratings = dataset.ratings["rating"].to_numpy(float)
    spread = float(np.var(ratings)) if len(ratings) else 0.0
    return LabData(
        items=items, titles=dict(zip(ids, items["label"].astype(str))), n_ratings=dict(zip(ids, items["n_ratings"].astype(int))),
        row_of={i: n for n, i in enumerate(ids)}, pca=projection.fit_pca(embeddings.item_vectors),
        known_share=items["n_ratings"].to_numpy(float) / max(1, dataset.n_users),
        prior=elicitation.taste_prior(embeddings.user_vectors), noise_var=spread if spread > 1e-6 else 1.0,
        item_vectors=embeddings.item_vectors,
    )


@st.cache_resource(show_spinner=False, max_entries=8)
def map_base(run_id: str, weights_mtime: float, lang: str) -> tuple[pd.DataFrame, bytes, dict[str, str]]:
    """The map's items (``x``, ``y``, ``title``, ``group``), as a frame and as Arrow bytes, and its legend (name -> colour).

    Once per weights version and language: the item layer is the same on every
    rating, so its bytes are too, and the browser's chart keeps the data it has.
    """
    from streamlit import dataframe_util

    data = lab_data(run_id, weights_mtime)
    names = cohort_labels()
    cohorts = data.items["cohort"].astype(str)
    order = [c for c in charts.COHORT_COLOURS if c != "you" and (cohorts == c).any()]
    order += sorted(set(cohorts) - set(order))
    groups = {names.get(c, c): charts.COHORT_COLOURS.get(c, charts.GROUP_COLOURS[n % len(charts.GROUP_COLOURS)]) for n, c in enumerate(order)}
    points = pd.DataFrame({"x": data.items["x"].to_numpy(float), "y": data.items["y"].to_numpy(float),
                           "title": data.items["label"].astype(str).to_numpy(), "group": cohorts.map(lambda c: names.get(c, c)).to_numpy()})
    return points, dataframe_util.convert_anything_to_arrow_bytes(points), groups


# ---------------------------------------------------------------- pure helpers
def lists_csv(lists: dict[str, pd.DataFrame], ratings: list[tuple[str, float]], titles: dict[str, str]) -> bytes:
    """The lab user's ratings and top lists as one CSV (``list``, ``rank``, ``item_id``, ``title``, ``value``).

    ``value`` is the rating given, the predicted score, or the number of
    ratings (popularity), by list.

    Titles that a spreadsheet would run as a formula (``=…``, ``+…``, ``-…``,
    ``@…``) are written with a leading apostrophe.
    """
    def cell(text: object) -> str:
        text = str(text)
        return "'" + text if text.startswith(_FORMULA_START) else text

    rows = [("ratings", n, i, cell(titles.get(i, i)), f"{r:g}") for n, (i, r) in enumerate(ratings, start=1)]
    for name, frame in lists.items():
        rows += [(name, n, i, cell(titles.get(i, i)), f"{float(v):.6g}") for n, (i, v) in enumerate(zip(frame["item_id"], frame["value"]), start=1)]
    out = io.StringIO()
    pd.DataFrame(rows, columns=["list", "rank", "item_id", "title", "value"]).to_csv(out, index=False)
    return out.getvalue().encode("utf-8")


#: Characters that end a line: a title holding one is shown on one line (they become spaces).
_LINE_BREAKS = re.compile(r"[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+")


def list_columns(frame: pd.DataFrame, titles: dict[str, str], header: tuple[str, str], number_format: str) -> tuple[str, str]:
    """A top list as two plain-text columns, one line per item under a header line: the titles, and the values.

    ``frame`` has ``item_id`` and ``value``; ``number_format`` is a ``%`` format of the values (``"%.2f"``).
    """
    names = [_LINE_BREAKS.sub(" ", str(titles.get(i, i))) for i in frame["item_id"]]
    values = [number_format % float(v) for v in frame["value"]]
    return "\n".join([header[0], *names]), "\n".join([header[1], *values])


def read_list(names: str, values: str) -> pd.DataFrame:
    """The frame of a top list drawn by :func:`list_columns` (its header line names the columns)."""
    lines, numbers = names.split("\n"), values.split("\n")
    return pd.DataFrame({lines[0]: lines[1:], numbers[0]: [float(v) for v in numbers[1:]]})


# ---------------------------------------------------------------- drawing
def stated_features(rec: Any) -> dict[str, object]:
    """The demographics the lab user gave, read from the widgets' state (before the widgets are drawn)."""
    values: dict[str, object] = {}
    for vocab in rec.run.user_encoder.vocabs:
        value = st.session_state.get(f"lab_feat_{vocab.spec.name}")
        if vocab.spec.kind in ("numeric", "categorical") and value is not None and value != UNKNOWN:
            values[vocab.spec.name] = value
    return values


def demographics(rec: Any) -> dict[str, object]:
    """Optional side features of the new user, from the run's user feature vocabularies."""
    values: dict[str, object] = {}
    for vocab in rec.run.user_encoder.vocabs:
        name = vocab.spec.name
        if vocab.spec.kind == "numeric":
            value = st.number_input(name, value=None, step=1.0, key=f"lab_feat_{name}", placeholder=UNKNOWN)
        elif vocab.spec.kind == "categorical":
            value = st.selectbox(name, [UNKNOWN, *vocab.vocabulary], key=f"lab_feat_{name}")
            value = None if value == UNKNOWN else value
        else:
            continue
        if value is not None:
            values[name] = value
    return values


def item_card(data: LabData, slot: int, item_id: str, scale: list[float], given: float | None, implicit: bool) -> None:
    """One item in the ``slot``-th card: its title, year or category, how many rated it, and a star button per rating value.

    The card's container is keyed by its slot, not its item: when a rating puts
    another item in that slot, the browser updates the card it has (its text and
    buttons) instead of removing it and building a new one. The star buttons
    stay keyed by item, so a click always rates the item it was drawn for.
    """
    title = _LINE_BREAKS.sub(" ", data.titles.get(item_id, item_id))
    blurb = data.items["blurb"].iat[data.row_of[item_id]]
    count = t(worded("lab.card.count", implicit), n=data.n_ratings.get(item_id, 0))
    # One element per line of text and per button, no more: every element of the lab is drawn again on each rating.
    with st.container(border=True, key=f"lab-card-{slot}", gap="xxsmall", horizontal=True):
        # st.text: no Markdown, HTML or LaTeX at all (escaped Markdown still turns a bare URL into a link).
        st.text(title + "\n" + " · ".join(p for p in (blurb, count) if p), width="stretch")
        for value in scale:
            st.button(
                star_label(value, implicit), key=f"lab_star_{data.row_of[item_id]}_{value:g}",
                type="primary" if given == value else "secondary", on_click=add_rating, args=(item_id, value),
            )


def cards_on_offer(data: LabData, ratings: list[tuple[str, float]], query: str) -> tuple[list[str], int | None]:
    """The items of the rating cards: the search hits, most rated first, and how many match; or (no search) the items
    the lab user's answers would tell the model most about, and ``None``."""
    if query.strip():
        rows = embedding_views.search(data.items, query, limit=None, most_rated_first=True)
        return data.items["id"].iloc[rows[:N_CARDS]].tolist(), len(rows)
    rated = [data.row_of[i] for i, _ in ratings if i in data.row_of]
    among = np.flatnonzero(data.known_share > 0)
    asked = elicitation.next_items(data.item_vectors, data.known_share, rated, prior=data.prior, noise_var=data.noise_var,
                                   k=N_CARDS, among=among)
    return data.items["id"].iloc[asked["item"]].tolist(), None


def rating_area(rec: Any, data: LabData, implicit: bool, shown: list[str], hits: int | None) -> None:
    """The search box, your demographics, the item cards (``shown``: the suggestions, or ``hits`` search hits)."""
    given = dict(st.session_state[RATINGS])
    row = st.container(horizontal=True, gap="small", vertical_alignment="center")
    with row:
        query = st.text_input(t("lab.search"), key="lab_search", placeholder=t("lab.search.placeholder"), label_visibility="collapsed")
    with row.popover(t("lab.about_you"), icon=":material/person:"):
        demographics(rec)
        if not rec.run.user_encoder.vocabs:
            st.caption(t("lab.about_you.none"))
    if hits is None:
        st.caption(t(worded("lab.ask", implicit)))
    elif shown:
        st.caption(t("lab.search.hits", n=hits, shown=len(shown), query=plain(query)))
    else:
        st.caption(t("lab.search.none", query=plain(query)))
    scale = rating_scale(rec)
    grid = st.columns(2, gap="small")
    for n, item_id in enumerate(shown):
        with grid[n % 2]:
            item_card(data, n, item_id, scale, given.get(item_id), implicit)


def top_list(frame: pd.DataFrame, titles: dict[str, str], value_label: str, number_format: str, key: str) -> None:
    """One top list as two plain-text columns (titles, values): text the browser draws at once, never read as Markdown."""
    names, values = list_columns(frame, titles, (t("common.title"), value_label), number_format)
    with st.container(horizontal=True, gap="small", key=f"lab-list-{key}"):
        st.text(names, width="stretch")
        st.text(values, width="content", text_alignment="right")


@dataclass(frozen=True)
class OtherRun:
    """The comparison run's column: its kind and, when there is one, the run and its list (adapted the same way)."""

    kind: str
    run: Any = None
    top: pd.DataFrame | None = None
    pending: Any = None  # a run of that kind still queued or training


def other_run_top(run: Any, this_kind: str, shown: list, features: dict) -> OtherRun:
    """The run of the other kind and its top list for the lab user's ratings (``top`` is ``None`` without such a run)."""
    other_kind = COMPARED_KIND[this_kind]
    same_data = runs.runs_for(run.dataset_ref)
    other = runs.comparison_run(run, other_kind, same_data)
    if other is None:
        pending = [r for r in same_data if r.is_active and runs.run_kind(r) == other_kind]
        return OtherRun(other_kind, pending=pending[0] if pending else None)
    other_rec = cache.recommender(other.id, cache.weights_stamp(other.id))
    known = [(i, r) for i, r in shown if i in other_rec.items]
    top = other_rec.recommend(other_rec.adapt_user(known, user_features=features), k=TOP_K)
    return OtherRun(other_kind, run=other, top=top.assign(value=top["score"]))


def other_run_list(other: OtherRun, titles: dict[str, str]) -> None:
    """The comparison run's list, or what to do to get one."""
    other_label = t(f"lab.kind.{other.kind}")
    st.markdown(f"**{t('lab.col.other', kind=other_label)}**")
    if other.top is not None:
        top_list(other.top, titles, t("common.score"), "%.2f", "other")
        st.caption(t("lab.other_caption", name=plain(other.run.name)))
    elif other.pending is not None:
        st.session_state[WAITING] = other.pending.id  # the page looks every few seconds and shows its list when it ends
        st.caption(t("lab.other_pending", kind=other_label, name=plain(other.pending.name)))
    else:
        st.caption(t("lab.no_other", kind=other_label))
        if st.button(t("lab.train_other", kind=other_label), icon=":material/play_arrow:", key="lab_train_other"):
            from metarec_core.train_config import preset_config

            with guard():
                keep = st.session_state.get(state.RUN)
                runs.start_run(preset_config(PRESET_OF_KIND[other.kind]), name=other_label)
                st.session_state[state.RUN] = keep
                st.toast(t("lab.other_started", kind=other_label))
                st.rerun()  # the whole page: the column says the run is training, and the page starts looking for its end


def await_other_run() -> None:
    """Rerun the page once the run of the other kind the lab waits for has ended (its list, or the offer to train, shows).

    Drawn by the page, as a fragment rerun every :data:`WAIT_POLL_S` seconds,
    only while there is such a run; it draws nothing.
    """
    run_id = st.session_state.get(WAITING)
    if run_id is None:
        return
    try:
        ended = not cache.store().get_run(run_id).is_active
    except MetarecError:  # deleted meanwhile
        ended = True
    if ended:
        st.session_state.pop(WAITING, None)
        st.rerun()


@dataclass(frozen=True)
class Ranked:
    """The lab's three lists for one set of ratings and demographics, and the state this run adapted to them."""

    key: tuple
    adapted: Any
    top: pd.DataFrame
    elapsed_ms: float  # adapt + rank of this run
    other: OtherRun
    pop: pd.DataFrame


def ranked_key(run: Any, shown: list[tuple[str, float]], features: dict) -> tuple:
    """What the lists depend on: the run and its weights version, the ratings shown and the demographics."""
    return run.id, cache.weights_stamp(run.id), tuple(shown), tuple(sorted(features.items()))


def ranked_lists(run: Any, rec: Any, shown: list[tuple[str, float]], features: dict) -> Ranked:
    """This run's list (adapted to ``shown``), the other run's and the most popular items."""
    data = lab_data(run.id, cache.weights_stamp(run.id))
    started = time.perf_counter()
    adapted = rec.adapt_user(shown, user_features=features)
    top = rec.recommend(adapted, k=TOP_K)
    elapsed_ms = 1000 * (time.perf_counter() - started)
    other = other_run_top(run, rec.run.config.kind, shown, features)
    popular = popularity.most_popular(datasets.run_dataset(run), TOP_K, exclude={i for i, _ in shown}, among=rec.items)
    pop = pd.DataFrame({"item_id": popular, "value": [data.n_ratings.get(i, 0) for i in popular]})
    return Ranked(ranked_key(run, shown, features), adapted, top.assign(value=top["score"]), elapsed_ms, other, pop)


def lab_view() -> None:
    """The lab below its title: rate beside the results; one rating reruns only this fragment, once."""
    with guard():
        run = state.current_run()
        rec = state.current_recommender() if run is not None else None
        if rec is None:
            st.info(t("lab.no_run"))
            from ui import onboarding

            onboarding.offer_default_training()
            return
        stamp = cache.weights_stamp(run.id)
        data = lab_data(run.id, stamp)
        implicit = rec.run.implicit
        if st.session_state.get(DATASET_OF) != run.dataset_ref:  # ratings of another catalogue's items cannot carry over
            reset()
            st.session_state[DATASET_OF] = run.dataset_ref
        ratings = list(st.session_state[RATINGS])
        st.session_state.setdefault(REPLAY, len(ratings))
        if st.session_state[REPLAY] > len(ratings):
            st.session_state[REPLAY] = len(ratings)
        upto = min(int(st.session_state[REPLAY]), len(ratings))
        shown = ratings[:upto]
        features = stated_features(rec)  # what the demographics widgets hold (drawn below, beside the cards)
        # All three lists are ranked before any is drawn (on a star, already in its callback): they leave together.
        held = st.session_state.pop(RANKED, None)  # taken once: any later rerun ranks afresh (another run may finish)
        ranked = held if held is not None and held.key == ranked_key(run, shown, features) else ranked_lists(run, rec, shown, features)
        adapted, top, other, pop, elapsed_ms = ranked.adapted, ranked.top, ranked.other, ranked.pop, ranked.elapsed_ms
        kind = rec.run.config.kind

        left, right = st.columns([5, 7], gap="medium")
        with right:  # first: the lists reach the browser before the cards
            with st.container(key="lab-recommendations"):
                columns = st.columns(3, gap="small")
                with columns[0]:
                    st.markdown(f"**{t('lab.col.this', kind=t(f'lab.kind.{kind}'))}**")
                    top_list(top, data.titles, t("common.score"), "%.2f", "this")
                with columns[1]:
                    other_run_list(other, data.titles)
                with columns[2]:
                    st.markdown(f"**{t('lab.col.popular')}**")
                    top_list(pop, data.titles, t(worded("lab.col.count", implicit)), "%d", "popular")
        # What the rest of the lab shows, computed before any of it is drawn: the lists travel to the browser on their
        # own, and when they are new it draws and shows them before the rest arrives (the head start: the script thread
        # sleeps, no CPU; a search or the zoom toggle leaves the lists as they were and does not wait).
        if st.session_state.get(LISTED) != ranked.key:
            st.session_state[LISTED] = ranked.key
            time.sleep(LISTS_HEAD_START_S)
        offer, hits = cards_on_offer(data, ratings, str(st.session_state.get("lab_search") or ""))
        trail = embedding_views.user_trail(rec, ratings, data.pca, upto=upto, user_features=features,
                                           memo=memo(MEMOS[1], run.id, stamp), last_state=adapted)  # the last step: adapted above
        losses = None
        if shown:
            losses_memo = memo(MEMOS[0], run.id, stamp)
            key = (tuple(shown), tuple(sorted(features.items())))
            if key not in losses_memo:
                losses_memo[key] = rec.step_losses(shown, user_features=features, state=adapted)
            losses = losses_memo[key]
        with left:
            with st.container(key="lab-rate"):
                rating_area(rec, data, implicit, offer, hits)
            # Always there (disabled until it can move), so nothing shifts when it becomes useful.
            st.slider(t("lab.replay"), 0, max(1, len(ratings)), key=REPLAY, help=t("lab.replay.help"), disabled=len(ratings) < 2)
            bar = st.container(horizontal=True, gap="small", vertical_alignment="center")
            with bar.popover(t(worded("lab.your_ratings", implicit), n=len(ratings)), icon=":material/list:"):
                if ratings:
                    mine = pd.DataFrame({"item_id": [i for i, _ in ratings], "value": [r for _, r in ratings]})
                    if implicit:  # every value is 1 ("liked"): the column says nothing
                        st.text(list_columns(mine, data.titles, (t("common.title"), ""), "%g")[0])
                    else:
                        top_list(mine, data.titles, t("common.rating"), "%g", "mine")
                else:
                    st.caption(t("lab.start_hint"))
            bar.button(t("lab.reset"), icon=":material/restart_alt:", key="lab_reset", on_click=reset)
            download = bar.empty()
            info = st.columns(3)
            info[0].metric(t(worded("lab.n_ratings", implicit)), len(shown))
            info[1].metric(t("lab.adapt_ms"), f"{elapsed_ms:.0f} ms", help=t("lab.adapt_ms.help"))
            info[2].metric(t("lab.support_loss"), f"{adapted.losses[-1]:.3f}" if shown and adapted.losses else "—")
        with right:
            map_col, loss_col = st.columns([3, 2], gap="small")
            with map_col:
                draw_map(run.id, stamp, data, trail, top)
            with loss_col:
                draw_losses(losses, implicit)

        lists = {"this run": top, "popularity": pop}
        if other.top is not None:
            lists["other run"] = other.top
        download.download_button(
            t("lab.download"), lists_csv(lists, shown, data.titles), file_name="lab_lists.csv", mime="text/csv",
            icon=":material/download:", key="lab_download", on_click="ignore",
        )


def draw_map(run_id: str, stamp: float, data: LabData, trail: pd.DataFrame, top: pd.DataFrame) -> None:
    """Your path among the items (``trail``), zoomed so that it and the items nearest to it show.

    The chart's spec stays the same from one rating to the next (only its data
    change), so the browser keeps the chart it has and swaps the data in place.
    """
    with st.container(key="lab-map"):
        head = st.container(horizontal=True, vertical_alignment="center", gap="small")
        head.markdown(f"**{t('lab.map')}**")
        focus = head.toggle(t("lab.zoom"), value=True, key="lab_zoom", help=t("lab.zoom.help"))
        rows = [data.row_of[i] for i in top["item_id"] if i in data.row_of]
        points, items, groups = map_base(run_id, stamp, language())
        window = None
        if focus:
            window = projection.view_window(points[["x", "y"]].to_numpy(), trail[["x", "y"]].to_numpy(),
                                            include=points[["x", "y"]].to_numpy()[rows])
        spec = charts.lab_map_spec(groups, you=t("lab.you"), height=MAP_HEIGHT)
        spec["datasets"] = {"items": items, **charts.lab_map_datasets(points, trail, outlined=rows, window=window,
                                                                      step_hover=[t("lab.map.step", n=int(n)) for n in trail["label"]])}
        st.vega_lite_chart(spec, width="stretch")
        st.caption(t("lab.map.caption") + (" " + t("lab.map.zoomed") if focus else ""))


def draw_losses(losses: pd.DataFrame | None, implicit: bool) -> None:
    """The loss per inner step of adapting to your ratings (an empty chart, always there, before the first)."""
    st.markdown(f"**{t('lab.losses')}**")
    labels = {"support": t("lab.loss.support"), "query": t("lab.loss.query")}
    spec = charts.inner_loss_spec(labels, x_title=t("lab.inner_step"), y_title=t("common.loss"), height=LOSS_HEIGHT)
    spec["datasets"] = {"losses": charts.inner_loss_data(losses, labels)}
    st.vega_lite_chart(spec, width="stretch")
    st.caption(t(worded("lab.losses.caption", implicit)) if losses is not None else t("lab.losses.empty"))
