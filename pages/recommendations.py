"""Recommendations page: one user's history and top-K; for a new user, before and after adaptation side by side."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from metarec_core import embedding_views, histories, titles as item_titles, top_lists
from ui import datasets, navigation, onboarding, state
from ui.errors import guard
from ui.i18n import labeller, t, worded
from ui.metrics import change

COHORTS = ("new", "meta-test", "warm")


def top_table(rec, top: pd.DataFrame, titles: dict[str, str] | None, query: dict[str, float]) -> pd.DataFrame:
    """A top-K frame for display: rank, name (or the ID when items have no names), score, and the held-out rating of items in the query set."""
    frame = pd.DataFrame({t("common.rank"): top["rank"].to_numpy()})
    if titles:
        frame[t("common.name")] = [titles.get(i, i) for i in top["item_id"]]
    frame[t("common.item_id")] = top["item_id"].to_numpy()
    frame[t("common.score")] = top["score"].round(2).to_numpy()
    if query:
        # On implicit data every held-out interaction is a 1: a tick, not "1★".
        frame[t("recs.held_out")] = [("✓" if rec.run.implicit else f"{query[i]:g}★") if i in query else "" for i in top["item_id"]]
    return frame


def download_section(rec, dataset, users: pd.DataFrame, cohort: str, user_id: str, top: pd.DataFrame,
                     titles: dict[str, str], k: int, k_shot: int, warm: bool) -> None:
    """CSV downloads: the list shown (adapted), and the same top-K for every user of the cohort."""
    frame = pd.DataFrame({
        "user_id": user_id, "rank": top["rank"].to_numpy(), "item_id": top["item_id"].to_numpy(),
        "name": [titles.get(i, i) for i in top["item_id"]], "score": top["score"].to_numpy(),
    }, columns=list(top_lists.TOP_LIST_COLUMNS))
    cols = st.columns([2, 3])
    cols[0].download_button(
        t("recs.download.one"), top_lists.top_lists_csv([frame]), file_name="recommendations.csv",
        mime="text/csv", icon=":material/download:", key="recs_dl_one",
    )
    members = users.loc[users["cohort"] == cohort, "id"].tolist()
    prepared = st.session_state.get("recs_cohort_csv")
    wanted = (st.session_state.get(state.RUN), cohort, k, k_shot)
    with cols[1]:
        if prepared and prepared[0] == wanted:
            st.download_button(
                t("recs.download.cohort.ready", n=len(members)), prepared[1], file_name=f"recommendations-{cohort}.csv",
                mime="text/csv", icon=":material/download:", key="recs_dl_cohort",
            )
        elif st.button(t("recs.download.cohort", n=len(members), k=k), icon=":material/table_view:", key="recs_prepare_cohort"):
            with st.spinner(t("recs.download.working", n=len(members))):
                # New and validation users are adapted on their first K interactions, as on this page; warm users are known.
                support = None if warm else histories.first_interactions(dataset, members, support_size=k_shot)
                names = [titles.get(i, i) for i in rec.items.external_ids]
                frames = top_lists.top_lists(rec, members, k=k, support=support, names=names)
                st.session_state["recs_cohort_csv"] = (wanted, top_lists.top_lists_csv(frames))
            st.rerun()
    st.caption(t("recs.download.caption"))


navigation.enter_page(__file__)
st.title(t("recs.title"))
st.caption(t("recs.intro"))
with guard():
    run = state.current_run()
    rec = state.current_recommender() if run is not None else None
    if rec is None:
        st.info(t("recs.no_run"))
        onboarding.offer_default_training()
        st.stop()
    dataset = datasets.run_dataset(run)
    implicit = rec.run.implicit

    users = embedding_views.run_users(rec, dataset)
    names = item_titles.run_titles(rec.run, dataset)
    titles = dict(zip(rec.items.external_ids, names))
    named = any(n != i for n, i in zip(names, rec.items.external_ids))  # else a name column would repeat the ID
    cohort = st.segmented_control(
        t("recs.cohort"), [c for c in COHORTS if (users["cohort"] == c).any()], format_func=labeller("recs.cohort."),
        default="new" if (users["cohort"] == "new").any() else "warm", required=True, key="recs_cohort",
    )
    pool = users[(users["cohort"] == cohort) & (users["n_ratings"] > 0)] if cohort != "new" else users[users["cohort"] == "new"]
    if pool.empty:
        st.info(t("recs.no_users"))
        st.stop()
    cols = st.columns([4, 2, 2])
    people = dict(zip(dataset.users.external_ids, item_titles.dataset_user_names(dataset)))  # a user table's name column, else the ID
    labels = {row.id: t(worded("recs.user_label", implicit), id=row.id if people.get(row.id, row.id) == row.id else f"{people[row.id]} ({row.id})",
                        n=row.n_ratings) for row in pool.itertuples()}
    user_id = cols[0].selectbox(t("recs.user"), list(labels), format_func=labels.__getitem__, key=f"recs_user_{cohort}")
    k_top = cols[1].slider(t("recs.k"), 3, 30, 10, key="recs_k")
    warm = cohort == "warm"
    k_shot = cols[2].slider(t(worded("recs.shots", implicit)), 1, 20, int(rec.run.config.eval_support_size), key="recs_shots", disabled=warm)

    past = histories.user_history(dataset, user_id, support_size=None if warm else k_shot)
    support = past[past["role"] == "support"]
    query = past[past["role"] == "query"]
    query_ratings = dict(zip(query["item_id"], query["rating"]))

    if warm:
        known = rec.adapt_user([], user_id=user_id, steps=0)
        st.subheader(t("recs.top_warm", k=k_top))
        shown_top = rec.recommend(known, k=k_top)
        st.dataframe(top_table(rec, shown_top, titles if named else None, {}), hide_index=True)
    else:
        pairs = list(zip(support["item_id"], support["rating"].astype(float)))
        before = rec.adapt_user([], user_id=user_id, steps=0, use_known=False)
        after = rec.adapt_user(pairs, user_id=user_id, use_known=False)
        exclude = rec.item_indices(support["item_id"].tolist()).tolist()
        b_col, a_col = st.columns(2, gap="large")
        with b_col:
            st.subheader(t("recs.before"))
            st.caption(t("recs.before.caption"))
            st.dataframe(top_table(rec, rec.recommend(before, k=k_top, exclude=exclude), titles if named else None, query_ratings), hide_index=True)
        with a_col:
            st.subheader(t(worded("recs.after", implicit), k=len(pairs)))
            st.caption(t("recs.after.caption", steps=len(after.losses) - 1, ms=f"{1000 * after.seconds:.0f}"))
            shown_top = rec.recommend(after, k=k_top)
            st.dataframe(top_table(rec, shown_top, titles if named else None, query_ratings), hide_index=True)
        if len(query) and not implicit:
            was, now = rec.query_quality(before, query), rec.query_quality(after, query)
            m = st.columns(2, gap="large")
            m[0].metric(t("recs.query_mae"), f"{now['mae']:.3f}", **change(now["mae"] - was["mae"], lower_is_better=True))
            m[1].metric(t("recs.query_ndcg"), f"{now['ndcg@3']:.3f}", **change(now["ndcg@3"] - was["ndcg@3"]))
            st.caption(t("recs.query.caption", n=len(query)))
    download_section(rec, dataset, users, cohort, user_id, shown_top, titles, k_top, k_shot, warm)
    timed = histories.has_times(dataset)  # without timestamps the order is the file's, and the heading says so
    st.subheader(t(worded("recs.history" if timed else "recs.history.file_order", implicit), n=len(past)))
    shown = past.assign(role=[t(f"recs.role.{r}") for r in past["role"]])
    shown.columns = [t("common.item_id"), t("common.name"), t("common.rating"), t("recs.role")]
    if not named:  # the name would repeat the ID
        shown = shown.drop(columns=[t("common.name")])
    if implicit:  # every value is 1: the column says nothing
        shown = shown.drop(columns=[t("common.rating")])
    st.dataframe(shown, hide_index=True, height=min(35 * (len(shown) + 1) + 3, 460))
