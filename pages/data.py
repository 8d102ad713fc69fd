"""Data page: the current dataset's summary, uploading and mapping new data, saved datasets."""
from __future__ import annotations

import hashlib

import pandas as pd
import streamlit as st

from metarec_core.errors import MetarecError
from ui import cache, charts, datasets, navigation, onboarding, state
from ui.errors import guard, show_error, show_warnings
from ui.i18n import feature_label, labeller, t, value_labels
from ui.markup import plain

NONE = "—"
FILE_TYPES = ["csv", "tsv", "txt", "parquet", "pq"]
KIND_CHOICES = ("auto", "categorical", "multilabel", "numeric", "text", "ignore")


@st.cache_resource(show_spinner=False, max_entries=6)
def read_upload(digest: str, _raw: bytes, name: str) -> pd.DataFrame:
    """Read an uploaded table once per distinct content (``digest`` is the cache key)."""
    from metarec_core.loaders import read_table

    return read_table(_raw, name=name)


@st.cache_resource(show_spinner=False, max_entries=4)
def build_upload(key: tuple, _frames: tuple, columns: tuple, kinds: tuple, name: str, scale: tuple[float, float] | None = None):
    """Validate the uploaded tables with a column mapping (and a declared rating scale) into a Dataset (cached per inputs)."""
    from metarec_core.loaders import ColumnMapping, build_dataset

    interactions, users, items = _frames
    mapping = ColumnMapping(**dict(columns))
    return build_dataset(interactions, users, items, columns=mapping, feature_kinds=dict(kinds) or None, name=name, rating_scale=scale)


def rating_scale_input() -> tuple[float, float] | None | bool:
    """The rating scale the user declares (lowest, highest), ``None`` when left empty, ``False`` when only one end is given."""
    with st.expander(t("data.scale.header")):
        st.caption(t("data.scale.caption"))
        low_col, high_col = st.columns(2)
        low = low_col.number_input(t("data.scale.low"), value=None, key="map_scale_low", placeholder="1")
        high = high_col.number_input(t("data.scale.high"), value=None, key="map_scale_high", placeholder="5")
    if low is None and high is None:
        return None
    if low is None or high is None:
        st.info(t("data.scale.both"), icon=":material/info:")
        return False
    return float(low), float(high)


@st.cache_data(show_spinner=False)
def example_csv() -> bytes:
    """A small interactions file in the expected format (from the synthetic scenario)."""
    from metarec_core.synthetic import SyntheticConfig, make_synthetic

    data = make_synthetic(SyntheticConfig(n_users=60, n_items=40, ratings_per_user=(8, 20), seed=1)).dataset
    r = data.ratings
    frame = pd.DataFrame(
        {
            "user_id": [data.users.external(int(u)) for u in r["user"]],
            "item_id": [data.items.external(int(i)) for i in r["item"]],
            "rating": r["rating"].astype(int),
            "timestamp": r["timestamp"],
        }
    )
    return frame.to_csv(index=False).encode()


def uploaded_table(label_key: str, key: str) -> tuple[pd.DataFrame | None, str]:
    """A file uploader; returns the table read from the upload and its content hash.

    The upload's name is used in messages only. A file that cannot be read
    shows an error and gives ``(None, "")``.
    """
    upload = st.file_uploader(t(label_key), type=FILE_TYPES, key=key)
    if upload is None:
        return None, ""
    raw = upload.getvalue()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        return read_upload(digest, raw, upload.name), digest
    except MetarecError as exc:
        show_error(exc)
        return None, ""


def choose_column(label_key: str, columns: list[str], detected: str | None, *, key: str, optional: bool) -> str | None:
    """A select box of columns pre-set to the detected one; ``—`` means none.

    A required column that was not detected starts unselected: the user must choose it.
    """
    options = ([NONE] if optional else []) + columns
    index = options.index(detected) if detected in options else (0 if optional else None)
    value = st.selectbox(t(label_key), options, index=index, key=key, placeholder=t("data.mapping.choose"))
    return None if value in (None, NONE) else value


@st.cache_resource(show_spinner=False, max_entries=6)
def dataset_summary(fingerprint: str, _dataset):
    """The core's summary of a dataset, computed once per fingerprint."""
    from metarec_core.summary import summarize

    return summarize(_dataset)


def summary_section(dataset) -> None:
    """Counts, density and the summary plots of the current dataset."""
    summary = dataset_summary(dataset.fingerprint, dataset)
    cols = st.columns(5)
    cols[0].metric(t("data.users"), f"{summary.n_users:,}")
    cols[1].metric(t("data.items"), f"{summary.n_items:,}")
    cols[2].metric(t("data.interactions"), f"{summary.n_ratings:,}")
    cols[3].metric(t("data.density"), f"{summary.density:.2%}")
    cols[4].metric(t("data.top_share"), f"{summary.top_item_share:.0%}", help=t("data.top_share.help"))
    if summary.warnings:
        with st.expander(t("data.load_warnings", n=len(summary.warnings))):
            show_warnings(summary.warnings, limit=20)
    # Implicit data has no rating scale (every row is a 1): its histogram would be one bar, so the long tail gets the row.
    left, right = st.columns(2) if not dataset.implicit else (None, st.container())
    if left is not None:
        with left:
            st.markdown(f"**{t('data.histogram')}**")
            st.plotly_chart(
                charts.rating_histogram(summary.rating_histogram, x_title=t("common.rating"), y_title=t("data.count")),
                config={"displayModeBar": False},
            )
    with right:
        st.markdown(f"**{t('data.long_tail')}**")
        st.plotly_chart(
            charts.long_tail_figure(
                summary.ratings_per_item,
                summary.ratings_per_user,
                labels={"items": t("data.per_item"), "users": t("data.per_user")},
                x_title=t("data.rank"),
                y_title=t("data.count"),
            ),
            config={"displayModeBar": False},
        )
    st.markdown(f"**{t('data.cold.header')}**")
    st.caption(t("data.cold.caption", k=summary.support_size, share=f"{summary.cold_fraction:.0%}"))
    scenarios = summary.scenarios_frame()
    # The chart gets the page's width (a quarter of it crammed its labels); the seven-column table goes under it.
    st.plotly_chart(
        charts.cold_share_figure(
            scenarios,
            summary.n_users,
            summary.n_items,
            scenario_labels={s: t(f"scenario.{s}") for s in scenarios["scenario"]},
            labels={"users": t("data.cold.users"), "items": t("data.cold.items")},
            y_title=t("data.cold.share"),
        ),
        config={"displayModeBar": False},
    )
    table = scenarios.assign(scenario=[t(f"scenario.{s}") for s in scenarios["scenario"]])
    table.columns = [t(f"data.scn.{c}") for c in scenarios.columns]
    st.dataframe(table, hide_index=True)
    if summary.features:
        st.markdown(f"**{t('data.features')}**")
        features = summary.features_frame()
        features["table"] = [t(f"data.kinds.{v}") if v in ("users", "items") else v for v in features["table"]]
        features["kind"] = [t(f"kind.{v}") for v in features["kind"]]
        features["example"] = [value_labels(n).get(str(v), v) for n, v in zip(features["name"], features["example"])]
        features["name"] = [feature_label(v) for v in features["name"]]
        features.columns = [t(f"data.feat.{c}") for c in features.columns]
        st.dataframe(features, hide_index=True)


#: Widgets whose values belong to one uploaded interactions file.
MAPPING_KEYS = ("map_user", "map_item", "map_rating", "map_timestamp", "map_implicit_ok", "map_item_name", "map_user_name", "upload_name",
                "map_scale_low", "map_scale_high")


def mapping_notes(rating_like: tuple[str, ...], chosen: dict[str, str | None]) -> bool:
    """Say what an unmapped rating or timestamp means; returns whether the mapping may be validated.

    Ratings never turn into implicit data unasked: with a rating-like column left
    unmapped the user must confirm that the data have no ratings.
    """
    if chosen["timestamp"] is None:
        st.caption(t("data.mapping.no_time"))
    if chosen["rating"] is not None:
        return True
    candidates = [c for c in rating_like if c not in chosen.values()]
    if not candidates:
        st.caption(t("data.mapping.implicit.none"))
        return True
    st.warning(t("data.mapping.implicit.ask", columns=", ".join(f"“{plain(c)}”" for c in candidates)), icon=":material/warning:")
    return st.checkbox(t("data.mapping.implicit.confirm"), key="map_implicit_ok")


def name_choices(users: pd.DataFrame | None, items: pd.DataFrame | None, user: str | None, item: str | None) -> tuple:
    """Select boxes of the user and item tables' name columns, pre-set to the detected ones.

    Returns the ``(key, column)`` pairs for the column mapping: a column only
    when it differs from the detected one (``None`` keeps detection), ``""`` for IDs only.
    """
    from metarec_core.loaders import side_id_column
    from metarec_core.titles import name_column

    tables = [(role, frame, id_of) for role, frame, id_of in (("item", items, item), ("user", users, user)) if frame is not None]
    if not tables:
        return ()
    st.subheader(t("data.names.header"))
    st.caption(t("data.names.caption"))
    out = []
    cols = st.columns(2)
    for col, (role, frame, id_of) in zip(cols, tables):
        id_column = side_id_column(frame, role, id_of)
        features = frame.drop(columns=[id_column]) if id_column in frame.columns else frame
        detected = name_column(features)
        options = [""] + [str(c) for c in features.columns]
        label = {"": t("data.names.ids")} | {c: c for c in options[1:]}
        with col:
            picked = st.selectbox(
                t(f"data.names.{role}s"), options, index=options.index(detected) if detected in options else 0,
                format_func=label.__getitem__, key=f"map_{role}_name",
            )
            if picked:
                example = features[picked].dropna().astype(str).head(3).tolist()
                st.caption(t("data.names.example", example=" · ".join(plain(e) for e in example)))
        out.append((f"{role}_name", None if picked == (detected or "") else picked))
    return tuple(out)


def forget_mapping_of_other_files(digest: str) -> None:
    """Drop the column choices made for a previous file, so a new file starts from its own detected columns."""
    if st.session_state.get("mapping_digest") != digest:
        for key in MAPPING_KEYS:
            st.session_state.pop(key, None)
        st.session_state["mapping_digest"] = digest


def upload_section() -> None:
    """Upload tables, map columns, validate, preview and save as a dataset."""
    st.markdown(t("data.upload.help"))
    st.caption(t("data.upload.limit", mb=st.get_option("server.maxUploadSize")))
    st.download_button(t("data.example"), example_csv(), file_name="example_ratings.csv", mime="text/csv", icon=":material/download:")
    interactions, inter_digest = uploaded_table("data.upload.interactions", "upload_interactions")
    with st.expander(t("data.upload.side")):
        users, users_digest = uploaded_table("data.upload.users", "upload_users")
        items, items_digest = uploaded_table("data.upload.items", "upload_items")
    if interactions is None:
        return

    from metarec_core.loaders import guess_columns

    source = interactions.attrs.get("source", "upload")
    guess = guess_columns(interactions, source=source)  # each role on its own: a role that fails leaves the others guessed
    forget_mapping_of_other_files(inter_digest)
    st.subheader(t("data.mapping.header"))
    st.caption(t("data.mapping.caption"))
    columns = [str(c) for c in interactions.columns]
    chosen: dict[str, str | None] = {}
    cols = st.columns(4)
    for col, role in zip(cols, ("user", "item", "rating", "timestamp")):
        with col:
            chosen[role] = choose_column(
                f"data.mapping.{role}", columns, getattr(guess.mapping, role), key=f"map_{role}", optional=role in ("rating", "timestamp")
            )
    user, item, rating, timestamp = (chosen[r] for r in ("user", "item", "rating", "timestamp"))
    for role, problem in guess.problems.items():
        if chosen[role] is None:  # once the user has chosen that column, its message is gone
            show_error(problem)
    by_content = [t(f"data.mapping.{r}") for r, how in guess.how.items() if how == "content" and chosen[r] == getattr(guess.mapping, r)]
    if by_content:
        st.caption(t("data.mapping.guessed", roles=", ".join(by_content)))
    implicit_ok = mapping_notes(guess.rating_like, chosen)
    kinds: dict[str, str] = {}
    side = [(p, f) for p, f in (("users", users), ("items", items)) if f is not None]
    if side:
        with st.expander(t("data.kinds.header")):
            st.caption(t("data.kinds.caption"))
            for prefix, frame in side:
                for column in frame.columns[1:]:
                    kind = st.selectbox(
                        f"{t(f'data.kinds.{prefix}')} · {column}",
                        KIND_CHOICES,
                        format_func=labeller("kind."),
                        key=f"kind_{prefix}_{column}",
                    )
                    if kind != "auto":
                        kinds[f"{prefix}.{column}"] = kind

    scale = rating_scale_input() if rating is not None else None

    st.subheader(t("data.preview.header"))
    st.dataframe(interactions.head(50), hide_index=True, height=220)

    names = name_choices(users, items, user, item)

    if user is None or item is None:
        st.info(t("data.mapping.missing"), icon=":material/info:")
        return
    if not implicit_ok:
        st.info(t("data.mapping.implicit.wait"), icon=":material/info:")
        return
    if scale is False:
        return
    mapping = (("user", user), ("item", item), ("rating", rating), ("timestamp", timestamp), ("implicit", rating is None), *names)
    name = st.text_input(t("data.name"), value=str(source).rsplit(".", 1)[0][:60] or "uploaded", max_chars=60, key="upload_name")
    key = (inter_digest, users_digest, items_digest)
    try:
        dataset = build_upload(key, (interactions, users, items), mapping, tuple(sorted(kinds.items())), name.strip() or "uploaded", scale)
    except MetarecError as exc:
        show_error(exc)
        return
    st.success(
        t("data.valid", users=dataset.n_users, items=dataset.n_items, ratings=len(dataset.ratings),
          kind=t("data.implicit") if dataset.implicit else t("data.explicit")),
        icon=":material/check_circle:",
    )
    show_warnings(dataset.warnings)
    if st.button(t("data.save"), type="primary", icon=":material/save:", key="save_dataset"):
        with guard():
            dataset_id = cache.store().save_dataset(dataset, name=name.strip() or None)
            st.session_state[state.DATASET] = f"stored:{dataset_id}"
            st.session_state[state.RUN] = None
            st.toast(t("data.saved", name=plain(name)), icon=":material/check:")
            st.rerun()


def saved_section() -> None:
    """The saved datasets, with switching and deleting."""
    records = cache.store().list_datasets()
    if not records:
        st.info(t("data.saved.none"))
        return
    table = pd.DataFrame(
        {
            t("data.saved.name"): [r.name for r in records],
            t("data.users"): [r.n_users for r in records],
            t("data.items"): [r.n_items for r in records],
            t("data.interactions"): [r.n_ratings for r in records],
            t("data.saved.created"): [pd.Timestamp(r.created, unit="s").strftime("%Y-%m-%d %H:%M") for r in records],
            "ID": [r.id for r in records],
        }
    )
    st.dataframe(table, hide_index=True)
    labels = {r.ref: f"{r.name} ({r.id})" for r in records}
    choice = st.selectbox(t("data.saved.pick"), list(labels), format_func=labels.__getitem__, key="saved_pick")
    left, right = st.columns(2)
    if left.button(t("data.saved.use"), icon=":material/check:", key="saved_use"):
        st.session_state[state.DATASET] = choice
        st.session_state[state.RUN] = None
        st.rerun()
    force = right.checkbox(t("data.saved.force"), key="saved_force")
    if right.button(t("data.saved.delete"), icon=":material/delete:", key="saved_delete"):
        with guard():
            cache.store().delete_dataset(choice.split(":", 1)[1], force=force)
            if st.session_state.get(state.DATASET) == choice:
                st.session_state[state.DATASET] = state.DEFAULT_DATASET
            cache.load_dataset_ref.clear()
            st.rerun()


navigation.enter_page(__file__)
st.title(t("data.title"))
st.caption(t("data.intro"))
with guard():
    onboarding.offer_default_training()
current, upload, saved = st.tabs([t("data.tab.current"), t("data.tab.upload"), t("data.tab.saved")])
with current:
    with guard():
        dataset = datasets.current_dataset()
        if dataset is not None:
            st.subheader(plain(datasets.dataset_options().get(st.session_state[state.DATASET], dataset.name)))
            summary_section(dataset)
with upload:
    with guard():
        upload_section()
with saved:
    with guard():
        saved_section()
