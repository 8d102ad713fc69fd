"""What every page shares: session state, translation, cached data, error display, the sidebar."""
from __future__ import annotations

import functools
import json
import logging
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import streamlit as st

from metarec_core.errors import ConfigError, DataError, MetarecError, TrainingError

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
I18N_PATH = ROOT / "assets" / "i18n.json"

#: UI languages: code -> name shown in the switch.
LANGUAGES: dict[str, str] = {"en": "English", "zh": "简体中文"}

#: Session-state keys shared between pages.
LANG = "lang"
DATASET = "dataset_key"
RUN = "run_id"
#: True while app.py runs a page (see :func:`page_setup`).
ENTRY = "_through_app"


# ---------------------------------------------------------------- page set-up
def page_setup() -> None:
    """First call of every page: make sure the page runs inside ``app.py``.

    Because the page files live in a folder named ``pages/``, Streamlit runs a
    page file directly (its legacy multipage mode) when a server's first
    request opens a page URL, and ``AppTest.switch_page`` does the same on
    every run. The page then lacks the shared sidebar and state. This switches
    the legacy mode off and reruns, so ``app.py`` (with ``st.navigation``)
    runs the requested page. ``uses_pages_directory`` is the flag that
    ``st.navigation`` itself clears.
    """
    if not st.session_state.get(ENTRY):
        from streamlit.runtime.pages_manager import PagesManager

        PagesManager.uses_pages_directory = False
        st.rerun()


# ---------------------------------------------------------------- translation
@functools.cache
def load_strings(path: str = str(I18N_PATH)) -> dict[str, dict[str, str]]:
    """Read the UI strings: ``{key: {"en": text, "zh": text}}``.

    Parameters
    ----------
    path
        The JSON file; the default is ``assets/i18n.json``.

    Returns
    -------
    dict
        Every UI string in every language.
    """
    return json.loads(Path(path).read_text(encoding="utf-8"))


def language() -> str:
    """The current UI language code (``"en"`` or ``"zh"``)."""
    try:
        lang = st.session_state.get(LANG, "en")
    except Exception:  # outside a Streamlit session (plain unit tests)
        lang = "en"
    return lang if lang in LANGUAGES else "en"


def t(key: str, /, **values: Any) -> str:
    """The UI string ``key`` in the current language, formatted with ``values``.

    Falls back to English, then to the key itself, so a missing translation
    never breaks a page (``tests/test_i18n.py`` makes sure none is missing).
    """
    entry = load_strings().get(key)
    if entry is None:
        logger.warning("missing UI string %r", key)
        return key
    text = entry.get(language()) or entry.get("en") or key
    return text.format(**values) if values else text


def labeller(prefix: str) -> Callable[[object], str]:
    """A ``format_func`` for option values: ``value -> t(prefix + value)`` in the language of this run.

    The language is bound now, so the function gives the same labels when it
    is called outside the script run (e.g. by ``streamlit.testing``).
    """
    lang = language()
    strings = load_strings()

    def label(value: object) -> str:
        entry = strings.get(f"{prefix}{value}")
        return (entry.get(lang) or entry.get("en")) if entry else str(value)

    return label


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~$])")


def plain(text: object) -> str:
    """Escape Markdown (and LaTeX ``$``) in text that came from data or a user.

    Streamlit renders element text as Markdown (never as HTML here); escaping
    keeps uploaded names and values shown literally.
    """
    return _MARKDOWN_SPECIAL.sub(r"\\\1", str(text))


# ---------------------------------------------------------------- state
def init_state() -> None:
    """Give the shared session-state keys their first values."""
    st.session_state.setdefault(LANG, "en")
    st.session_state.setdefault(DATASET, None)
    st.session_state.setdefault(RUN, None)


# ---------------------------------------------------------------- errors
_NEXT_STEP = {
    DataError: "error.next.data",
    ConfigError: "error.next.config",
    TrainingError: "error.next.training",
}


def error_message(exc: BaseException) -> str:
    """The text shown for an error: what went wrong and the next step (no traceback).

    Parameters
    ----------
    exc
        The exception caught by a page.

    Returns
    -------
    str
        Plain text (Markdown-escaped) ready for ``st.error``.
    """
    if isinstance(exc, MetarecError):
        step_key = next((k for cls, k in _NEXT_STEP.items() if isinstance(exc, cls)), "error.next.generic")
        row, source = getattr(exc, "row", None), str(getattr(exc, "source", "") or "")
        text_file = not source.lower().endswith((".parquet", ".pq"))  # Parquet has no lines
        hint = f" {t('error.row_hint', row=row, line=row + 1)}" if isinstance(exc, DataError) and row is not None and text_file else ""
        return f"{plain(exc)}\n\n{t(step_key)}{hint}"
    return t("error.unexpected", kind=type(exc).__name__, message=plain(exc))


def show_error(exc: BaseException) -> None:
    """Show an error as a message with a next step; log unexpected ones with their traceback."""
    if not isinstance(exc, MetarecError):
        logger.exception("unexpected error in a page", exc_info=exc)
    st.error(error_message(exc), icon=":material/error:")


@contextmanager
def guard() -> Iterator[None]:
    """Run a block; any error becomes an ``st.error`` message instead of a traceback.

    Streamlit's own control flow (``st.rerun``, ``st.stop``) derives from
    ``BaseException`` and passes through untouched.
    """
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - every error must become a message
        show_error(exc)


def show_warnings(warnings: tuple[str, ...] | list[str], *, limit: int = 8) -> None:
    """Show loader warnings (plain sentences from the core) as ``st.warning`` boxes."""
    for text in list(warnings)[:limit]:
        st.warning(plain(text), icon=":material/warning:")
    if len(warnings) > limit:
        st.caption(t("common.more_warnings", n=len(warnings) - limit))


# ---------------------------------------------------------------- sidebar
def language_switch() -> None:
    """The EN / 简体中文 switch; it keeps its value across pages."""
    st.segmented_control(
        "Language · 语言",
        list(LANGUAGES),
        format_func=LANGUAGES.__getitem__,
        key=LANG,
        required=True,
        persist_state="session",
    )




# ---------------------------------------------------------------- navigation helpers
def page_link(container: Any, path: str, label_key: str, icon: str | None = None) -> None:
    """A link to another page of the app, drawn only when that page is registered."""
    if (ROOT / path).is_file():
        container.page_link(path, label=t(label_key), icon=icon)


def phase_labels() -> dict[str, str]:
    """Display names of the training phases in the current language."""
    return {phase: t(f"phase.{phase}") for phase in ("meta", "transfer", "joint", "validate")}


# ---------------------------------------------------------------- training defaults
@functools.cache
def train_defaults() -> dict[str, Any]:
    """The default training settings, read from ``metarec_core.training.TrainConfig``."""
    from metarec_core.configs import config_to_dict
    from metarec_core.train_config import TrainConfig

    return config_to_dict(TrainConfig())


# ---------------------------------------------------------------- store and datasets
#: Built-in dataset references and the UI string key of their names.
BUILTIN_DATASETS: dict[str, str] = {
    "builtin:movielens-100k": "dataset.movielens",
    "builtin:movielens-1m": "dataset.movielens_1m",
    "builtin:synthetic": "dataset.synthetic",
    "builtin:synthetic-two-domains": "dataset.synthetic_two",
}
DEFAULT_DATASET = "builtin:movielens-100k"
FALLBACK_DATASET = "builtin:synthetic"


@st.cache_resource(show_spinner=False)
def _store_at(home: str) -> Any:
    from metarec_core.store import RunStore

    return RunStore(home)


def store() -> Any:
    """The run store (``METAREC_HOME``), opened once per home; connections are per thread."""
    from metarec_core.store import default_home

    return _store_at(str(default_home()))


@st.cache_resource(show_spinner=False, max_entries=6)
def load_dataset_ref(ref: str) -> Any:
    """Load a dataset by reference once per server process (shared by every session).

    Parameters
    ----------
    ref
        ``builtin:<name>`` or ``stored:<dataset id>``.
    """
    from metarec_core.catalogue import resolve_dataset

    return resolve_dataset(store(), ref)


def movielens_cached() -> bool:
    """Whether MovieLens-100K is already in the local cache (no fetch needed)."""
    from metarec_core.movielens import movielens_cache_dir

    return movielens_cache_dir().is_dir()


def dataset_options() -> dict[str, str]:
    """Every dataset a user can pick: reference -> display name (built-ins first, then saved ones)."""
    options = {ref: t(key) for ref, key in BUILTIN_DATASETS.items()}
    for record in store().list_datasets():
        options[record.ref] = t("dataset.saved", name=record.name, n=record.n_ratings)
    return options


def current_dataset() -> Any:
    """The session's dataset, loading it on first use.

    The first start fetches MovieLens-100K with a visible status; if that
    fails the synthetic scenario is used and the reason is kept as a note
    for the sidebar. Returns ``None`` (after showing an error) when the
    chosen dataset cannot be loaded.
    """
    ref = st.session_state.get(DATASET) or DEFAULT_DATASET
    if ref == "builtin:movielens-100k" and not movielens_cached():
        with st.status(t("dataset.fetching"), expanded=False) as status:
            try:
                dataset = load_dataset_ref(ref)
            except MetarecError as exc:
                status.update(label=t("dataset.fetch_failed"), state="error")
                st.session_state["dataset_note"] = t("dataset.fallback_note", reason=plain(exc))
                st.session_state[DATASET] = ref = FALLBACK_DATASET
            else:
                status.update(label=t("dataset.fetched"), state="complete")
                st.session_state[DATASET] = ref
                return dataset
    try:
        dataset = load_dataset_ref(ref)
    except MetarecError as exc:
        show_error(exc)
        return None
    st.session_state[DATASET] = ref
    return dataset


def _sync_choice(widget_key: str, state_key: str) -> None:
    st.session_state[state_key] = st.session_state[widget_key]


def dataset_picker() -> None:
    """Sidebar select box of datasets; choosing one makes it the session's dataset."""
    options = dataset_options()
    current = st.session_state.get(DATASET) or DEFAULT_DATASET
    if current not in options:
        current = DEFAULT_DATASET
    st.session_state[DATASET] = current
    st.session_state["sidebar_dataset"] = current  # the widget follows the session's choice
    st.selectbox(
        t("sidebar.dataset"),
        list(options),
        format_func=options.__getitem__,
        key="sidebar_dataset",
        on_change=_sync_choice,
        args=("sidebar_dataset", DATASET),
    )


# ---------------------------------------------------------------- runs
#: A run with these files can score, recommend and be mapped.
WEIGHTS_FILE = "weights.safetensors"


def runs_for(dataset_ref: str | None = None) -> list[Any]:
    """Runs in the store, newest first; only those on ``dataset_ref`` when given."""
    runs = store().list_runs()
    return [r for r in runs if dataset_ref is None or r.dataset_ref == dataset_ref]


def worded(key: str, implicit: bool) -> str:
    """The UI-string key for implicit data (``KEY.implicit``: "interactions", "liked") or ``key`` itself."""
    return f"{key}.implicit" if implicit else key


def validation_key(metrics: Any) -> str:
    """The validation metric a run records: ``valid_mae`` on ratings, ``valid_auc`` on implicit data."""
    keys = set(metrics.loc[metrics["phase"] == "validate", "key"]) if len(metrics) else set()
    return "valid_auc" if "valid_auc" in keys and "valid_mae" not in keys else "valid_mae"


def cohort_labels() -> dict[str, str]:
    """Display names of the cohorts users and items are coloured by (warm, new, validation)."""
    return {c: t(f"cohort.{c}") for c in ("warm", "new", "meta-test")}


def has_weights(run_id: str) -> bool:
    """Whether a run has saved weights (completed, or stopped after a checkpoint)."""
    return (store().run_dir(run_id) / WEIGHTS_FILE).is_file()


def run_label(run: Any) -> str:
    """``name · status`` of a run record, in the current language."""
    return f"{run.name} · {t(f'status.{run.status}')}"


def current_run() -> Any:
    """The session's run record (``None`` when there is none on the current dataset)."""
    run_id = st.session_state.get(RUN)
    if not run_id:
        return None
    from metarec_core.store import StoreError

    try:
        return store().get_run(run_id)
    except StoreError:
        st.session_state[RUN] = None
        return None


def run_picker() -> None:
    """Sidebar select box of the current dataset's runs (newest usable run first by default)."""
    ref = st.session_state.get(DATASET) or DEFAULT_DATASET
    runs = runs_for(ref)
    if not runs:
        st.session_state[RUN] = None
        st.caption(t("sidebar.no_runs"))
        return
    ids = [r.id for r in runs]
    labels = {r.id: run_label(r) for r in runs}
    current = st.session_state.get(RUN)
    if current not in ids:
        usable = [r.id for r in runs if r.status == "completed"] or ids
        current = usable[0]
    st.session_state[RUN] = current
    st.session_state["sidebar_run"] = current
    st.selectbox(
        t("sidebar.run"), ids, format_func=labels.__getitem__, key="sidebar_run",
        on_change=_sync_choice, args=("sidebar_run", RUN),
    )


@st.cache_resource(show_spinner=False, max_entries=4)
def recommender(run_id: str, weights_mtime: float) -> Any:
    """A :class:`~metarec_core.recommender.Recommender` for a run (reloaded when its weights change).

    The app computes on tiny tensors: one torch thread is several times
    faster than two on a shared CPU, so the app process uses one.
    """
    import torch

    from metarec_core.recommender import Recommender

    torch.set_num_threads(1)

    return Recommender.from_run_dir(store().run_dir(run_id))


def weights_stamp(run_id: str) -> float:
    """When a run's weights were last written (a training run rewrites them every epoch): part of every cache key."""
    return (store().run_dir(run_id) / WEIGHTS_FILE).stat().st_mtime


def current_recommender() -> Any:
    """The recommender of the session's run, or ``None`` when it has no weights yet."""
    run = current_run()
    if run is None or not has_weights(run.id):
        return None
    return recommender(run.id, weights_stamp(run.id))


# ---------------------------------------------------------------- sidebar
def sidebar() -> None:
    """The sidebar every page shares: language, current dataset (with its size), current run."""
    with st.sidebar:
        language_switch()
        with guard():
            dataset_picker()
            dataset = current_dataset()
            if dataset is not None:
                st.caption(t("sidebar.counts", users=dataset.n_users, items=dataset.n_items, ratings=len(dataset.ratings)))
            note = st.session_state.get("dataset_note")
            if note:
                st.info(note, icon=":material/info:")
            run_picker()


# ---------------------------------------------------------------- small data views
def item_titles(dataset: Any) -> pd.Series:
    """A display name per item index: the ``title`` feature when there is one, else the external ID."""
    ids = pd.Series(dataset.items.external_ids, dtype=object)
    if "title" in dataset.item_table.columns:
        titles = dataset.item_table["title"].astype(object)
        return titles.where(titles.notna(), ids).astype(str).reset_index(drop=True)
    return ids.astype(str)


def support_query_example(dataset: Any, *, k: int = 5, max_query: int = 15) -> tuple[str, pd.DataFrame, pd.DataFrame] | None:
    """One user's ratings split into a support set (first ``k`` in time) and a query set.

    The user is the one whose number of ratings is closest to the median among
    users with more than ``2 k`` ratings (deterministic).

    Returns
    -------
    tuple or None
        ``(user_id, support, query)`` with columns item ID, title and rating;
        ``None`` when no user has enough ratings.
    """
    ratings = dataset.ratings
    counts = ratings.groupby("user").size()
    eligible = counts[counts > 2 * k]
    if eligible.empty:
        return None
    median = eligible.median()
    user = int((eligible - median).abs().sort_values(kind="stable").index[0])
    rows = ratings[ratings["user"] == user].sort_values(["timestamp", "item"], kind="stable")
    titles = item_titles(dataset)
    table = pd.DataFrame(
        {
            t("common.item_id"): [dataset.items.external(int(i)) for i in rows["item"]],
            t("common.title"): titles.iloc[rows["item"].to_numpy()].to_numpy(),
            t("common.rating"): rows["rating"].to_numpy(),
        }
    )
    return dataset.users.external(user), table.iloc[:k].reset_index(drop=True), table.iloc[k : k + max_query].reset_index(drop=True)


# ---------------------------------------------------------------- starting runs
def start_run(config: Any, *, name: str | None = None) -> str:
    """Queue a training run on the session's dataset, start workers, and make it the current run.

    Parameters
    ----------
    config
        A ``TrainConfig`` or a dict of its settings (validated by the core).
    name
        Display name (default: the dataset and the time).

    Returns
    -------
    str
        The run ID.
    """
    from metarec_core import jobs

    ref = st.session_state.get(DATASET) or DEFAULT_DATASET
    run_id = jobs.submit(store(), config, ref, name=name)
    jobs.dispatch(store())
    st.session_state[RUN] = run_id
    return run_id


def offer_default_training() -> None:
    """When the session's dataset has no run yet, offer to train the default model in one click."""
    ref = st.session_state.get(DATASET) or DEFAULT_DATASET
    if runs_for(ref):
        return
    with st.container(border=True):
        st.markdown(t("onboard.text"))
        if st.button(t("onboard.button"), type="primary", icon=":material/play_arrow:", key="onboard_train"):
            with guard():
                start_run(train_defaults(), name=t("onboard.run_name"))
                if (ROOT / "pages" / "train.py").is_file():
                    st.switch_page("pages/train.py")
                st.rerun()


@functools.cache
def gpu_name() -> str:
    """The CUDA device's name, or ``""`` when this machine has no usable GPU."""
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""


# ---------------------------------------------------------------- a run's embeddings
@dataclass(frozen=True)
class RunEmbeddings:
    """Item and user vectors of a run with one descriptive row each (for maps and neighbour search).

    ``items`` / ``users`` frames hold ``id``, ``label``, ``cohort``, ``n_ratings``
    and the side features; row ``i`` describes vector ``i``.
    """

    items: pd.DataFrame
    item_vectors: np.ndarray
    users: pd.DataFrame
    user_vectors: np.ndarray


def run_dataset(run: Any) -> Any:
    """The dataset a run was trained on (loaded once per server)."""
    return load_dataset_ref(run.dataset_ref)


def _side_rows(dataset: Any, table: pd.DataFrame, idmap: Any, external_ids: tuple[str, ...]) -> pd.DataFrame:
    """Side-table rows aligned to a run's external IDs (missing IDs give empty rows)."""
    positions = idmap.lookup(list(external_ids))
    if table.shape[1] == 0:
        return pd.DataFrame(index=range(len(external_ids)))
    rows = table.reindex(positions).reset_index(drop=True)
    return rows


@st.cache_resource(show_spinner=False, max_entries=3)
def run_embeddings(run_id: str, weights_mtime: float) -> RunEmbeddings:
    """Vectors of every item (factor ``q_i``) and user (taste vector) of a run.

    Warm users use their learned parameters; other users are adapted on their
    first K ratings in time (K = the run's ``eval_support_size``); users
    without ratings sit at the meta-learned start. Computed once per run and
    weights version.
    """
    run = store().get_run(run_id)
    rec = recommender(run_id, weights_mtime)
    dataset = run_dataset(run)
    meta = rec.run.meta
    item_ids, user_ids = rec.items.external_ids, rec.users.external_ids
    counts = dataset.ratings.groupby("item").size()
    item_idx = dataset.items.lookup(list(item_ids))
    titles = meta.get("item_titles") or {}
    items = _side_rows(dataset, dataset.item_table, dataset.items, item_ids)
    items.insert(0, "id", list(item_ids))
    items.insert(1, "label", [str(titles.get(i, i)) for i in item_ids] if titles else (items["title"].astype(str).tolist() if "title" in items else list(item_ids)))
    known_items = rec.model.item_known.cpu().numpy()
    cold_items = set(meta.get("cold_items", []))
    items.insert(2, "cohort", ["new" if i in cold_items or not known_items[i] else "warm" for i in range(len(item_ids))])
    items.insert(3, "n_ratings", [int(counts.get(i, 0)) if i >= 0 else 0 for i in item_idx])

    k = int(rec.run.config.eval_support_size)
    in_time_order = dataset.ratings.sort_values(["timestamp", "item"], kind="stable")
    first = in_time_order.groupby("user").head(k)
    vectors = rec.user_vectors(pd.DataFrame({
        "user_id": dataset.users.externals(first["user"]), "item_id": dataset.items.externals(first["item"]), "rating": first["rating"].to_numpy(),
    }))
    user_idx = dataset.users.lookup(list(user_ids))
    counts_by_user = dataset.ratings.groupby("user").size()
    n_ratings = np.where(user_idx >= 0, counts_by_user.reindex(user_idx, fill_value=0).to_numpy(), 0)
    cohorts = rec.user_cohorts(n_ratings)
    users = _side_rows(dataset, dataset.user_table, dataset.users, user_ids)
    users.insert(0, "id", list(user_ids))
    users.insert(1, "label", [f"user {u}" for u in user_ids])
    users.insert(2, "cohort", cohorts)
    users.insert(3, "n_ratings", n_ratings)
    return RunEmbeddings(items, rec.item_vectors().astype(np.float64), users, vectors.astype(np.float64))


def current_embeddings() -> RunEmbeddings | None:
    """Embeddings of the session's run (``None`` when it has no weights yet)."""
    run = current_run()
    if run is None or not has_weights(run.id):
        return None
    return run_embeddings(run.id, weights_stamp(run.id))


def item_titles_for(rec: Any, dataset: Any) -> list[str]:
    """A display name per item of a run (its saved titles, else the dataset's, else the ID)."""
    saved = rec.run.meta.get("item_titles") or {}
    if saved:
        return [str(saved.get(i, i)) for i in rec.items.external_ids]
    titles = item_titles(dataset)
    positions = dataset.items.lookup(list(rec.items.external_ids))
    return [titles.iloc[p] if p >= 0 else i for p, i in zip(positions, rec.items.external_ids)]


# ---------------------------------------------------------------- evaluation (shots curves)
def evaluation_dir(run_id: str) -> Path:
    """Where a run's evaluation (shots curve, per-user gains) is kept."""
    from metarec_core.jobs import evaluation_dir as folder

    return folder(store(), run_id)


def start_evaluation(run: Any) -> None:
    """Evaluate a run in a background process (it outlives this server); the page polls :func:`evaluation_state`."""
    from metarec_core.jobs import start_evaluation as start

    start(store(), run.id)


def delete_run(run_id: str) -> None:
    """Delete a run and its files, stopping its background evaluation first."""
    from metarec_core.jobs import delete_run as delete

    delete(store(), run_id)


def evaluation_state(run_id: str) -> Any:
    """The run's :class:`~metarec_core.jobs.EvaluationState`: ``status`` ``done``, ``running``, ``failed`` (with ``error``) or ``none``."""
    from metarec_core.jobs import evaluation_state as state

    return state(store(), run_id)


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_evaluation(path: str, mtime: float) -> Any:
    from metarec_core.evaluation import EvaluationResult

    return EvaluationResult.load(path)


def load_evaluation(run_id: str) -> Any:
    """The saved :class:`~metarec_core.evaluation.EvaluationResult` of a run, or ``None``."""
    folder = evaluation_dir(run_id)
    if not (folder / "results.parquet").is_file():
        return None
    return _load_evaluation(str(folder), (folder / "results.parquet").stat().st_mtime)
