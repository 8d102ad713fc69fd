"""Train page: the objective's weights, the schedule, adaptation settings, background runs with live curves."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from metarec_core.configs import config_from_dict, config_to_dict, flatten_settings, unflatten_settings
from metarec_core.train_config import AUTO_NEW_ITEM_SHARE, TrainConfig, preset_config
from ui import cache, charts, datasets, navigation, runs, state, sweeps
from ui.errors import guard, show_error
from ui.i18n import labeller, phase_labels, t
from ui.markup import plain
from ui.metrics import metric_label

PREFIX = "cfg_"
BASE = "train_base"  # the preset's (or default) full config: settings the page does not show come from it
WATCHED = "train_watched"  # the run whose progress the page showed first while it trained (it keeps that place)
#: Every setting the page edits (TrainConfig fields; model.* are ModelConfig fields).
FIELDS = (
    "lambda_meta", "lambda_trans", "lambda_l0", "schedule", "num_epochs", "meta_epochs", "trans_epochs",
    "inner_solver", "inner_reduction", "inner_steps", "inner_lr", "learn_inner_lr", "adapt_scope", "first_order", "use_text", "text_encoder",
    "text_columns", "device", "scenario", "cold_fraction", "eval_support_size", "support_size", "query_size",
    "meta_batch_size", "batch_size", "lr", "seed", "model.factor_dim", "model.hidden",
)
PRESET_KEYS = {
    "new users (meta + transfer)": "train.preset.new_users",
    "transfer only": "train.preset.transfer_only",
    "meta only": "train.preset.meta_only",
    "gradient steps (classic MAML)": "train.preset.gradient_steps",
    "new items (text features)": "train.preset.new_items",
}
L0_CHOICES = (0.0, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)
SCENARIOS = ("auto", "user-cold", "item-cold", "both-cold", "warm")
ENCODERS = ("default", "hashing")


def flat_config(config: TrainConfig) -> dict:
    """A TrainConfig as the page's flat ``{field: value}`` (dotted ``model.x`` keys; hidden widths as text)."""
    values = flatten_settings(config_to_dict(config))
    values["model.hidden"] = ", ".join(str(h) for h in values["model.hidden"])
    return {k: values[k] for k in FIELDS}


def config_values(flat: dict, base: dict | None = None) -> dict:
    """The page's flat values over ``base`` (settings the page does not show) as nested settings for ``TrainConfig``."""
    from metarec_core.errors import ConfigError

    values = {**flatten_settings(base or {}), **flat}
    try:
        values["model.hidden"] = [int(h) for h in str(flat["model.hidden"]).replace(" ", "").split(",") if h]
    except ValueError as exc:
        raise ConfigError(f"hidden layer widths must be whole numbers separated by commas, got '{flat['model.hidden']}'") from exc
    return unflatten_settings(values)


def apply_preset() -> None:
    """Callback of the preset pills: load the preset's settings into the widgets."""
    name = st.session_state.get("train_preset")
    if name:
        config = preset_config(name)
        st.session_state[BASE] = config_to_dict(config)
        for key, value in flat_config(config).items():
            st.session_state[PREFIX + key] = value


def init_widgets() -> None:
    """First visit: every widget starts at the core's default."""
    st.session_state.setdefault(BASE, config_to_dict(TrainConfig()))
    for key, value in flat_config(TrainConfig()).items():
        st.session_state.setdefault(PREFIX + key, value)


def schedule_preview() -> TrainConfig | None:
    """The schedule the widgets describe, as a config for the timeline (``None`` while both weights are 0: nothing would train)."""
    k = PREFIX
    try:
        return TrainConfig(
            schedule=st.session_state[k + "schedule"] or "alternating",
            num_epochs=int(st.session_state[k + "num_epochs"]),
            meta_epochs=int(st.session_state[k + "meta_epochs"]),
            trans_epochs=int(st.session_state[k + "trans_epochs"]),
            lambda_meta=float(st.session_state[k + "lambda_meta"]),
            lambda_trans=float(st.session_state[k + "lambda_trans"]),
        )
    except ValueError:  # both weights 0 (warned next to the sliders)
        return None


def auto_note(dataset) -> None:
    """Say when scenario "auto" will train this dataset for new items (the rule is the core's ``resolve_scenario``)."""
    from metarec_core.train_config import resolve_scenario

    if dataset is None or st.session_state[PREFIX + "scenario"] != "auto":
        return
    choice = resolve_scenario(TrainConfig(), dataset)
    if choice.switched_on:
        fraction = f"{float(st.session_state[PREFIX + 'cold_fraction']):.0%}"
        st.info(t("train.auto_new_items", new=choice.new_items, total=choice.n_items, fraction=fraction), icon=":material/new_releases:")


def settings_form(dataset) -> None:
    """All the setting widgets; their values live in session state under ``cfg_*``."""
    from metarec_core.meta import REDUCTIONS, SOLVERS
    from metarec_core.models import ADAPT_SCOPES

    k = PREFIX
    st.pills(
        t("train.preset"),
        list(PRESET_KEYS),
        format_func={name: t(key) for name, key in PRESET_KEYS.items()}.__getitem__,
        key="train_preset",
        on_change=apply_preset,
        help=t("train.preset.help"),
    )
    auto_note(dataset)
    objective, schedule = st.columns(2, gap="large")
    with objective:
        st.subheader(t("train.objective"))
        st.latex(
            rf"\mathcal{{L}}_{{\mathrm{{total}}}}={st.session_state[k + 'lambda_meta']:g}\cdot\mathcal{{L}}_{{\mathrm{{meta}}}}"
            rf"+{st.session_state[k + 'lambda_trans']:g}\cdot\mathcal{{L}}_{{\mathrm{{trans}}}}"
            rf"+\underbrace{{{st.session_state[k + 'lambda_l0']:g}\,\lVert\theta-\theta_{{\mathrm{{src}}}}\rVert^2}}_{{\mathcal{{L}}_0}}"
        )
        st.slider(t("train.lambda_meta"), 0.0, 3.0, step=0.05, key=k + "lambda_meta", help=t("train.lambda_meta.help"), persist_state="session")
        st.slider(t("train.lambda_trans"), 0.0, 3.0, step=0.05, key=k + "lambda_trans", help=t("train.lambda_trans.help"), persist_state="session")
        l0_options = sorted(set(L0_CHOICES) | {float(st.session_state[k + "lambda_l0"])})
        st.select_slider(t("train.lambda_l0"), l0_options, format_func=lambda v: f"{v:g}", key=k + "lambda_l0", help=t("train.lambda_l0.help"), persist_state="session")
        if st.session_state[k + "lambda_meta"] == 0 and st.session_state[k + "lambda_trans"] == 0:
            st.warning(t("train.both_zero"), icon=":material/warning:")
    with schedule:
        st.subheader(t("train.schedule"))
        st.segmented_control(
            t("train.schedule.kind"), ["alternating", "sequential", "joint"], format_func=labeller("train.schedule."),
            key=k + "schedule", required=True, help=t("train.schedule.help"), persist_state="session",
        )
        cols = st.columns(3)
        cols[0].number_input(t("train.num_epochs"), 0, 200, step=1, key=k + "num_epochs", persist_state="session")
        cols[1].number_input(t("train.meta_epochs"), 0, 50, step=1, key=k + "meta_epochs", persist_state="session")
        cols[2].number_input(t("train.trans_epochs"), 0, 50, step=1, key=k + "trans_epochs", persist_state="session")
        preview = schedule_preview()
        if preview is not None:
            segments = charts.schedule_segments(preview)
            st.plotly_chart(charts.schedule_figure(segments, phase_labels(), x_title=t("train.timeline.x")), config={"displayModeBar": False})

    meta, transfer, device = st.columns(3, gap="large")
    with meta:
        st.subheader(t("train.meta"))
        st.selectbox(
            t("train.inner_solver"), SOLVERS, format_func=labeller("train.solver."), key=k + "inner_solver",
            help=t("train.inner_solver.help"), persist_state="session",
        )
        st.segmented_control(
            t("train.inner_reduction"), REDUCTIONS, format_func=labeller("train.reduction."), key=k + "inner_reduction",
            required=True, help=t("train.inner_reduction.help"), persist_state="session",
        )
        st.slider(t("train.inner_steps"), 0, 20, step=1, key=k + "inner_steps", help=t("train.inner_steps.help"), persist_state="session")
        st.number_input(t("train.inner_lr"), 0.0, 10.0, step=0.05, format="%.3f", key=k + "inner_lr", help=t("train.inner_lr.help"), persist_state="session")
        newton = st.session_state[k + "inner_solver"] == "newton"
        if newton:
            st.session_state[k + "adapt_scope"] = "user"  # the Newton step solves a system the size of the adapted parameters
        st.selectbox(
            t("train.adapt_scope"), ADAPT_SCOPES, format_func=labeller("train.scope."), key=k + "adapt_scope",
            disabled=newton, persist_state="session",
        )
        st.toggle(t("train.first_order"), key=k + "first_order", help=t("train.first_order.help"), persist_state="session")
        st.toggle(t("train.learn_inner_lr"), key=k + "learn_inner_lr", help=t("train.learn_inner_lr.help"), persist_state="session")
    with transfer:
        st.subheader(t("train.transfer"))
        st.toggle(t("train.use_text"), key=k + "use_text", help=t("train.use_text.help"), persist_state="session")
        text_features = [s.name for s in dataset.item_features if s.kind in ("text", "multilabel")] if dataset is not None else []
        st.session_state[k + "text_columns"] = [c for c in st.session_state.get(k + "text_columns", []) if c in text_features]
        st.multiselect(
            t("train.text_columns"), text_features, key=k + "text_columns", placeholder=t("train.text_columns.all"),
            disabled=not st.session_state[k + "use_text"], persist_state="session",
        )
        st.selectbox(
            t("train.text_encoder"), ENCODERS, format_func=labeller("train.encoder."), key=k + "text_encoder",
            disabled=not st.session_state[k + "use_text"], persist_state="session",
        )
        if st.session_state[k + "use_text"] and not text_features:
            st.warning(t("train.no_text"), icon=":material/warning:")
    with device:
        st.subheader(t("train.device"))
        st.segmented_control(
            t("train.device.kind"), ["auto", "cpu", "cuda"], format_func=labeller("train.device."),
            key=k + "device", required=True, persist_state="session",
        )
        gpu = cache.gpu_name()
        st.caption(t("train.gpu.yes", name=gpu) if gpu else t("train.gpu.no"))

    with st.expander(t("train.advanced")):
        cols = st.columns(4)
        cols[0].selectbox(
            t("train.scenario"), SCENARIOS, format_func=labeller("scenario."), key=k + "scenario", persist_state="session",
            help=t("train.scenario.help", share=f"{AUTO_NEW_ITEM_SHARE:.0%}"),
        )
        cols[1].number_input(t("train.cold_fraction"), 0.0, 0.9, step=0.05, key=k + "cold_fraction", persist_state="session")
        cols[2].number_input(t("train.eval_support_size"), 1, 100, step=1, key=k + "eval_support_size", persist_state="session")
        cols[3].number_input(t("train.seed"), 0, 2**31 - 1, step=1, key=k + "seed", persist_state="session")
        cols = st.columns(4)
        cols[0].number_input(t("train.support_size"), 1, 200, step=1, key=k + "support_size", persist_state="session")
        cols[1].number_input(t("train.query_size"), 1, 500, step=1, key=k + "query_size", persist_state="session")
        cols[2].number_input(t("train.meta_batch_size"), 1, 1024, step=1, key=k + "meta_batch_size", persist_state="session")
        cols[3].number_input(t("train.batch_size"), 1, 65536, step=64, key=k + "batch_size", persist_state="session")
        cols = st.columns(4)
        cols[0].number_input(t("train.lr"), 0.0, 1.0, step=0.001, format="%.4f", key=k + "lr", persist_state="session")
        cols[1].number_input(t("train.factor_dim"), 1, 256, step=1, key=k + "model.factor_dim", persist_state="session")
        cols[2].text_input(t("train.hidden"), key=k + "model.hidden", persist_state="session")


def start_section() -> None:
    """Run name and the start button: widgets -> TrainConfig -> a queued background run."""
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    name = left.text_input(t("train.run_name"), key="train_run_name", placeholder=t("train.run_name.placeholder"), max_chars=120)
    both_zero = st.session_state[PREFIX + "lambda_meta"] == 0 and st.session_state[PREFIX + "lambda_trans"] == 0  # warned above
    if right.button(t("train.start"), type="primary", icon=":material/play_arrow:", key="train_start", width="stretch", disabled=both_zero):
        flat = {key: st.session_state[PREFIX + key] for key in FIELDS}
        with guard():
            if flat["device"] == "cuda" and not cache.gpu_name():
                st.error(t("train.gpu.missing"))
                return
            config = config_from_dict(TrainConfig, config_values(flat, st.session_state.get(BASE)))
            runs.start_run(config, name=name.strip() or None)
            st.rerun()


def progress_view(run) -> None:
    """Status, progress bar, live loss and validation curves of one run, with a cancel button."""
    store = cache.store()
    progress = run.progress or {}
    step, total = int(progress.get("step", 0)), int(progress.get("total_steps", 0) or 0)
    fraction = min(1.0, step / total) if total else (1.0 if run.status == "completed" else 0.0)
    eta = progress.get("eta")
    if run.is_active and not total:
        text = t("train.progress.starting", status=t(f"status.{run.status}"))
    elif run.is_active:
        text = t("train.progress", status=t(f"status.{run.status}"), step=step, total=total,
                 phase=t(f"phase.{progress['phase']}") if progress.get("phase") in ("meta", "transfer", "joint", "validate") else "—",
                 eta=f"{eta:.0f}" if isinstance(eta, (int, float)) else "—")
    else:
        seconds = (run.finished - run.started) if run.finished and run.started else 0.0
        text = t("train.progress.done", status=t(f"status.{run.status}"), step=step, seconds=f"{seconds:.0f}", device=run.device or "—")
    st.progress(fraction, text=text)
    if run.status == "failed" and run.error:
        st.error(t("train.failed", error=plain(run.error)), icon=":material/error:")
    if run.is_active:
        if st.button(t("train.cancel"), icon=":material/stop:", key=f"cancel_{run.id}"):
            with guard():
                store.request_cancel(run.id)
    metrics = store.metrics_frame(run.id)
    if metrics.empty:
        st.caption(t("train.waiting"))
        return
    left, right = st.columns([3, 2])
    with left:
        key_labels = {key: t(f"loss.{key}") for key in ("meta", "trans", "l0", "total")}
        st.plotly_chart(
            charts.loss_figure(metrics, smoothing=0.9, key_labels=key_labels, x_title=t("common.step"), y_title=t("common.loss")),
            config={"displayModeBar": False}, key=f"loss_{run.id}",
        )
    with right:
        if (metrics["phase"] == "validate").any():
            st.plotly_chart(
                charts.validation_figure(metrics, key := runs.validation_key(metrics), x_title=t("common.epoch"), y_title=t(f"learn.live.{key}")),
                config={"displayModeBar": False}, key=f"valid_{run.id}",
            )
    final = store.final_metrics(run.id) if run.status in ("completed", "cancelled") else {}
    tests = {key: value for key, value in final.items() if key.startswith("test_")}
    if tests:
        st.subheader(t("train.final"))
        st.dataframe(pd.DataFrame([tests]).round(4).rename(columns=metric_label), hide_index=True)


def live_section() -> None:
    """The current run's live progress (polled once a second while it is queued or running)."""
    st.header(t("train.live"))
    current = state.current_run()
    if current is None:
        st.info(t("train.no_run"))
        return
    active = current.is_active

    @st.fragment(run_every=1.0 if active else None)
    def live() -> None:
        """Poll the run store once a second while the run is queued or running."""
        from metarec_core import jobs

        try:
            jobs.dispatch(cache.store())
            run = cache.store().get_run(current.id)
        except Exception as exc:  # noqa: BLE001 - a fragment rerun must not show a traceback either
            show_error(exc)
            return
        st.markdown(f"**{plain(run.name)}** · `{run.id}`")
        with guard():
            progress_view(run)
        if active and not run.is_active:
            st.rerun()  # finished: refresh the whole page once, and stop polling

    live()


navigation.enter_page(__file__)
st.title(t("train.title"))
st.caption(t("train.intro"))
init_widgets()
# While the current run trains, its progress comes first (a click on "Train the default model" lands here); it stays
# first once that run has finished, so the page does not jump when it does.
running = state.current_run()
if running is not None and running.is_active:
    st.session_state[WATCHED] = running.id
progress_first = running is not None and st.session_state.get(WATCHED) == running.id
if progress_first:
    live_section()
    st.divider()
with guard():
    settings_form(datasets.current_dataset())
    start_section()
if not progress_first:
    st.divider()
    live_section()
st.divider()
sweeps.sweep_section(  # trials start from the settings above
    lambda: config_from_dict(TrainConfig, config_values({k: st.session_state[PREFIX + k] for k in FIELDS}, st.session_state.get(BASE))),
    prefix=PREFIX, fields=FIELDS, base_key=BASE,
)
