"""Runs page: compare runs — overlaid loss curves, what differs, final metrics — and export, rename, delete."""
from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
import streamlit as st

from ui import cache, charts, datasets, navigation, onboarding, runs as stored, state, sweeps
from ui.errors import guard
from ui.i18n import labeller, t
from ui.markup import plain

LOSS_TERMS = ("meta", "trans", "l0", "total")


def runs_table(runs) -> pd.DataFrame:
    """One row per run: name, status, dataset, key settings and final test metrics."""
    store = cache.store()
    rows = []
    for run in runs:
        final = store.final_metrics(run.id) if run.status in ("completed", "cancelled") else {}
        duration = (run.finished - run.started) if run.finished and run.started else None
        config = stored.run_config(run)  # None: settings of another version (an imported run)
        rows.append(
            {
                t("runs.col.name"): run.name,
                t("runs.col.status"): t(f"status.{run.status}"),
                t("runs.col.dataset"): datasets.dataset_options().get(run.dataset_ref, run.dataset_ref),
                t("runs.col.created"): pd.Timestamp(run.created, unit="s").strftime("%Y-%m-%d %H:%M"),
                t("runs.col.seconds"): None if duration is None else round(duration, 1),
                "λ1": None if config is None else config.lambda_meta,
                "λ2": None if config is None else config.lambda_trans,
                t("runs.col.schedule"): "—" if config is None else labeller("train.schedule.")(config.schedule),
                "MAE": metric_text(final.get("test_mae")),
                "nDCG@3": metric_text(final.get("test_ndcg@3")),
                "AUC": metric_text(final.get("test_auc")),  # implicit data (dropped below when no run has one)
                "ID": run.id,
            }
        )
    frame = pd.DataFrame(rows)
    # Only the metric columns some listed run has (MAE and nDCG@3 on ratings, AUC on implicit data).
    empty = [c for c in ("MAE", "nDCG@3", "AUC") if c in frame and (frame[c] == "—").all()]
    return frame.drop(columns=empty) if len(empty) < 3 else frame.drop(columns=["AUC"])


def metric_text(value: object) -> str:
    """A test metric with four decimals; a dash when the run has none (cancelled before testing), not "None"."""
    return f"{value:.4f}" if isinstance(value, (int, float)) and value == value else "—"


def curves_section(selected: list[str], labels: dict[str, str]) -> None:
    """Overlaid loss curves with smoothing and x-axis controls, and validation curves."""
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
            key_labels={k: t(f"loss.{k}") for k in LOSS_TERMS},
            x_title=t("common.step") if x_axis != "time" else t("common.seconds"), y_title=t("common.loss"),
        ),
        config={"displayModeBar": False},
    )
    st.caption(t("runs.curves.caption"))
    if (metrics["phase"] == "validate").any():
        keys = sorted(k for k in metrics.loc[metrics["phase"] == "validate", "key"].unique() if k.startswith("valid_"))
        name = labeller("learn.live.")  # valid_mae / valid_auc have readable names; others stay as they are
        key = st.segmented_control(t("runs.valid_metric"), keys, default=keys[0], required=True, key="runs_valid_key", format_func=name)
        st.plotly_chart(
            charts.validation_figure(metrics, key or keys[0], run_labels=labels, x_title=t("common.epoch"), y_title=name(key or keys[0])),
            config={"displayModeBar": False},
        )


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
        params.index.name = t("runs.col.setting")
        st.dataframe(params)
    st.subheader(t("runs.final"))
    final = comparison.metrics.drop(columns=["name"]).rename(index=labels)
    final["status"] = [t(f"status.{v}") for v in final["status"]]
    final = final.rename(columns={"status": t("runs.col.status")})
    final.index.name = t("runs.col.run")
    # A metric a run has none of (cancelled before testing; AUC beside MAE) is a dash, not "None".
    st.dataframe(final.round(4).astype(object).where(final.notna(), "—"))
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
        metric = st.segmented_control(t("runs.shots.metric"), metrics, default=metrics[0], required=True, key="shots_metric")
        curve = result.shots_curve(metric or metrics[0])
        left, right = st.columns([3, 2])
        with left:
            st.plotly_chart(
                charts.shots_figure(curve, highlight=result.methods[0], x_title=t("runs.shots.k"), y_title=metric or metrics[0]),
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


def manage_section(runs) -> None:
    """Rename, export as zip, delete one run."""
    ids = [r.id for r in runs]
    labels = {r.id: f"{r.name} ({r.id})" for r in runs}
    current = st.session_state.get(state.RUN)
    run_id = st.selectbox(
        t("runs.manage.pick"), ids, index=ids.index(current) if current in ids else 0, format_func=labels.__getitem__, key="manage_pick"
    )
    run = next(r for r in runs if r.id == run_id)
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
    st.dataframe(runs_table(runs), hide_index=True)
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
