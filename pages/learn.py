"""Learn page: meta-learning vs transfer learning, the objective, tasks, metrics and a glossary."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from metarec_core import histories
from metarec_core.train_config import TrainConfig
from ui import cache, charts, datasets, navigation, runs, state
from ui.errors import guard
from ui.i18n import labeller, language, load_strings, phase_labels, t
from ui.markup import plain
from ui.metrics import method_label, metric_label

navigation.enter_page(__file__)
st.title(t("learn.title"))
st.markdown(t("learn.intro"))

# ---------------------------------------------------------------- the two ideas
st.header(t("learn.ideas.header"))
left, right = st.columns(2)
with left:
    st.subheader(t("learn.meta.title"))
    st.markdown(t("learn.meta.body"))
with right:
    st.subheader(t("learn.transfer.title"))
    st.markdown(t("learn.transfer.body"))
st.markdown(t("learn.compare"))

st.header(t("learn.map.header"))
st.graphviz_chart(charts.concept_map_dot(load_strings(), language()), width="stretch")
st.caption(t("learn.map.caption"))

# ---------------------------------------------------------------- the objective
st.header(t("learn.objective.header"))
st.latex(r"\mathcal{L}_{\mathrm{total}}(\theta)=\lambda_1\,\mathcal{L}_{\mathrm{meta}}(\theta)+\lambda_2\,\mathcal{L}_{\mathrm{trans}}(\theta)+\mathcal{L}_0(\theta)")
st.markdown(t("learn.objective.body"))

TERMS = (
    (
        "learn.term.meta.title",
        "learn.term.meta.body",
        r"\begin{aligned}\mathcal{L}_{\mathrm{meta}}(\theta)&=\frac{1}{T}\sum_{t=1}^{T}\ell\big(f_{\theta'_t};\,Q_t\big)\\"
        r"\theta'_t&=\mathrm{adapt}(\theta;\,S_t)\end{aligned}",
    ),
    ("learn.term.trans.title", "learn.term.trans.body", r"\mathcal{L}_{\mathrm{trans}}(\theta)=\frac{1}{N}\sum_{i=1}^{N}\ell\big(f_\theta(u_i,v_i),\,y_i\big)"),
    ("learn.term.l0.title", "learn.term.l0.body", r"\mathcal{L}_0(\theta)=\lambda_0\,\lVert\theta-\theta_{\mathrm{source}}\rVert_2^2"),
)
#: The settings that control each term (names of TrainConfig fields).
CONTROLS = (
    ("lambda_meta", "meta_epochs", "inner_solver", "inner_steps", "inner_lr", "adapt_scope", "first_order"),
    ("lambda_trans", "trans_epochs", "batch_size", "lr"),
    ("lambda_l0", "source_run"),
)
defaults = TrainConfig()
for column, (title_key, body_key, formula), controls in zip(st.columns(3), TERMS, CONTROLS):
    with column:
        st.subheader(t(title_key))
        st.latex(formula)
        st.markdown(t(body_key))
        shown = ", ".join(f"`{name}` = {getattr(defaults, name)!r}" if getattr(defaults, name) != "" else f"`{name}`" for name in controls)
        st.caption(t("learn.term.controls", settings=shown))

st.subheader(t("learn.settings.header"))
SETTINGS = (
    ("λ1", "lambda_meta"),
    ("λ2", "lambda_trans"),
    ("λ0", "lambda_l0"),
    ("", "schedule"),
    ("", "num_epochs"),
    ("", "meta_epochs"),
    ("", "trans_epochs"),
    ("", "inner_solver"),
    ("", "inner_steps"),
    ("α", "inner_lr"),
    ("", "adapt_scope"),
    ("", "first_order"),
)
settings = pd.DataFrame(
    {
        t("learn.col.symbol"): [symbol for symbol, _ in SETTINGS],
        t("learn.col.setting"): [name for _, name in SETTINGS],
        t("learn.col.controls"): [t(f"learn.set.{name}") for _, name in SETTINGS],
        t("learn.col.default"): [str(getattr(defaults, name)) for _, name in SETTINGS],
    }
)
st.table(settings, hide_index=True)
st.caption(t("learn.settings.caption"))
links = st.columns(3)
navigation.page_link(links[0], "train", "learn.goto.train", ":material/model_training:")
navigation.page_link(links[1], "runs", "learn.goto.runs", ":material/stacked_line_chart:")
navigation.page_link(links[2], "lab", "learn.goto.lab", ":material/science:")

# ---------------------------------------------------------------- schedules
st.header(t("learn.schedule.header"))
st.markdown(t("learn.schedule.body"))
segments = charts.schedule_segments(defaults)
st.plotly_chart(
    charts.schedule_figure(segments, phase_labels(), x_title=t("train.timeline.x")),
    config={"displayModeBar": False},
)
st.caption(t("learn.schedule.caption"))

# ---------------------------------------------------------------- tasks
st.header(t("learn.tasks.header"))
st.markdown(t("learn.tasks.body"))
st.markdown(t("learn.tasks.adapt"))
st.latex(
    r"\theta \leftarrow \theta+\big(J^\top J+A^{-1}\big)^{-1}\Big(J^\top\big(y-f_\theta(S)\big)-A^{-1}(\theta-\theta_0)\Big),"
    r"\quad J=\frac{\partial f_\theta(S)}{\partial\theta},\; A=\operatorname{diag}(\alpha)"
)
st.markdown(t("learn.tasks.adapt.gradient"))
st.latex(r"\theta \leftarrow \theta-\alpha\,\nabla_\theta\,\frac{1}{|S|}\sum_{(u,v,y)\in S}\ell\big(f_\theta(u,v),\,y\big)")
with guard():
    dataset = datasets.current_dataset()
    user = None if dataset is None else histories.example_user(dataset, support_size=5)
    if user is None:
        st.info(t("learn.tasks.no_data"))
    else:
        history = histories.user_history(dataset, user, support_size=5)
        role = history.pop("role")
        history.columns = [t("common.item_id"), t("common.title"), t("common.rating")]
        support = history[role == "support"].reset_index(drop=True)
        query = history[role == "query"].head(15).reset_index(drop=True)
        st.caption(t("learn.tasks.example", user=plain(user), k=len(support)))
        left, right = st.columns([2, 3])
        left.markdown(f"**{t('learn.tasks.support')}**")
        left.dataframe(support, hide_index=True)
        right.markdown(f"**{t('learn.tasks.query')}**")
        right.dataframe(query, hide_index=True, height=250)

# ---------------------------------------------------------------- metrics
st.header(t("learn.metrics.header"))
METRICS = (
    ("mae", r"\mathrm{MAE}=\frac{1}{|Q|}\sum_{(u,i)\in Q}\lvert \hat r_{ui}-r_{ui}\rvert"),
    ("rmse", r"\mathrm{RMSE}=\sqrt{\frac{1}{|Q|}\sum_{(u,i)\in Q}(\hat r_{ui}-r_{ui})^2}"),
    ("ndcg", r"\mathrm{nDCG@}k=\frac{\sum_{p=1}^{k}(2^{r_p}-1)/\log_2(p+1)}{\mathrm{IDCG@}k}"),
    ("recall", r"\mathrm{Recall@}k=\frac{\lvert \mathrm{top}_k(u)\cap R_u\rvert}{\lvert R_u\rvert}"),
    ("hit", r"\mathrm{HitRate@}k=\frac{1}{|U|}\sum_{u}\mathbf{1}\big[\mathrm{top}_k(u)\cap R_u\neq\varnothing\big]"),
    ("auc", r"\mathrm{AUC}=P\big(\hat s_{u,i^+}>\hat s_{u,i^-}\big)"),
)
for row in range(0, len(METRICS), 2):
    for column, (name, formula) in zip(st.columns(2), METRICS[row : row + 2]):
        with column:
            st.markdown(t(f"learn.metric.{name}"))
            st.latex(formula)

# ---------------------------------------------------------------- glossary
st.header(t("learn.glossary.header"))
strings = load_strings()
# In the order of the English terms (the keys are short names that sort differently).
terms = sorted({key.split(".")[1] for key in strings if key.startswith("term.")}, key=lambda n: strings[f"term.{n}"]["en"].lower())
st.table(
    pd.DataFrame(
        {
            t("learn.glossary.col.en"): [strings[f"term.{name}"]["en"] for name in terms],
            t("learn.glossary.col.zh"): [strings[f"term.{name}"]["zh"] for name in terms],
            t("learn.glossary.col.meaning"): [t(f"term.{name}.def") for name in terms],
        }
    ),
    hide_index=True,
)

# ---------------------------------------------------------------- honest claims
st.header(t("learn.claims.header"))
left, right = st.columns(2)
with left:
    st.subheader(t("learn.claims.strengths"))
    st.markdown(t("learn.claims.strengths.body"))
with right:
    st.subheader(t("learn.claims.weaknesses"))
    st.markdown(t("learn.claims.weaknesses.body"))
st.info(t("learn.claims.reality"), icon=":material/fact_check:")
st.caption(t("learn.claims.scenarios"))

# ---------------------------------------------------------------- live miniature
st.header(t("learn.live.header"))


def live_miniature() -> None:
    """The current run's settings, validation curve and final metrics, small."""
    run = state.current_run()
    if run is None:
        st.info(t("learn.live.none"))
        navigation.page_link(st, "train", "learn.goto.train", ":material/model_training:")
        return
    config = runs.run_config(run)
    if config is not None:  # None: settings of another version (an imported run)
        st.latex(rf"\lambda_1={config.lambda_meta:g},\;\lambda_2={config.lambda_trans:g},\;\lambda_0={config.lambda_l0:g}")
        st.caption(t("learn.live.caption", name=plain(run.name), schedule=labeller("train.schedule.")(config.schedule),
                     steps=config.inner_steps, scope=labeller("train.scope.")(config.adapt_scope)))
    metrics = cache.store().metrics_frame(run.id)
    evaluation = runs.load_evaluation(run.id)
    left, right = st.columns([3, 2])
    with left:
        if evaluation is not None:
            metric = "mae" if "mae" in evaluation.metrics else evaluation.metrics[0]
            st.plotly_chart(
                charts.shots_figure(evaluation.shots_curve(metric), highlight=evaluation.methods[0], x_title=t("runs.shots.k"), y_title=metric_label(metric),
                                    height=300, labels={m: method_label(str(m)) for m in evaluation.methods}),
                config={"displayModeBar": False},
            )
            st.caption(t("learn.live.shots"))
        elif (metrics["phase"] == "validate").any():
            st.plotly_chart(
                charts.validation_figure(metrics, key := runs.validation_key(metrics), x_title=t("common.epoch"), y_title=t(f"learn.live.{key}"), height=260),
                config={"displayModeBar": False},
            )
        else:
            st.info(t("learn.live.no_curve"))
    with right:
        final = cache.store().final_metrics(run.id)
        shown = {k: v for k, v in final.items() if k.startswith("test_")}
        if shown:
            st.dataframe(pd.DataFrame({t("learn.live.metric"): [metric_label(k) for k in shown], t("learn.live.value"): [round(v, 4) for v in shown.values()]}), hide_index=True)
        else:
            st.info(t("learn.live.no_final" if run.is_active else "learn.live.no_final.ended", status=t(f"status.{run.status}")))
        if evaluation is None and run.status == "completed":
            st.caption(t("learn.live.evaluate"))
            navigation.page_link(st, "runs", "learn.goto.runs", ":material/stacked_line_chart:")


with guard():
    live_miniature()
