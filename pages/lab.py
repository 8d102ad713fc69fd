"""Cold-start lab: a new user rates a few items; the model adapts on every rating, live."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from metarec_core import embedding_views, popularity, projection
from ui import cache, charts, datasets, navigation, onboarding, runs, state
from ui.errors import guard
from ui.i18n import cohort_labels, t, worded
from ui.markup import plain

RATINGS = "lab_ratings"  # list of (item_id, rating) in the order given
FEATURES = "lab_features"  # the new user's demographics
MEMOS = ("lab_loss_memo", "lab_trail_memo")  # per-step losses and trail positions computed so far
TOP_K = 8
UNKNOWN = "—"
#: The run each kind is compared with, and the preset that trains one.
COMPARED_KIND = {"both": "transfer", "meta": "transfer", "transfer": "both"}
PRESET_OF_KIND = {"transfer": "transfer only", "both": "new users (meta + transfer)"}


def reset() -> None:
    """Forget the lab user (ratings and demographics)."""
    st.session_state[RATINGS] = []
    for key in MEMOS:
        st.session_state.pop(key, None)
    st.session_state[FEATURES] = {}
    for key in [k for k in st.session_state if str(k).startswith("lab_feat_")]:
        del st.session_state[key]
    st.session_state.pop("lab_replay", None)


def add_rating(item_id: str, rating: float) -> None:
    """Add (or replace) the lab user's rating of an item."""
    ratings = [(i, r) for i, r in st.session_state[RATINGS] if i != item_id]
    st.session_state[RATINGS] = ratings + [(item_id, float(rating))]


def memo(name: str, run_id: str, stamp: float) -> dict:
    """A session's store of results for one run and weights version (a run still training gets fresh ones)."""
    held = st.session_state.get(name)
    if not held or held[0] != (run_id, stamp):
        held = st.session_state[name] = ((run_id, stamp), {})
    return held[1]


def demographics(rec) -> dict[str, object]:
    """Optional side features of the new user, from the run's user feature vocabularies."""
    values: dict[str, object] = {}
    vocabs = rec.run.user_encoder.vocabs
    if not vocabs:
        return values
    cols = st.columns(len(vocabs))
    for col, vocab in zip(cols, vocabs):
        name = vocab.spec.name
        if vocab.spec.kind == "numeric":
            value = col.number_input(name, value=None, step=1.0, key=f"lab_feat_{name}", placeholder=UNKNOWN)
        elif vocab.spec.kind == "categorical":
            value = col.selectbox(name, [UNKNOWN, *vocab.vocabulary], key=f"lab_feat_{name}")
            value = None if value == UNKNOWN else value
        else:
            continue
        if value is not None:
            values[name] = value
    return values


def rating_scale(rec) -> list[float]:
    """The rating values a user can give (1..5 on ML-100K; just "liked" on implicit data)."""
    if rec.run.implicit:
        return [1.0]
    lo, hi = rec.run.rating_range
    return [float(v) for v in np.arange(np.ceil(lo), np.floor(hi) + 1)] or [lo, hi]


navigation.enter_page(__file__)
st.title(t("lab.title"))
st.caption(t("lab.intro"))
st.session_state.setdefault(RATINGS, [])
with guard():
    run = state.current_run()
    rec = state.current_recommender() if run is not None else None
    if rec is None:
        st.info(t("lab.no_run"))
        onboarding.offer_default_training()
        st.stop()
    dataset = datasets.run_dataset(run)
    implicit = rec.run.implicit
    stamp = cache.weights_stamp(run.id)  # new weights (a run still training) invalidate the lab's memos
    embeddings = state.current_embeddings()
    titles = dict(zip(embeddings.items["id"], embeddings.items["label"]))
    n_ratings = dict(zip(embeddings.items["id"], embeddings.items["n_ratings"]))

    with st.container(border=True):
        st.markdown(f"**{t('lab.you')}**")
        features = demographics(rec)
        left, mid = st.columns(2, vertical_alignment="bottom")
        query = left.text_input(t("lab.search"), key="lab_search", placeholder=t("lab.search.placeholder"))
        rated = {i for i, _ in st.session_state[RATINGS]}
        if query.strip():
            matches = embeddings.items["id"].iloc[embedding_views.search(embeddings.items, query, limit=30, most_rated_first=True)].tolist()
        else:
            matches = popularity.most_popular(dataset, 30, exclude=rated, among=rec.items)
        if not matches:
            left.warning(t("lab.search.none", query=plain(query)), icon=":material/search_off:")
        item_id = mid.selectbox(
            t(worded("lab.item", implicit)), matches, format_func=lambda i: f"{titles[i]} ({n_ratings.get(i, 0)})", key="lab_item",
            placeholder=t("lab.item.placeholder"),
        )
        scale = rating_scale(rec)
        right, b1, b2, _ = st.columns([3, 1, 1, 2], vertical_alignment="bottom")
        rating = right.segmented_control(
            t(worded("lab.rating", implicit)), scale, format_func=(lambda v: f"{v:g}★") if len(scale) > 1 else {scale[0]: t("lab.liked")}.__getitem__,
            default=scale[-1], required=True, key="lab_rating",
        )
        if b1.button(t("lab.rate"), type="primary", icon=":material/star:", key="lab_rate", disabled=item_id is None):
            add_rating(item_id, float(rating))
            st.session_state.pop("lab_replay", None)
            st.rerun()
        b2.button(t("lab.reset"), icon=":material/restart_alt:", key="lab_reset", on_click=reset)

    ratings = list(st.session_state[RATINGS])
    upto = len(ratings)
    if len(ratings) >= 2:
        upto = st.slider(t("lab.replay"), 0, len(ratings), len(ratings), key="lab_replay", help=t("lab.replay.help"))
    shown = ratings[:upto]

    started = time.perf_counter()
    adapted = rec.adapt_user(shown, user_features=features)
    top_meta = rec.recommend(adapted, k=TOP_K)
    elapsed_ms = 1000 * (time.perf_counter() - started)

    info = st.columns(3)
    info[0].metric(t(worded("lab.n_ratings", implicit)), len(shown))
    info[1].metric(t("lab.adapt_ms"), f"{elapsed_ms:.0f} ms", help=t("lab.adapt_ms.help"))
    info[2].metric(t("lab.support_loss"), f"{adapted.losses[-1]:.3f}" if shown and adapted.losses else "—")
    if shown:
        table = pd.DataFrame({t("common.title"): [titles[i] for i, _ in shown], t("common.rating"): [r for _, r in shown]})
        if implicit:  # every value is 1 ("liked"): the column says nothing
            table = table.drop(columns=[t("common.rating")])
        st.dataframe(table, hide_index=True, height=min(35 * (len(shown) + 1) + 3, 250))
    else:
        st.info(t("lab.start_hint"))

    st.subheader(t("lab.compare"))
    this_kind = rec.run.config.kind
    other_kind = COMPARED_KIND[this_kind]
    same_data = runs.runs_for(run.dataset_ref)
    other = runs.comparison_run(run, other_kind, same_data)
    columns = st.columns(3)
    with columns[0]:
        st.markdown(f"**{t('lab.col.this', kind=t(f'lab.kind.{this_kind}'))}**")
        st.table(pd.DataFrame({t("common.title"): [titles[i] for i in top_meta["item_id"]], t("common.score"): top_meta["score"].map("{:.2f}".format)}), hide_index=True)
    with columns[1]:
        other_label = t(f"lab.kind.{other_kind}")
        st.markdown(f"**{t('lab.col.other', kind=other_label)}**")
        pending = [r for r in same_data if r.is_active and runs.run_kind(r) == other_kind]
        if other is None and pending:
            st.caption(t("lab.other_pending", kind=other_label, name=plain(pending[0].name)))
        elif other is None:
            st.caption(t("lab.no_other", kind=other_label))
            if st.button(t("lab.train_other", kind=other_label), icon=":material/play_arrow:", key="lab_train_other"):
                from metarec_core.train_config import preset_config

                with guard():
                    keep = st.session_state.get(state.RUN)
                    runs.start_run(preset_config(PRESET_OF_KIND[other_kind]), name=other_label)
                    st.session_state[state.RUN] = keep
                    st.toast(t("lab.other_started", kind=other_label))
        else:
            other_rec = cache.recommender(other.id, cache.weights_stamp(other.id))
            other_state = other_rec.adapt_user(shown, user_features=features)
            top_other = other_rec.recommend(other_state, k=TOP_K)
            st.table(pd.DataFrame({t("common.title"): [titles.get(i, i) for i in top_other["item_id"]], t("common.score"): top_other["score"].map("{:.2f}".format)}), hide_index=True)
            st.caption(t("lab.other_caption", name=plain(other.name)))
    with columns[2]:
        st.markdown(f"**{t('lab.col.popular')}**")
        popular = popularity.most_popular(dataset, TOP_K, exclude={i for i, _ in shown}, among=rec.items)
        st.table(pd.DataFrame({t("common.title"): [titles[i] for i in popular], t(worded("lab.col.count", implicit)): [n_ratings.get(i, 0) for i in popular]}), hide_index=True)

    loss_col, map_col = st.columns([2, 3], gap="large")
    with loss_col:
        st.subheader(t("lab.losses"))
        if shown:
            losses_memo = memo(MEMOS[0], run.id, stamp)
            key = (tuple(shown), tuple(sorted(features.items())))
            if key not in losses_memo:
                losses_memo[key] = rec.step_losses(shown, user_features=features, state=adapted)
            st.plotly_chart(
                charts.inner_loss_figure(losses_memo[key], labels={"support": t("lab.loss.support"), "query": t("lab.loss.query")},
                                         x_title=t("lab.inner_step"), y_title=t("common.loss")),
                config={"displayModeBar": False},
            )
            st.caption(t(worded("lab.losses.caption", implicit)))
        else:
            st.caption(t("lab.losses.empty"))
    with map_col:
        head, zoom_col = st.columns([3, 2], vertical_alignment="bottom")
        head.subheader(t("lab.map"))
        focus = zoom_col.toggle(t("lab.zoom"), value=True, key="lab_zoom", help=t("lab.zoom.help")) and bool(shown)
        coords = projection.cached_projection(cache.store().run_dir(run.id), "items", "pca", embeddings.item_vectors)
        points = pd.concat([coords[["x", "y"]], embeddings.items.reset_index(drop=True)], axis=1)
        # Fitted afresh (a few ms): the same deterministic axes as the item coordinates, for these weights.
        trail = embedding_views.user_trail(rec, ratings, projection.fit_pca(embeddings.item_vectors), upto=upto,
                                           user_features=features, memo=memo(MEMOS[1], run.id, stamp))
        row_of = {item: n for n, item in enumerate(embeddings.items["id"])}
        top_rows = [row_of[i] for i in top_meta["item_id"] if i in row_of]  # your current top recommendations
        st.plotly_chart(
            charts.embedding_figure(points, color="cohort", hover=["id", "n_ratings"], title="label", highlight=top_rows,
                                    trail=trail, group_colours=charts.COHORT_COLOURS, trail_label=t("lab.you"),
                                    group_labels=cohort_labels(), focus=focus, height=420),
            config={"scrollZoom": True, "displaylogo": False}, key="lab_map",
        )
        st.caption(t("lab.map.caption") + (" " + t("lab.map.zoomed") if focus else ""))
