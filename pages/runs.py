"""Runs page: compare runs — overlaid loss curves, what differs, final metrics — and export, rename, delete."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from ui import cache, charts, datasets, navigation, onboarding, runs as stored, state, sweeps
from ui.errors import guard
from ui.i18n import labeller, phase_labels, t
from ui.markup import plain
from ui.metrics import kind_label, lower_is_better, method_label, metric_label, setting_label

LOSS_TERMS = ("meta", "trans", "l0", "total")


#: The test metrics of the run table: the key, and whether lower is better.
TABLE_METRICS = (("test_mae", True), ("test_ndcg@3", False), ("test_auc", False))


def table_column(key: str) -> str:
    """A test metric's column name in the run table: short (``MAE``), the caption says they are test metrics on new users."""
    return metric_label(key.removeprefix("test_"))


def runs_table(runs) -> pd.DataFrame:
    """One row per run: name, kind, status, dataset, key settings and final test metrics (numbers, so columns sort)."""
    store = cache.store()
    rows = []
    for run in runs:
        final = store.final_metrics(run.id) if run.status in ("completed", "cancelled") else {}
        duration = (run.finished - run.started) if run.finished and run.started else None
        config = stored.run_config(run)  # None: settings of another version (an imported run)
        row = {
            t("runs.col.name"): run.name,
            "ID": run.id,
            t("runs.col.kind"): kind_label(None if config is None else config.kind),
        }
        # The test metrics right after what the run is, so they are on screen whatever the width (the rest scrolls).
        for key, _ in TABLE_METRICS:
            value = final.get(key)
            row[table_column(key)] = float(value) if isinstance(value, (int, float)) and value == value else None
        row |= {
            t("runs.col.status"): t(f"status.{run.status}"),
            t("runs.col.dataset"): datasets.dataset_options().get(run.dataset_ref, run.dataset_ref),
            t("runs.col.created"): pd.Timestamp(run.created, unit="s").strftime("%m-%d %H:%M"),
            t("runs.col.seconds"): None if duration is None else round(duration, 1),
            "λ1": None if config is None else config.lambda_meta,
            "λ2": None if config is None else config.lambda_trans,
            t("runs.col.epochs"): None if config is None else config.num_epochs,
            t("runs.col.schedule"): "—" if config is None else labeller("train.schedule.")(config.schedule),
        }
        rows.append(row)
    frame = pd.DataFrame(rows)
    # Only the metric columns some listed run has (MAE and nDCG@3 on ratings, AUC on implicit data).
    empty = [table_column(k) for k, _ in TABLE_METRICS if frame[table_column(k)].isna().all()]
    return frame.drop(columns=empty if len(empty) < len(TABLE_METRICS) else [table_column("test_auc")])


def best_rows(frame: pd.DataFrame) -> dict[str, int]:
    """Per metric column of :func:`runs_table`, the position of the best run (lowest MAE, highest nDCG/AUC)."""
    best = {}
    for key, lower in TABLE_METRICS:
        column = table_column(key)
        if column in frame and frame[column].notna().any():
            best[column] = int(frame[column].idxmin() if lower else frame[column].idxmax())
    return best


def styled_table(frame: pd.DataFrame):
    """The run table with each metric's best run in bold on green, metrics to four decimals."""
    best = best_rows(frame)

    def mark(column: pd.Series) -> list[str]:
        return ["font-weight: bold; background-color: #d8f3dc" if best.get(column.name) == i else "" for i in range(len(column))]

    metric_columns = [table_column(k) for k, _ in TABLE_METRICS if table_column(k) in frame]
    return (frame.style.apply(mark, subset=list(best)).format("{:.4f}", subset=metric_columns, na_rep="—")
            .format("{:g}", subset=["λ1", "λ2"], na_rep="—").format("{:.1f}", subset=[t("runs.col.seconds")], na_rep="—")
            .format("{:.0f}", subset=[t("runs.col.epochs")], na_rep="—"))


def table_section(runs) -> list:
    """The sortable, filterable run table; returns the runs it shows."""
    frame = runs_table(runs)
    cols = st.columns([3, 2, 2])
    query = cols[0].text_input(t("runs.filter"), key="runs_filter", placeholder=t("runs.filter.placeholder"))
    statuses = cols[1].multiselect(
        t("runs.col.status"), sorted({r.status for r in runs}), format_func=labeller("status."), key="runs_status", placeholder=t("runs.filter.any")
    )
    kinds = cols[2].multiselect(t("runs.col.kind"), sorted(set(frame[t("runs.col.kind")])), key="runs_kinds", placeholder=t("runs.filter.any"))
    keep = pd.Series(True, index=frame.index)
    if query.strip():
        needle = query.strip().lower()
        keep &= frame[t("runs.col.name")].str.lower().str.contains(needle, regex=False) | frame["ID"].str.contains(needle, regex=False)
    if statuses:
        keep &= pd.Series([r.status in statuses for r in runs], index=frame.index)
    if kinds:
        keep &= frame[t("runs.col.kind")].isin(kinds)
    shown = frame[keep].reset_index(drop=True)
    if shown.empty:
        st.info(t("runs.filter.none"), icon=":material/filter_alt_off:")
        return []
    if shown[t("runs.col.dataset")].nunique() == 1:  # one dataset: the column would repeat it on every row (it is in the sidebar)
        shown = shown.drop(columns=[t("runs.col.dataset")])
    st.dataframe(
        styled_table(shown), hide_index=True, width="stretch",
        column_config={
            "ID": st.column_config.TextColumn("ID", width="small"),
            t("runs.col.name"): st.column_config.TextColumn(width="medium"),
            "λ1": st.column_config.NumberColumn(width="small"),
            "λ2": st.column_config.NumberColumn(width="small"),
            t("runs.col.epochs"): st.column_config.NumberColumn(width="small"),
            t("runs.col.seconds"): st.column_config.NumberColumn(width="small"),
            t("runs.col.created"): st.column_config.TextColumn(width="small"),
        },
    )
    best = best_rows(shown)
    if best and len(shown) > 1:
        names = shown[t("runs.col.name")]
        st.caption(t("runs.best", best=" · ".join(f"{col}: {names.iloc[i]}" for col, i in best.items())))
    ids = set(shown["ID"])
    return [r for r in runs if r.id in ids]


def queue_section() -> None:
    """Queued and running runs in the order they start, with their progress (polled while any is active)."""
    active = stored.active_runs()

    @st.fragment(run_every=2.0 if active else None)
    def view() -> None:
        with guard():
            current = stored.active_runs()
            if not current:
                st.caption(t("runs.queue.empty"))
                return
            rows = []
            for position, run in enumerate(current, start=1):
                progress = run.progress or {}
                step, total = progress.get("step"), progress.get("total_steps")
                eta = progress.get("eta")
                rows.append({
                    "#": position,
                    t("runs.col.name"): run.name,
                    t("runs.col.status"): t(f"status.{run.status}"),
                    t("runs.queue.phase"): labeller("phase.")(progress["phase"]) if progress.get("phase") else "—",
                    t("runs.queue.done"): (step / total) if step is not None and total else 0.0,
                    t("runs.queue.eta"): "—" if eta is None else f"{eta:.0f} s",
                    t("runs.col.created"): pd.Timestamp(run.created, unit="s").strftime("%Y-%m-%d %H:%M"),
                    "ID": run.id,
                })
            st.dataframe(
                pd.DataFrame(rows), hide_index=True, width="stretch",
                column_config={t("runs.queue.done"): st.column_config.ProgressColumn(t("runs.queue.done"), min_value=0.0, max_value=1.0, format="percent")},
            )

    view()


def curves_section(selected: list[str], labels: dict[str, str]) -> None:
    """Overlaid loss curves (the first run's phases shaded) and validation curves with each run's best epoch and a note when later epochs got worse."""
    store = cache.store()
    frames = [store.metrics_frame(run_id).assign(run=run_id) for run_id in selected]
    metrics = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    if metrics.empty:
        st.info(t("runs.no_metrics"))
        return
    cols = st.columns([2, 2, 3])
    smoothing = cols[0].slider(t("runs.smoothing"), 0.0, 0.99, 0.9, step=0.01, key="runs_smoothing")
    x_axis = cols[1].segmented_control(
        t("runs.x_axis"), ["step", "time"], format_func=labeller("runs.x."), default="step", required=True, key="runs_x"
    )
    terms = cols[2].pills(
        t("runs.terms"), list(LOSS_TERMS), selection_mode="multi", default=["meta", "trans"],
        format_func=labeller("loss."), key="runs_terms",
    )
    st.plotly_chart(
        charts.loss_figure(
            metrics, keys=terms or ["total"], smoothing=smoothing, x=x_axis or "step", run_labels=labels,
            key_labels={k: t(f"loss.{k}") for k in LOSS_TERMS}, colours=charts.run_colours(selected), phase_names=phase_labels(),
            x_title=t("common.step") if x_axis != "time" else t("common.seconds"), y_title=t("common.loss"),
        ),
        config={"displayModeBar": False},
    )
    st.caption(t("runs.curves.caption") + " " + t("runs.curves.phases", run=labels[selected[0]]))
    if (metrics["phase"] == "validate").any():
        keys = sorted(k for k in metrics.loc[metrics["phase"] == "validate", "key"].unique() if k.startswith("valid_"))
        key = st.segmented_control(t("runs.valid_metric"), keys, default=keys[0], required=True, key="runs_valid_key", format_func=metric_label)
        key = key or keys[0]
        trends = validation_trends(metrics, key)
        st.plotly_chart(
            charts.validation_figure(
                metrics, key, run_labels=labels, x_title=t("common.epoch"), y_title=metric_label(key),
                colours=charts.run_colours(selected), best_epochs={r: tr.best_epoch for r, tr in trends.items()}, best_label=t("runs.best_epoch"),
            ),
            config={"displayModeBar": False},
        )
        for run_id, trend in trends.items():
            if trend.worse_after:
                st.warning(
                    t("runs.worse_after", run=labels[run_id], best=trend.best_epoch, last=trend.last_epoch, metric=metric_label(key),
                      value=f"{trend.best:.4f}", end=f"{trend.last:.4f}"),
                    icon=":material/trending_down:",
                )


def validation_trends(metrics: pd.DataFrame, key: str) -> dict:
    """Each run's :class:`~metarec_core.averaging.ValidationTrend` of validation metric ``key``."""
    from metarec_core.averaging import validation_trend

    points = metrics[(metrics["phase"] == "validate") & (metrics["key"] == key)]
    out = {}
    for run_id, part in points.groupby("run", sort=False):
        trend = validation_trend(part["epoch"].tolist(), part["value"].tolist(), lower_is_better=lower_is_better(key))
        if trend is not None:
            out[run_id] = trend
    return out


def compare_section(selected: list[str], labels: dict[str, str]) -> None:
    """Settings that differ between the selected runs, final metrics (full width: a column per metric), CSV export."""
    comparison = cache.store().compare(selected)
    st.subheader(t("runs.diff"))
    if len(selected) < 2:
        st.caption(t("runs.diff.one"))
    elif comparison.params.empty:
        st.caption(t("runs.diff.none"))
    else:
        params = comparison.params.copy()
        if "schedule" in params.index:
            params.loc["schedule"] = [labeller("train.schedule.")(v) for v in params.loc["schedule"]]
        params = params.rename(columns=labels).astype(str)
        params.index = [setting_label(k) for k in params.index]
        params.index.name = t("runs.col.setting")
        st.dataframe(params)
    st.subheader(t("runs.final"))
    final = final_with_baselines(comparison.metrics, selected, labels)
    metric_columns = [c for c in final.columns if c != "status"]
    for column in metric_columns:
        final[column] = pd.to_numeric(final[column], errors="coerce")
    run_rows = selected_rows(final, labels, selected)
    scored = [c for c in metric_columns if c != "best_epoch" and final.loc[run_rows, c].notna().any()]
    best = {c: final.loc[run_rows, c].idxmin() if lower_is_better(c) else final.loc[run_rows, c].idxmax() for c in scored}
    beaten = baselines_ahead(final, run_rows, best)
    final["status"] = [t(f"status.{v}") if v in STATUSES else v for v in final["status"]]
    shown = final.rename(columns={"status": t("runs.col.status"), **{c: metric_label(c) for c in metric_columns}})
    shown.index.name = t("runs.col.run")

    def mark(column: pd.Series) -> list[str]:
        key = next((c for c in metric_columns if metric_label(c) == column.name), None)
        return ["font-weight: bold; background-color: #d8f3dc" if key in best and best[key] == i else "" for i in column.index]

    numbers = [metric_label(c) for c in metric_columns if c != "best_epoch"]
    if "best_epoch" in metric_columns:  # a baseline has no epochs: a dash, as text (a missing number would read "None")
        shown[metric_label("best_epoch")] = [f"{v:.0f}" if v == v else "—" for v in shown[metric_label("best_epoch")]]
    # A metric a run has none of (cancelled before testing; AUC beside MAE) is a dash, not "None".
    st.dataframe(shown.style.apply(mark, subset=[metric_label(c) for c in metric_columns]).format("{:.4f}", subset=numbers, na_rep="—"))
    st.caption(t("runs.final.baselines"))
    for metric, (baseline, value, run_value) in beaten.items():
        st.info(t("runs.final.beaten", baseline=baseline, metric=metric_label(metric), value=f"{value:.4f}", best=f"{run_value:.4f}"),
                icon=":material/info:")
    if len(final) > 1:
        on_movielens = {cache.store().get_run(r).dataset_ref for r in selected} == {state.DEFAULT_DATASET}
        st.caption(t("runs.final.noise") if on_movielens else t("runs.final.noise.other"))
    metrics_csv = pd.concat(
        [cache.store().metrics_frame(run_id).assign(run=run_id, name=labels[run_id]) for run_id in selected], ignore_index=True
    ).to_csv(index=False)
    cols = st.columns(2)
    cols[0].download_button(
        t("runs.export.metrics"), metrics_csv.encode(), file_name="metrics.csv", mime="text/csv", icon=":material/download:", key="dl_metrics"
    )
    cols[1].download_button(
        t("runs.export.final"), comparison.metrics.to_csv().encode(), file_name="final_metrics.csv", mime="text/csv",
        icon=":material/download:", key="dl_final",
    )


STATUSES = ("queued", "running", "completed", "cancelled", "failed")


def baselines_ahead(final: pd.DataFrame, run_rows: list[str], best: dict) -> dict:
    """Metrics on which a baseline beats the best selected run: ``{metric: (baseline row, its value, the best run's value)}``."""
    out = {}
    others = [i for i in final.index if i not in run_rows]
    for metric, row in best.items():
        values = final.loc[others, metric].dropna()
        if values.empty:
            continue
        top = values.idxmin() if lower_is_better(metric) else values.idxmax()
        ahead = values[top] < final.loc[row, metric] if lower_is_better(metric) else values[top] > final.loc[row, metric]
        if ahead:
            out[metric] = (top, float(values[top]), float(final.loc[row, metric]))
    return out


def selected_rows(final: pd.DataFrame, labels: dict[str, str], selected: list[str]) -> list[str]:
    """The rows of the final-metrics table that are runs (not baselines)."""
    return [labels[r] for r in selected if labels[r] in final.index]


def final_with_baselines(metrics: pd.DataFrame, selected: list[str], labels: dict[str, str]) -> pd.DataFrame:
    """The selected runs' final metrics, then the baselines scored on their split (one row per distinct split).

    Runs on the same data and split share their baselines, so those appear once;
    otherwise each baseline row names the run whose split it was measured on.
    """
    final = metrics.drop(columns=["name"]).rename(index=labels)
    keep = [c for c in final.columns if c == "status" or c.startswith("test_") or c == "best_epoch"]
    final = final[keep]
    measured = {run_id: stored.run_baselines(run_id) for run_id in selected}
    distinct = {json.dumps(b, sort_keys=True): run_id for run_id, b in measured.items() if b}
    rows = {}
    for encoded, run_id in distinct.items():
        for name, scores in json.loads(encoded).items():
            label = method_label(name) if len(distinct) == 1 else f"{method_label(name)} · {labels[run_id]}"
            rows[label] = {"status": t("runs.final.baseline"), **{k: v for k, v in scores.items() if k in final.columns}}
    if rows:
        final = pd.concat([final, pd.DataFrame.from_dict(rows, orient="index")])
    return final


def shots_section(runs, selected: list[str], labels: dict[str, str]) -> None:
    """Shots curve per method (the run, its no-adaptation start, baselines) and per-user gains, for one run."""
    finished = [r for r in runs if r.id in selected and r.status == "completed"]
    if not finished:
        st.caption(t("runs.shots.no_completed"))
        return
    by_id = {r.id: r for r in finished}
    ids = list(by_id)
    current = st.session_state.get(state.RUN)  # the run picked in the sidebar comes first
    run_id = st.selectbox(
        t("runs.shots.run"), ids, index=ids.index(current) if current in ids else 0, format_func=labels.__getitem__, key="shots_run"
    )
    status = stored.evaluation_state(run_id)

    @st.fragment(run_every=1.0 if status.status == "running" else None)
    def view() -> None:
        with guard():
            body()

    def body() -> None:
        current = stored.evaluation_state(run_id)
        if current.status == "running":
            st.info(t("runs.shots.running"), icon=":material/hourglass_top:")
            return
        if status.status == "running":  # it just finished: redraw the page once
            st.rerun()
        if current.status == "failed":
            st.error(t("runs.shots.failed", error=plain(current.error)), icon=":material/error:")
        result = stored.load_evaluation(run_id) if current.status == "done" else None
        if result is None:
            st.caption(t("runs.shots.explain"))
            if st.button(t("runs.shots.start"), icon=":material/query_stats:", key=f"shots_start_{run_id}"):
                stored.start_evaluation(by_id[run_id])
                st.rerun()
            return
        metrics = [m for m in result.metrics if m in ("mae", "rmse", "ndcg@3", "ndcg@10", "catalogue_ndcg@10", "recall@10", "hit_rate@10", "auc")]
        metric = st.segmented_control(t("runs.shots.metric"), metrics, default=metrics[0], required=True, key="shots_metric", format_func=metric_label)
        curve = result.shots_curve(metric or metrics[0])
        left, right = st.columns([3, 2])
        with left:
            st.plotly_chart(
                charts.shots_figure(curve, highlight=result.methods[0], x_title=t("runs.shots.k"), y_title=metric_label(metric or metrics[0]),
                                    labels={m: method_label(str(m)) for m in result.methods}),
                config={"displayModeBar": False},
            )
            st.caption(t("runs.shots.caption"))
        with right:
            k = st.select_slider(t("runs.shots.gain_k"), sorted(int(x) for x in curve["shots"].dropna().unique()), value=10 if 10 in set(curve["shots"]) else None, key="shots_gain_k")
            gains = result.per_user(result.methods[0], k)
            st.plotly_chart(
                charts.gain_histogram(gains["gain"].to_numpy(), x_title=t("runs.shots.gain.auc" if "auc_after" in gains else "runs.shots.gain"), y_title=t("data.count")),
                config={"displayModeBar": False},
            )
            st.caption(t("runs.shots.gain_caption", better=int((gains["gain"] > 0).sum()), n=len(gains)))
        for warning in result.warnings:
            st.caption(plain(warning))

    view()


def default_section(run) -> None:
    """Whether the run is the one new sessions open on, and a button to make it so."""
    from metarec_core.default_runs import default_run, pin_default_run

    store = cache.store()
    if default_run(store, run.dataset_ref) == run.id:
        st.caption(t("runs.default.is"), help=t("runs.default.help"))
    elif run.status == "completed" and stored.has_weights(run.id):
        if st.button(t("runs.default.make"), icon=":material/push_pin:", key=f"default_{run.id}", help=t("runs.default.help")):
            with guard():
                pin_default_run(store, run.id)
                st.toast(t("runs.default.done", name=plain(run.name)), icon=":material/push_pin:")


def manage_section(runs) -> None:
    """Rename, export as zip, delete one run."""
    ids = [r.id for r in runs]
    labels = {r.id: f"{r.name} ({r.id})" for r in runs}
    current = st.session_state.get(state.RUN)
    run_id = st.selectbox(
        t("runs.manage.pick"), ids, index=ids.index(current) if current in ids else 0, format_func=labels.__getitem__, key="manage_pick"
    )
    run = next(r for r in runs if r.id == run_id)
    default_section(run)
    cols = st.columns(3, vertical_alignment="bottom")
    with cols[0]:
        new_name = st.text_input(t("runs.rename"), value=run.name, max_chars=120, key=f"rename_{run_id}")
        if st.button(t("runs.rename.button"), icon=":material/edit:", key="rename_button"):
            with guard():
                cache.store().rename(run_id, new_name)
                st.rerun()
    with cols[1]:
        if not run.is_active and st.button(t("runs.export.prepare"), icon=":material/archive:", key="export_prepare"):
            with guard(), tempfile.TemporaryDirectory() as tmp:
                path = cache.store().export_run(run_id, Path(tmp) / "run.zip")
                st.session_state["export_zip"] = (run_id, path.read_bytes())
        export = st.session_state.get("export_zip")
        if export and export[0] == run_id:
            st.download_button(
                t("runs.export.zip"), export[1], file_name=f"metarec-run-{run_id}.zip", mime="application/zip",
                icon=":material/download:", key="dl_zip",
            )
    with cols[2]:
        confirm = st.checkbox(t("runs.delete.confirm"), key=f"delete_confirm_{run_id}")
        if st.button(t("runs.delete"), icon=":material/delete:", disabled=not confirm, key="delete_button"):
            with guard():
                stored.delete_run(run_id)
                if st.session_state.get(state.RUN) == run_id:
                    st.session_state[state.RUN] = None
                st.rerun()


navigation.enter_page(__file__)
st.title(t("runs.title"))
st.caption(t("runs.intro"))
runs: list = []
selected: list[str] = []
with guard():
    all_runs = stored.runs_for(None)
    if not all_runs:
        st.info(t("runs.none"))
        onboarding.offer_default_training()
        st.stop()
    ref = st.session_state.get(state.DATASET)
    scope_all = st.toggle(t("runs.all_datasets"), key="runs_all", value=False)
    own = [r for r in all_runs if r.dataset_ref == ref]
    if not scope_all and not own:
        st.info(t("runs.none_here"), icon=":material/info:")
    runs = all_runs if scope_all or not own else own
    runs = sweeps.filter_runs(runs)  # all runs, runs of no sweep, or one sweep's trials
    with st.expander(t("runs.queue", n=len(stored.active_runs())), expanded=bool(stored.active_runs())):
        queue_section()
    runs = table_section(runs) or runs
    labels = {r.id: r.name if sum(x.name == r.name for x in runs) == 1 else f"{r.name} ({r.id[:4]})" for r in runs}
    current = st.session_state.get(state.RUN)
    completed = [r.id for r in runs if r.status == "completed"]
    default = ([current] if current in labels else []) + [r for r in completed if r != current]
    default = default[:2]  # the current run and the newest other completed one
    selected = st.multiselect(t("runs.select"), list(labels), default=default, format_func=labels.__getitem__, key="runs_selected")
if selected:
    st.header(t("runs.curves"))
    with guard():
        curves_section(selected, labels)
    st.header(t("runs.compare"))
    with guard():
        compare_section(selected, labels)
    st.header(t("runs.shots"))
    with guard():
        shots_section(runs, selected, labels)
if runs:
    st.header(t("runs.manage"))
    with guard():
        manage_section(runs)
