"""Cold-start lab: a new user rates a few items; the model adapts on every rating, live."""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
import streamlit as st

from metarec_core import projection
from pages import charts, common
from pages.common import t

RATINGS = "lab_ratings"  # list of (item_id, rating) in the order given
FEATURES = "lab_features"  # the new user's demographics
TOP_K = 8
UNKNOWN = "—"


def reset() -> None:
    """Forget the lab user (ratings and demographics)."""
    st.session_state[RATINGS] = []
    st.session_state.pop("lab_loss_cache", None)
    st.session_state.pop("lab_trail_cache", None)
    st.session_state[FEATURES] = {}
    for key in [k for k in st.session_state if str(k).startswith("lab_feat_")]:
        del st.session_state[key]
    st.session_state.pop("lab_replay", None)


def add_rating(item_id: str, rating: float) -> None:
    """Add (or replace) the lab user's rating of an item."""
    ratings = [(i, r) for i, r in st.session_state[RATINGS] if i != item_id]
    st.session_state[RATINGS] = ratings + [(item_id, float(rating))]


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


def per_step_losses(rec, ratings: list[tuple[str, float]], features: dict, state, stamp: float) -> pd.DataFrame:
    """Loss per inner step: support loss on the ratings so far (from ``state``, adapted on them);
    query loss on the newest rating, predicted from the ratings before it (what the model expected
    before you told it). Remembered per ratings and weights (``stamp``: their file time), so a rerun
    or a replay does not recompute it and a run that is still training is not shown stale."""
    cache = st.session_state.setdefault("lab_loss_cache", {})
    key = (rec.run.run_dir.as_posix(), stamp, tuple(ratings), tuple(sorted(features.items())))
    if key in cache:
        return cache[key]
    steps = int(rec.run.config.inner_steps)
    rows = [("support", s, v) for s, v in enumerate(state.losses)]
    if len(ratings) >= 2 and not rec.run.implicit:
        item_id, truth = ratings[-1]
        previous = rec.adapt_user(ratings[:-1], user_features=features, steps=steps)
        predicted = rec.step_scores(previous, rec.item_indices([item_id]))[:, 0]
        rows += [("query", s, float(p - truth) ** 2) for s, p in enumerate(predicted)]
    cache[key] = pd.DataFrame(rows, columns=["set", "step", "loss"])
    return cache[key]


def popularity(dataset, rec, exclude: set[str], k: int) -> list[str]:
    """Most-rated items of the training data, unrated by the lab user."""
    counts = dataset.ratings.groupby("item").size().sort_values(ascending=False, kind="stable")
    ids = [dataset.items.external(int(i)) for i in counts.index[: k + len(exclude) + 5]]
    return [i for i in ids if i not in exclude and i in rec.items][:k]


def run_kind(config: dict) -> str:
    """What a run's objective keeps: ``both`` (meta + transfer), ``transfer`` (λ1 = 0) or ``meta`` (λ2 = 0)."""
    if float(config.get("lambda_meta", 1.0)) == 0:
        return "transfer"
    if float(config.get("lambda_trans", 1.0)) == 0:
        return "meta"
    return "both"


#: The run each kind is compared with, and the preset that trains one.
COMPARED_KIND = {"both": "transfer", "meta": "transfer", "transfer": "both"}
PRESET_OF_KIND = {"transfer": "transfer only", "both": "new users (meta + transfer)"}


def comparison_run(run, kind: str, runs: list) -> object | None:
    """The newest completed run of ``kind`` among ``runs`` (the dataset's, newest first; not ``run`` itself), or None."""
    for other in runs:
        if (
            other.id != run.id and other.status == "completed" and run_kind(other.config) == kind
            and common.has_weights(other.id)
        ):
            return other
    return None


def user_trail(rec, ratings, features, pca: projection.PCAProjection, upto: int, stamp: float) -> pd.DataFrame:
    """Your taste vector after 0, 1, ..., ``upto`` ratings, projected with the items' own PCA (exact: PCA is linear).

    Positions are remembered per ratings and weights (``stamp``: their file time).
    """
    cache = st.session_state.setdefault("lab_trail_cache", {})
    rows = []
    for n in range(upto + 1):
        key = (rec.run.run_dir.as_posix(), stamp, tuple(ratings[:n]), tuple(sorted(features.items())))
        if key not in cache:
            state = rec.adapt_user(ratings[:n], user_features=features)
            cache[key] = tuple(float(v) for v in pca.transform(rec.user_vector(state))[0])
        x, y = cache[key]
        rows.append((x, y, str(n)))
    return pd.DataFrame(rows, columns=["x", "y", "label"])


common.page_setup()
st.title(t("lab.title"))
st.caption(t("lab.intro"))
st.session_state.setdefault(RATINGS, [])
with common.guard():
    run = common.current_run()
    rec = common.current_recommender() if run is not None else None
    if rec is None:
        st.info(t("lab.no_run"))
        common.offer_default_training()
        st.stop()
    dataset = common.run_dataset(run)
    implicit = rec.run.implicit
    stamp = common.weights_stamp(run.id)  # new weights (a run still training) invalidate the lab's caches

    titles = dict(zip(rec.items.external_ids, common.item_titles_for(rec, dataset)))
    counts = dataset.ratings.groupby("item").size()
    n_ratings = {dataset.items.external(int(i)): int(c) for i, c in counts.items()}

    with st.container(border=True):
        st.markdown(f"**{t('lab.you')}**")
        features = demographics(rec)
        left, mid = st.columns(2, vertical_alignment="bottom")
        query = left.text_input(t("lab.search"), key="lab_search", placeholder=t("lab.search.placeholder"))
        rated = {i for i, _ in st.session_state[RATINGS]}
        if query.strip():
            needle = query.strip().lower()
            matches = [i for i in rec.items.external_ids if needle in titles[i].lower() or needle == i.lower()]
            matches = sorted(matches, key=lambda i: -n_ratings.get(i, 0))[:30]
        else:
            matches = popularity(dataset, rec, rated, 30)
        if not matches:
            left.warning(t("lab.search.none", query=common.plain(query)), icon=":material/search_off:")
        item_id = mid.selectbox(
            t(common.worded("lab.item", implicit)), matches, format_func=lambda i: f"{titles[i]} ({n_ratings.get(i, 0)})", key="lab_item",
            placeholder=t("lab.item.placeholder"),
        )
        scale = rating_scale(rec)
        right, b1, b2, _ = st.columns([3, 1, 1, 2], vertical_alignment="bottom")
        rating = right.segmented_control(
            t(common.worded("lab.rating", implicit)), scale, format_func=(lambda v: f"{v:g}★") if len(scale) > 1 else {scale[0]: t("lab.liked")}.__getitem__,
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
    state = rec.adapt_user(shown, user_features=features)
    top_meta = rec.recommend(state, k=TOP_K)
    elapsed_ms = 1000 * (time.perf_counter() - started)

    info = st.columns(3)
    info[0].metric(t(common.worded("lab.n_ratings", implicit)), len(shown))
    info[1].metric(t("lab.adapt_ms"), f"{elapsed_ms:.0f} ms", help=t("lab.adapt_ms.help"))
    info[2].metric(t("lab.support_loss"), f"{state.losses[-1]:.3f}" if shown and state.losses else "—")
    if shown:
        table = pd.DataFrame({t("common.title"): [titles[i] for i, _ in shown], t("common.rating"): [r for _, r in shown]})
        if implicit:  # every value is 1 ("liked"): the column says nothing
            table = table.drop(columns=[t("common.rating")])
        st.dataframe(table, hide_index=True, height=min(35 * (len(shown) + 1) + 3, 250))
    else:
        st.info(t("lab.start_hint"))

    st.subheader(t("lab.compare"))
    this_kind = run_kind(run.config)
    other_kind = COMPARED_KIND[this_kind]
    same_data = common.runs_for(run.dataset_ref)
    other = comparison_run(run, other_kind, same_data)
    columns = st.columns(3)
    with columns[0]:
        st.markdown(f"**{t('lab.col.this', kind=t(f'lab.kind.{this_kind}'))}**")
        st.table(pd.DataFrame({t("common.title"): [titles[i] for i in top_meta["item_id"]], t("common.score"): top_meta["score"].map("{:.2f}".format)}), hide_index=True)
    with columns[1]:
        other_label = t(f"lab.kind.{other_kind}")
        st.markdown(f"**{t('lab.col.other', kind=other_label)}**")
        pending = [r for r in same_data if r.is_active and run_kind(r.config) == other_kind]
        if other is None and pending:
            st.caption(t("lab.other_pending", kind=other_label, name=common.plain(pending[0].name)))
        elif other is None:
            st.caption(t("lab.no_other", kind=other_label))
            if st.button(t("lab.train_other", kind=other_label), icon=":material/play_arrow:", key="lab_train_other"):
                from metarec_core.train_config import preset_config

                with common.guard():
                    keep = st.session_state.get(common.RUN)
                    common.start_run(preset_config(PRESET_OF_KIND[other_kind]), name=other_label)
                    st.session_state[common.RUN] = keep
                    st.toast(t("lab.other_started", kind=other_label))
        else:
            other_rec = common.recommender(other.id, common.weights_stamp(other.id))
            other_state = other_rec.adapt_user(shown, user_features=features)
            top_other = other_rec.recommend(other_state, k=TOP_K)
            st.table(pd.DataFrame({t("common.title"): [titles.get(i, i) for i in top_other["item_id"]], t("common.score"): top_other["score"].map("{:.2f}".format)}), hide_index=True)
            st.caption(t("lab.other_caption", name=common.plain(other.name)))
    with columns[2]:
        st.markdown(f"**{t('lab.col.popular')}**")
        popular = popularity(dataset, rec, {i for i, _ in shown}, TOP_K)
        st.table(pd.DataFrame({t("common.title"): [titles[i] for i in popular], t(common.worded("lab.col.count", implicit)): [n_ratings.get(i, 0) for i in popular]}), hide_index=True)

    loss_col, map_col = st.columns([2, 3], gap="large")
    with loss_col:
        st.subheader(t("lab.losses"))
        if shown:
            losses = per_step_losses(rec, shown, features, state, stamp)
            st.plotly_chart(
                charts.inner_loss_figure(losses, labels={"support": t("lab.loss.support"), "query": t("lab.loss.query")},
                                         x_title=t("lab.inner_step"), y_title=t("common.loss")),
                config={"displayModeBar": False},
            )
            st.caption(t(common.worded("lab.losses.caption", implicit)))
        else:
            st.caption(t("lab.losses.empty"))
    with map_col:
        head, zoom_col = st.columns([3, 2], vertical_alignment="bottom")
        head.subheader(t("lab.map"))
        focus = zoom_col.toggle(t("lab.zoom"), value=True, key="lab_zoom", help=t("lab.zoom.help")) and bool(shown)
        embeddings = common.current_embeddings()
        coords = projection.cached_projection(common.store().run_dir(run.id), "items", "pca", embeddings.item_vectors)
        points = pd.concat([coords[["x", "y"]], embeddings.items.reset_index(drop=True)], axis=1)
        # Fitted afresh (a few ms): the same deterministic axes as the item coordinates, for these weights.
        trail = user_trail(rec, ratings, features, projection.fit_pca(embeddings.item_vectors), upto, stamp)
        row_of = {item: n for n, item in enumerate(embeddings.items["id"])}
        top_rows = [row_of[i] for i in top_meta["item_id"] if i in row_of]  # your current top recommendations
        st.plotly_chart(
            charts.embedding_figure(points, color="cohort", hover=["id", "n_ratings"], title="label", highlight=top_rows,
                                    trail=trail, group_colours=charts.COHORT_COLOURS, trail_label=t("lab.you"),
                                    group_labels=common.cohort_labels(), focus=focus, height=420),
            config={"scrollZoom": True, "displaylogo": False}, key="lab_map",
        )
        st.caption(t("lab.map.caption") + (" " + t("lab.map.zoomed") if focus else ""))
