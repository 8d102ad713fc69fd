"""Embeddings page: item and user vectors of the current run in 2-D, coloured, searchable, with neighbours."""
from __future__ import annotations

import threading

import pandas as pd
import streamlit as st

from metarec_core import embedding_views, projection
from ui import cache, charts, navigation, onboarding, state
from ui.errors import guard
from ui.i18n import cohort_labels, feature_label, labeller, t, value_labels
from ui.markup import plain

#: UMAP's settings on this page (part of the cached coordinates' key).
UMAP_SETTINGS = {"n_neighbors": 15, "metric": "cosine"}


@st.cache_resource(show_spinner=False)
def warm_umap() -> threading.Thread:
    """Compile UMAP's numba code once per server in a background thread (no Streamlit calls in it)."""
    import numpy as np

    def run() -> None:
        projection.umap_frame(np.random.default_rng(0).normal(size=(40, 4)), n_neighbors=5)

    thread = threading.Thread(target=run, name="umap-warmup", daemon=True)
    thread.start()
    return thread


def coordinates(run_dir, kind: str, method: str, vectors) -> pd.DataFrame:
    """PCA or UMAP coordinates of one entity kind, cached in the run directory."""
    return projection.cached_projection(run_dir, kind, method, vectors, **(UMAP_SETTINGS if method == "umap" else {}))


navigation.enter_page(__file__)
st.title(t("emb.title"))
st.caption(t("emb.intro"))
with guard():
    run = state.current_run()
    embeddings = state.current_embeddings() if run is not None else None
    if embeddings is None:
        st.info(t("emb.no_run"))
        onboarding.offer_default_training()
        st.stop()
    run_dir = cache.store().run_dir(run.id)
    cols = st.columns([1, 1, 2])
    kind = cols[0].segmented_control(
        t("emb.kind"), ["items", "users"], format_func=labeller("emb.kind."), default="items", required=True, key="emb_kind"
    )
    frame = embeddings.items if kind == "items" else embeddings.users
    vectors = embeddings.item_vectors if kind == "items" else embeddings.user_vectors
    have_umap = projection.cache_path(run_dir, kind, "umap", vectors, **UMAP_SETTINGS).is_file()
    method = cols[1].segmented_control(
        t("emb.method"), ["pca", "umap"], format_func=labeller("emb.method."), default="pca", required=True, key="emb_method"
    )
    features = [c for c in frame.columns if c not in ("id", "label")]
    column_label = labeller("emb.col.")
    color = cols[2].selectbox(
        t("emb.color"), features, format_func=lambda c: column_label(c) if c in ("cohort", "n_ratings") else feature_label(c),
        key=f"emb_color_{kind}",
    )
    if method == "umap" and not have_umap:
        warm_umap()
        st.info(t("emb.umap.note"))
        if st.button(t("emb.umap.compute"), icon=":material/bubble_chart:", key="emb_umap"):
            with st.spinner(t("emb.umap.running")):
                coordinates(run_dir, kind, "umap", vectors)
            st.rerun()
        method = "pca"
    coords = coordinates(run_dir, kind, method, vectors)
    points = pd.concat([coords[["x", "y"]], frame.reset_index(drop=True)], axis=1)

    query = st.text_input(t("emb.search"), key=f"emb_search_{kind}", placeholder=t("emb.search.placeholder"))
    hits = embedding_views.search(frame, query)
    if query and not hits:
        st.warning(t("emb.search.none", query=plain(query)), icon=":material/search_off:")
    neighbours = pd.DataFrame()
    if hits:
        chosen = hits[0]
        if len(hits) > 1:
            labels = {i: f"{frame['label'].iloc[i]} ({frame['id'].iloc[i]})" for i in hits}
            chosen = st.selectbox(t("emb.search.pick"), hits, format_func=labels.__getitem__, key=f"emb_pick_{kind}")
        neighbours = projection.nearest_neighbours(vectors, vectors[chosen], k=10, exclude=[chosen])
    highlight = ([chosen] + neighbours["index"].tolist()) if hits else []
    hover = [c for c in frame.columns if c not in ("id", "label")][:6]
    fig = charts.embedding_figure(
        points, color=color, hover=["id", *hover], title="label", highlight=highlight,
        group_colours=charts.COHORT_COLOURS if color == "cohort" else None, other_label=t("emb.other"),
        group_labels=cohort_labels() if color == "cohort" else value_labels(color),
        field_labels={c: column_label(c) if c in ("id", "cohort", "n_ratings") else feature_label(c) for c in frame.columns},
    )
    st.plotly_chart(fig, config={"scrollZoom": True, "displaylogo": False}, key="emb_chart")
    st.caption(t("emb.caption.pca") if method == "pca" else t("emb.caption.umap"))
    if hits:
        st.subheader(t("emb.neighbours", label=plain(frame["label"].iloc[chosen])))
        table = frame.iloc[neighbours["index"]].reset_index(drop=True)[list(embedding_views.BASE_COLUMNS)]
        names = cohort_labels()
        table["cohort"] = table["cohort"].map(lambda c: names.get(c, c))
        table.columns = [t(f"emb.col.{c}") for c in table.columns]
        table.insert(2, t("emb.col.distance"), neighbours["distance"].round(3).to_numpy())
        st.dataframe(table, hide_index=True)
