"""Recommendations page: one user's history and top-K; for a new user, before and after adaptation side by side."""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from pages import common
from pages.common import t

COHORTS = ("new", "meta-test", "warm")


def user_cohorts(rec, dataset) -> pd.DataFrame:
    """Every user of the run with their cohort and number of ratings (cheap: no adaptation)."""
    counts = dataset.ratings.groupby("user").size()
    idx = dataset.users.lookup(list(rec.users.external_ids))
    n_ratings = np.where(idx >= 0, counts.reindex(idx, fill_value=0).to_numpy(), 0)
    return pd.DataFrame({"id": list(rec.users.external_ids), "cohort": rec.user_cohorts(n_ratings), "n_ratings": n_ratings})


def history(dataset, user_id: str, k: int, *, warm: bool) -> pd.DataFrame:
    """The user's ratings in time order with titles; for a new user the first ``k`` are the support set."""
    index = dataset.users.get(user_id)
    rows = dataset.ratings[dataset.ratings["user"] == index].sort_values(["timestamp", "item"], kind="stable")
    titles = common.item_titles(dataset)
    frame = pd.DataFrame(
        {
            "item_id": [dataset.items.external(int(i)) for i in rows["item"]],
            "title": titles.iloc[rows["item"].to_numpy()].to_numpy(),
            "rating": rows["rating"].to_numpy(),
        }
    )
    roles = ["training"] * len(frame) if warm else ["support" if i < k else "query" for i in range(len(frame))]
    return frame.assign(role=roles)


def top_table(rec, top: pd.DataFrame, titles: dict[str, str], query: dict[str, float]) -> pd.DataFrame:
    """A top-K frame for display: rank, title, score and, when there is a query set, the held-out rating of items in it."""
    frame = pd.DataFrame(
        {
            t("common.rank"): top["rank"].to_numpy(),
            t("common.title"): [titles.get(i, i) for i in top["item_id"]],
            t("common.score"): top["score"].round(2).to_numpy(),
        }
    )
    if query:
        # On implicit data every held-out interaction is a 1: a tick, not "1★".
        frame[t("recs.held_out")] = [("✓" if rec.run.implicit else f"{query[i]:g}★") if i in query else "" for i in top["item_id"]]
    return frame


def query_quality(rec, state, query: pd.DataFrame) -> tuple[float, float]:
    """MAE and nDCG@3 (gain 2^r − 1) of a state on the user's held-out query ratings."""
    from metarec_core.metrics import mae, ndcg_at_k

    items = rec.item_indices(query["item_id"].tolist(), source="query")
    truth = query["rating"].to_numpy(dtype=float)
    predicted = rec.score_items(state, items)
    return mae(truth, predicted), ndcg_at_k(truth, predicted, k=3)


common.page_setup()
st.title(t("recs.title"))
st.caption(t("recs.intro"))
with common.guard():
    run = common.current_run()
    rec = common.current_recommender() if run is not None else None
    if rec is None:
        st.info(t("recs.no_run"))
        common.offer_default_training()
        st.stop()
    dataset = common.run_dataset(run)
    implicit = rec.run.implicit

    users = user_cohorts(rec, dataset)
    titles = dict(zip(rec.items.external_ids, common.item_titles_for(rec, dataset)))
    cohort = st.segmented_control(
        t("recs.cohort"), [c for c in COHORTS if (users["cohort"] == c).any()], format_func=common.labeller("recs.cohort."),
        default="new" if (users["cohort"] == "new").any() else "warm", required=True, key="recs_cohort",
    )
    pool = users[(users["cohort"] == cohort) & (users["n_ratings"] > 0)] if cohort != "new" else users[users["cohort"] == "new"]
    if pool.empty:
        st.info(t("recs.no_users"))
        st.stop()
    cols = st.columns([4, 2, 2])
    labels = {row.id: t(common.worded("recs.user_label", implicit), id=row.id, n=row.n_ratings) for row in pool.itertuples()}
    user_id = cols[0].selectbox(t("recs.user"), list(labels), format_func=labels.__getitem__, key=f"recs_user_{cohort}")
    k_top = cols[1].slider(t("recs.k"), 3, 30, 10, key="recs_k")
    warm = cohort == "warm"
    k_shot = cols[2].slider(t(common.worded("recs.shots", implicit)), 1, 20, int(rec.run.config.eval_support_size), key="recs_shots", disabled=warm)

    past = history(dataset, user_id, k_shot, warm=warm)
    support = past[past["role"] == "support"]
    query = past[past["role"] == "query"]
    query_ratings = dict(zip(query["item_id"], query["rating"]))

    if warm:
        state = rec.adapt_user([], user_id=user_id, steps=0)
        st.subheader(t("recs.top_warm", k=k_top))
        st.dataframe(top_table(rec, rec.recommend(state, k=k_top), titles, {}), hide_index=True)
    else:
        pairs = list(zip(support["item_id"], support["rating"].astype(float)))
        before = rec.adapt_user([], user_id=user_id, steps=0, use_known=False)
        after = rec.adapt_user(pairs, user_id=user_id, use_known=False)
        exclude = rec.item_indices(support["item_id"].tolist()).tolist()
        b_col, a_col = st.columns(2, gap="large")
        with b_col:
            st.subheader(t("recs.before"))
            st.caption(t("recs.before.caption"))
            st.dataframe(top_table(rec, rec.recommend(before, k=k_top, exclude=exclude), titles, query_ratings), hide_index=True)
        with a_col:
            st.subheader(t(common.worded("recs.after", implicit), k=len(pairs)))
            st.caption(t("recs.after.caption", steps=len(after.losses) - 1, ms=f"{1000 * after.seconds:.0f}"))
            st.dataframe(top_table(rec, rec.recommend(after, k=k_top), titles, query_ratings), hide_index=True)
        if len(query) and not implicit:
            mae_b, ndcg_b = query_quality(rec, before, query)
            mae_a, ndcg_a = query_quality(rec, after, query)
            m = st.columns(2, gap="large")
            m[0].metric(t("recs.query_mae"), f"{mae_a:.3f}", delta=f"{mae_a - mae_b:+.3f}", delta_color="inverse")
            m[1].metric(t("recs.query_ndcg"), f"{ndcg_a:.3f}", delta=f"{ndcg_a - ndcg_b:+.3f}")
            st.caption(t("recs.query.caption", n=len(query)))
    st.subheader(t(common.worded("recs.history", implicit), n=len(past)))
    shown = past.assign(role=[t(f"recs.role.{r}") for r in past["role"]])
    shown.columns = [t("common.item_id"), t("common.title"), t("common.rating"), t("recs.role")]
    if implicit:  # every value is 1: the column says nothing
        shown = shown.drop(columns=[t("common.rating")])
    st.dataframe(shown, hide_index=True, height=min(35 * (len(shown) + 1) + 3, 460))
