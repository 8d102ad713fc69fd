"""Sweeps in the app: the Train page's Sweep section (space, start, live trials, heatmap, parallel coordinates) and the Runs page's sweep filter."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ui import cache, navigation, state
from ui.errors import guard, show_error
from ui.i18n import labeller, t
from ui.markup import plain

#: Settings the section offers to sweep (dotted TrainConfig keys), the objective's weights first.
SWEEPABLE = (
    "lambda_meta", "lambda_trans", "lambda_l0", "lambda_id", "meta_epochs", "trans_epochs", "num_epochs", "inner_lr",
    "inner_steps", "lr", "model.factor_dim", "support_size", "meta_batch_size", "schedule", "seed",
)
#: The Train page's label of a setting, where it has one.
LABEL_KEYS = {"model.factor_dim": "train.factor_dim", "lambda_id": "sweep.param.lambda_id"}
KINDS = ("grid", "uniform", "loguniform", "choice")
#: Grid values a parameter starts with when picked (others start at the base config's value).
STARTING_VALUES = {"lambda_meta": "0, 0.5, 1", "lambda_trans": "0.5, 1", "lambda_l0": "0.01, 0.04", "meta_epochs": "1, 2", "trans_epochs": "1, 2"}
CURRENT = "sweep_current"  # the sweep the section shows
USED = "sweep_settings_used"  # set by "use these settings": the page is drawn again with them
HEATMAP_MAX_VALUES = 12  # more distinct values than this on an axis (random draws): a scatter instead of cells


def param_label(key: str) -> str:
    """A setting's name as the Train page shows it (``λ1 — weight of L_meta``); a key with no such name as it is.

    The dotted key itself (what ``--grid`` and ``--set`` take) is in the
    parameter picker's help, so the section shows words, not raw keys.
    """
    label_key = LABEL_KEYS.get(key, f"train.{key}")
    text = t(label_key)
    return key if text == label_key else text


# ---------------------------------------------------------------------- figures (pure)
def heatmap_figure(table: pd.DataFrame, x: str, y: str, *, metric_label: str, mode: str, x_title: str = "", y_title: str = "") -> go.Figure:
    """The metric over two swept settings: a cell per value pair (the mean over its trials), the best trial's cell starred (★).

    With more than :data:`HEATMAP_MAX_VALUES` distinct values on an axis (random draws) each trial is a dot coloured by the metric.
    """
    scored = table[table["metric"].notna()]
    scale = "Viridis_r" if mode == "min" else "Viridis"
    fig = go.Figure()
    if scored.empty:
        fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=40), xaxis_title=x_title, yaxis_title=y_title)
        return fig
    if scored[x].nunique() <= HEATMAP_MAX_VALUES and scored[y].nunique() <= HEATMAP_MAX_VALUES:
        xs = sorted(scored[x].unique(), key=_order)
        ys = sorted(scored[y].unique(), key=_order)
        cells = scored.groupby([y, x])["metric"].mean()
        z = [[cells.get((b, a), np.nan) for a in xs] for b in ys]
        best = scored[scored["best"]]
        star = (best[x].iloc[0], best[y].iloc[0]) if len(best) else None
        text = [["" if (v is None or v != v) else ("★ " if (a, b) == star else "") + f"{v:.4f}" for a, v in zip(xs, row)]
                for b, row in zip(ys, z)]
        fig.add_trace(go.Heatmap(
            x=[_tick(v) for v in xs], y=[_tick(v) for v in ys], z=z, text=text, texttemplate="%{text}", colorscale=scale,
            colorbar=dict(title=dict(text=metric_label)), hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric_label} %{{z:.4f}}<extra></extra>",
        ))
        fig.update_xaxes(type="category")
        fig.update_yaxes(type="category")
    else:
        fig.add_trace(go.Scatter(
            x=scored[x], y=scored[y], mode="markers", showlegend=False,
            marker=dict(size=[18 if b else 11 for b in scored["best"]], color=scored["metric"], colorscale=scale,
                        symbol=["star" if b else "circle" for b in scored["best"]], line=dict(color="#111111", width=1),
                        colorbar=dict(title=dict(text=metric_label))),
            hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y}}<br>{metric_label} %{{marker.color:.4f}}<extra></extra>",
        ))
    fig.update_layout(height=360, margin=dict(l=10, r=10, t=30, b=40), xaxis_title=x_title, yaxis_title=y_title)
    return fig


def parallel_figure(table: pd.DataFrame, keys: Sequence[str], *, metric_label: str, mode: str) -> go.Figure:
    """Parallel coordinates of every scored trial: one axis per swept setting and one for the metric; the best trial is selected."""
    scored = table[table["metric"].notna()].reset_index(drop=True)
    dimensions = []
    for key in keys:
        values = scored[key]
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            dimensions.append(dict(label=key, values=values.astype(float)))
        else:
            labels = sorted({_tick(v) for v in values})
            dimensions.append(dict(label=key, values=[labels.index(_tick(v)) for v in values], tickvals=list(range(len(labels))), ticktext=labels))
    metric = dict(label=metric_label, values=scored["metric"].astype(float))
    best = scored[scored["best"]]
    if len(best) and len(scored) > 1:
        value = float(best["metric"].iloc[0])
        spread = float(scored["metric"].max() - scored["metric"].min()) or 1.0
        metric["constraintrange"] = [value - spread * 0.01, value + spread * 0.01]  # the best trial's line stands out
    dimensions.append(metric)
    fig = go.Figure(go.Parcoords(
        dimensions=dimensions,
        line=dict(color=scored["metric"].astype(float), colorscale="Viridis_r" if mode == "min" else "Viridis", showscale=False),
    ))
    fig.update_layout(height=360, margin=dict(l=60, r=60, t=50, b=30))
    return fig


def _order(value: Any) -> tuple:
    return (0, float(value), "") if isinstance(value, (int, float)) and not isinstance(value, bool) else (1, 0.0, str(value))


def _tick(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(map(str, value)) + "]"
    return str(value)


# ---------------------------------------------------------------------- the Train page's section
def sweep_section(base_config: Callable[[], Any], *, prefix: str, fields: Sequence[str], base_key: str) -> None:
    """The Sweep section: choose settings and their values or ranges, start a sweep, and watch its trials.

    Parameters
    ----------
    base_config
        Returns the Train page's current ``TrainConfig`` (what every trial starts from).
    prefix, fields, base_key
        Where the Train page keeps its widgets' values (``prefix + field``) and its base config,
        so that "use these settings" can put a trial's settings there.
    """
    st.header(t("sweep.title"))
    st.caption(t("sweep.intro"))
    with guard():
        space_form(base_config)
    with guard():
        viewer(prefix=prefix, fields=fields, base_key=base_key)


def space_form(base_config: Callable[[], Any]) -> None:
    """Settings to vary, each with grid values or a random range; the metric, the budget; the start button."""
    from metarec_core.configs import config_to_dict, flatten_settings
    from metarec_core.sweep import METRICS, build_spec, parse_grid, parse_random

    base = base_config()
    flat = flatten_settings(config_to_dict(base))
    keys = st.multiselect(
        t("sweep.params"), SWEEPABLE, default=["lambda_meta", "lambda_trans"], format_func=param_label, max_selections=4,
        key="sweep_params", help=t("sweep.params.help"),
    )
    grid, random = [], []
    for key in keys:
        cols = st.columns([2, 3, 3], vertical_alignment="bottom")
        cols[0].markdown(f"**{plain(param_label(key))}**")
        kind = cols[1].segmented_control(
            t("sweep.kind"), KINDS, default="grid", required=True, format_func=labeller("sweep.kind."), key=f"sweep_kind_{key}",
            label_visibility="collapsed",
        ) or "grid"
        default = STARTING_VALUES.get(key, _tick(flat[key])) if kind in ("grid", "choice") else ""
        placeholder = t("sweep.values.placeholder") if kind in ("grid", "choice") else t("sweep.range.placeholder")
        text = cols[2].text_input(
            t("sweep.values"), value=default, placeholder=placeholder, key=f"sweep_values_{key}_{kind}", label_visibility="collapsed",
        )
        if kind == "grid":
            grid.append(parse_grid(f"{key}={text}"))
        else:
            random.append(parse_random(f"{key}={kind}({text})"))
    dataset = _dataset()
    implicit = bool(dataset is not None and dataset.implicit)
    metrics = [m for m in METRICS if (m == "valid_auc") == implicit]
    cols = st.columns(4, vertical_alignment="bottom")
    metric = cols[0].selectbox(t("sweep.metric"), metrics, format_func=labeller("sweep.metric."), key="sweep_metric")
    samples = int(cols[1].number_input(t("sweep.trials"), 1, 64, value=4 if random else 1, step=1, key="sweep_trials", disabled=not random,
                                       help=t("sweep.trials.help")))
    concurrent = int(cols[2].number_input(t("sweep.concurrent"), 1, 64, value=2, step=1, key="sweep_concurrent", help=t("sweep.concurrent.help")))
    asha = cols[3].toggle(t("sweep.asha"), key="sweep_asha", help=t("sweep.asha.help"))
    if not keys:
        st.caption(t("sweep.pick_one"))
        return
    spec = build_spec(base, grid=grid, random=random, metric=metric or metrics[0], samples=samples if random else 1,
                      max_concurrent=concurrent, early_stopping="asha" if asha else "none")
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    name = left.text_input(t("sweep.name"), key="sweep_name", placeholder=t("sweep.name.placeholder"), max_chars=120)
    left.caption(t("sweep.count", n=spec.n_trials, concurrent=concurrent))
    if right.button(t("sweep.start"), type="primary", icon=":material/grid_view:", key="sweep_start", width="stretch"):
        from metarec_core.sweep_driver import start_background, submit_sweep

        store = cache.store()
        sweep_id = submit_sweep(store, spec, state.dataset_ref(), name=name.strip() or None, background=True)
        start_background(store, sweep_id)
        st.session_state[CURRENT] = sweep_id
        st.rerun()


def viewer(*, prefix: str, fields: Sequence[str], base_key: str) -> None:
    """The chosen sweep, live while it runs: status, a bar per trial, the queue, heatmap, parallel coordinates, the best trial."""
    from metarec_core.sweep_driver import mark_stale_sweeps

    store = cache.store()
    mark_stale_sweeps(store)
    sweeps = store.list_sweeps()
    if not sweeps:
        st.info(t("sweep.none"))
        return
    ids = [s.id for s in sweeps]
    by_id = {s.id: s for s in sweeps}
    current = st.session_state.get(CURRENT)
    chosen = st.selectbox(
        t("sweep.pick"), ids, index=ids.index(current) if current in ids else 0, key="sweep_pick",
        format_func=lambda i: f"{by_id[i].name} · {t(f'status.{by_id[i].status}')} · {i}",
    )
    st.session_state[CURRENT] = chosen
    active = by_id[chosen].is_active

    @st.fragment(run_every=1.0 if active else None)
    def live() -> None:
        try:
            sweep_view(chosen, was_active=active, prefix=prefix, fields=fields, base_key=base_key)
        except Exception as exc:  # noqa: BLE001 - a fragment rerun must not show a traceback either
            show_error(exc)

    live()


def sweep_view(sweep_id: str, *, was_active: bool, prefix: str, fields: Sequence[str], base_key: str) -> None:
    """One sweep's state (drawn again every second while it runs)."""
    from metarec_core.sweep import spec_from_json
    from metarec_core.sweep_driver import cancel_sweep, mark_stale_sweeps, trial_table

    if st.session_state.pop(USED, False):
        st.rerun()  # a trial's settings went into the Train page's widgets: draw the page with them
    store = cache.store()
    mark_stale_sweeps(store)
    sweep = store.get_sweep(sweep_id)
    spec = spec_from_json(sweep.spec)
    table = trial_table(store, sweep_id)
    metric_label = labeller("sweep.short.")(spec.metric)
    finished = int(table["status"].isin(["completed", "failed", "cancelled"]).sum())
    running = int((table["status"] == "running").sum())
    waiting = max(0, spec.n_trials - len(table)) if sweep.is_active else 0
    st.markdown(t("sweep.status", status=t(f"status.{sweep.status}"), done=finished, total=spec.n_trials, running=running, waiting=waiting))
    st.caption(t("sweep.space", space=plain(", ".join(f"{k}: {v}" for k, v in spec.describe().items())), metric=metric_label,
                 direction=t(f"sweep.mode.{spec.mode}")))
    if sweep.is_active:
        if st.button(t("sweep.cancel"), icon=":material/stop:", key=f"sweep_cancel_{sweep_id}"):
            cancel_sweep(store, sweep_id, wait=False)
    if sweep.error:
        (st.error if sweep.status == "failed" else st.caption)(t("sweep.error", error=plain(sweep.error)))
    if was_active and not sweep.is_active:
        st.rerun()  # finished: redraw the page once and stop polling
    if table.empty:
        st.caption(t("sweep.waiting"))
        return
    trials_view(table, spec, metric_label)
    keys = list(spec.keys)
    if len(keys) >= 2:
        x_default = keys.index("lambda_meta") if "lambda_meta" in keys else 0
        y_default = keys.index("lambda_trans") if "lambda_trans" in keys else (1 if x_default != 1 else 0)
        cols = st.columns([1, 1, 3])
        x = cols[0].selectbox(t("sweep.heatmap.x"), keys, index=x_default, format_func=param_label, key=f"sweep_x_{sweep_id}")
        y = cols[1].selectbox(t("sweep.heatmap.y"), keys, index=y_default, format_func=param_label, key=f"sweep_y_{sweep_id}")
    else:
        x = y = keys[0]
    left, right = st.columns(2)
    with left:
        st.subheader(t("sweep.heatmap"))
        if x == y:
            st.caption(t("sweep.heatmap.two"))
        st.plotly_chart(heatmap_figure(table, x, y, metric_label=metric_label, mode=spec.mode, x_title=param_label(x), y_title=param_label(y)),
                        config={"displayModeBar": False}, key=f"sweep_heat_{sweep_id}")
    with right:
        st.subheader(t("sweep.parallel"))
        st.plotly_chart(parallel_figure(table, keys, metric_label=metric_label, mode=spec.mode), config={"displayModeBar": False},
                        key=f"sweep_par_{sweep_id}")
    best_view(table, spec, metric_label, prefix=prefix, fields=fields, base_key=base_key)


def trials_view(table: pd.DataFrame, spec: Any, metric_label: str) -> None:
    """A progress bar per trial (the best starred), then the trials as a table."""
    from metarec_core.sweep import settings_text

    with st.container(height=min(60 + 52 * len(table), 320)):
        for row in table.itertuples(index=False):
            row = row._asdict()
            settings = {k: row[k] for k in spec.keys if k in row}
            value = "—" if row["metric"] is None or row["metric"] != row["metric"] else f"{row['metric']:.4f}"
            text = t("sweep.trial", star="★ " if row["best"] else "", settings=plain(settings_text(settings)), status=t(f"status.{row['status']}"),
                     epoch=row["epoch"], metric=metric_label, value=value)
            st.progress(float(row["fraction"]), text=text)
    shown = table.rename(columns={"run_id": "ID", "status": t("runs.col.status"), "metric": metric_label, "epoch": t("common.epoch"),
                                  "error": t("sweep.col.error")})
    shown[t("runs.col.status")] = [t(f"status.{s}") for s in table["status"]]
    shown[t("sweep.col.error")] = table["error"].fillna("").to_numpy()
    shown.insert(0, "★", ["★" if b else "" for b in table["best"]])
    st.dataframe(shown.drop(columns=["fraction", "best"]), hide_index=True)


def best_view(table: pd.DataFrame, spec: Any, metric_label: str, *, prefix: str, fields: Sequence[str], base_key: str) -> None:
    """The best trial so far, with "open this run" and "use these settings"."""
    from metarec_core.sweep import settings_text

    best = table[table["best"]]
    if best.empty:
        return
    row = best.iloc[0]
    settings = {k: _plain(row[k]) for k in spec.keys}
    st.success(t("sweep.best", settings=plain(settings_text(settings)), metric=metric_label, value=f"{row['metric']:.4f}", run=row["run_id"]),
               icon=":material/star:")
    cols = st.columns([1, 1, 3])
    if cols[0].button(t("sweep.open"), icon=":material/open_in_new:", key=f"sweep_open_{row['run_id']}"):
        st.session_state[state.RUN] = row["run_id"]
        navigation.switch_to("runs")
    cols[1].button(
        t("sweep.use"), icon=":material/tune:", key=f"sweep_use_{row['run_id']}", help=t("sweep.use.help"), on_click=use_settings,
        args=(settings,), kwargs=dict(prefix=prefix, fields=fields, base_key=base_key),
    )


def use_settings(settings: dict[str, Any], *, prefix: str, fields: Sequence[str], base_key: str) -> None:
    """Put a trial's settings into the Train page: its widgets' values, and the base config for settings it has no widget for.

    A button's callback: it runs before the page's widgets are drawn again, as Streamlit requires; the
    sweep's view (a fragment) then redraws the whole page once.
    """
    from metarec_core.configs import flatten_settings, unflatten_settings

    base = flatten_settings(st.session_state.get(base_key) or {})
    for key, value in settings.items():
        if key in fields:
            st.session_state[prefix + key] = ", ".join(str(v) for v in value) if key == "model.hidden" else value
        base[key] = value
    st.session_state[base_key] = unflatten_settings(base)
    st.session_state[USED] = True


def _plain(value: Any) -> Any:
    """A numpy number from a table cell as a Python number (what configs take)."""
    return value.item() if isinstance(value, np.generic) else value


def _dataset() -> Any:
    from ui import datasets

    try:
        return datasets.current_dataset()
    except Exception:  # noqa: BLE001 - the Train page shows the dataset's own error
        return None


# ---------------------------------------------------------------------- the Runs page's filter
def filter_runs(runs: list[Any]) -> list[Any]:
    """The Runs page's sweep filter: all runs, runs of no sweep, or the trials of one sweep (a selectbox when sweeps exist)."""
    sweeps = cache.store().list_sweeps()
    if not sweeps:
        return runs
    names = {s.id: f"{s.name} · {s.id}" for s in sweeps}
    options = ["", "-", *names]
    chosen = st.selectbox(
        t("sweep.filter"), options, key="runs_sweep_filter",
        format_func=lambda v: t("sweep.filter.all") if v == "" else t("sweep.filter.none") if v == "-" else names[v],
    )
    if chosen == "":
        return runs
    return [r for r in runs if (r.sweep_id or "-") == chosen]
