"""Figure builders for the pages: pure functions from data to plotly figures or DOT text."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

#: Colours shared by all figures (phase and cohort colours stay the same everywhere).
PHASE_COLOURS = {"meta": "#7b2cbf", "transfer": "#2a9d8f", "joint": "#e76f51", "validation": "#264653"}
COHORT_COLOURS = {"warm": "#8d99ae", "new": "#e63946", "meta-test": "#f4a261", "you": "#111111"}
METHOD_COLOURS = ["#7b2cbf", "#2a9d8f", "#e76f51", "#264653", "#e9c46a", "#8d99ae", "#f4a261", "#457b9d"]

Translate = Callable[[str], str]

# ---------------------------------------------------------------- concept map
#: Edges of the seed article's concept map, as term keys of ``assets/i18n.json``.
CONCEPT_EDGES: tuple[tuple[str, str], ...] = (
    ("recsys", "meta"),
    ("recsys", "transfer"),
    ("meta", "model_meta"),
    ("meta", "task_meta"),
    ("task_meta", "replay"),
    ("transfer", "domain_adapt"),
    ("transfer", "zero_shot"),
    ("domain_adapt", "feature_map"),
    ("domain_adapt", "adversarial"),
    ("zero_shot", "prototype"),
    ("zero_shot", "matching"),
    ("model_meta", "transferred_model"),
    ("replay", "transferred_model"),
    ("feature_map", "transferred_model"),
    ("adversarial", "transferred_model"),
    ("prototype", "transferred_model"),
    ("matching", "transferred_model"),
    ("transferred_model", "rec_model"),
)
#: Concepts metarec implements (drawn filled): MAML, cross-domain L2-SP transfer, zero-shot text items.
IMPLEMENTED_CONCEPTS = frozenset({"meta", "task_meta", "transfer", "domain_adapt", "feature_map", "zero_shot", "transferred_model", "rec_model"})


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def concept_map_dot(strings: Mapping[str, Mapping[str, str]], lang: str = "en") -> str:
    """The article's concept map as Graphviz DOT, every node labelled in both languages.

    Parameters
    ----------
    strings
        The UI strings (``{key: {"en": ..., "zh": ...}}``); node ``x`` is labelled
        from ``term.x``.
    lang
        The language shown first on each node.

    Returns
    -------
    str
        DOT source for ``st.graphviz_chart``; concepts metarec implements are filled.
    """
    other = "zh" if lang == "en" else "en"
    nodes = list(dict.fromkeys(n for edge in CONCEPT_EDGES for n in edge))
    lines = [
        "digraph concepts {",
        '  rankdir=LR; bgcolor="transparent";',
        '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=11, fillcolor="#ffffff", color="#8d99ae"];',
        '  edge [color="#8d99ae"];',
    ]
    for node in nodes:
        term = strings[f"term.{node}"]
        label = f"{term[lang]}\n{term[other]}"
        fill = ', fillcolor="#e9d8fd", color="#7b2cbf"' if node in IMPLEMENTED_CONCEPTS else ""
        lines.append(f"  {node} [label={_dot_quote(label)}{fill}];")
    for a, b in CONCEPT_EDGES:
        lines.append(f"  {a} -> {b};")
    lines.append("}")
    return "\n".join(lines)


# ---------------------------------------------------------------- schedule timeline
def schedule_segments(
    schedule: str,
    num_epochs: int,
    meta_epochs: int,
    trans_epochs: int,
    *,
    lambda_meta: float = 1.0,
    lambda_trans: float = 1.0,
) -> pd.DataFrame:
    """The passes a schedule runs, in order, as bars for a timeline.

    Parameters
    ----------
    schedule
        ``"alternating"`` (each epoch: meta passes, then transfer passes),
        ``"sequential"`` (all transfer passes, then all meta passes) or
        ``"joint"`` (each pass optimises both terms together; ``max(meta_epochs,
        trans_epochs)`` passes per epoch), as ``metarec_core.training`` runs them.
    num_epochs, meta_epochs, trans_epochs
        The epoch split.
    lambda_meta, lambda_trans
        A phase whose weight is 0 is switched off and left out.

    Returns
    -------
    pandas.DataFrame
        Columns ``phase`` (meta / transfer / joint), ``epoch`` (1-based outer
        epoch), ``start`` and ``end`` (pass counts from 0).
    """
    meta_on = lambda_meta > 0 and meta_epochs > 0
    trans_on = lambda_trans > 0 and trans_epochs > 0
    rows: list[tuple[str, int, int]] = []
    if schedule == "alternating":
        for epoch in range(1, num_epochs + 1):
            if meta_on:
                rows.append(("meta", epoch, meta_epochs))
            if trans_on:
                rows.append(("transfer", epoch, trans_epochs))
    elif schedule == "sequential":
        if trans_on:
            rows += [("transfer", epoch, trans_epochs) for epoch in range(1, num_epochs + 1)]
        if meta_on:
            rows += [("meta", epoch, meta_epochs) for epoch in range(1, num_epochs + 1)]
    elif schedule == "joint":
        phase = "joint" if meta_on and trans_on else ("meta" if meta_on else "transfer")
        if meta_on or trans_on:
            rows += [(phase, epoch, max(meta_epochs, trans_epochs)) for epoch in range(1, num_epochs + 1)]
    else:
        raise ValueError(f"unknown schedule '{schedule}'; use alternating, sequential or joint")
    frame = pd.DataFrame(rows, columns=["phase", "epoch", "length"])
    frame["end"] = frame["length"].cumsum()
    frame["start"] = frame["end"] - frame["length"]
    return frame[["phase", "epoch", "start", "end"]]


def schedule_figure(segments: pd.DataFrame, labels: Mapping[str, str], *, x_title: str) -> go.Figure:
    """A one-row-per-phase timeline of :func:`schedule_segments`.

    Parameters
    ----------
    segments
        Output of :func:`schedule_segments`.
    labels
        Display name of each phase (``meta``, ``transfer``, ``joint``).
    x_title
        Title of the pass axis.
    """
    fig = go.Figure()
    for phase, part in segments.groupby("phase", sort=False):
        fig.add_trace(
            go.Bar(
                y=[labels.get(phase, phase)] * len(part),
                x=(part["end"] - part["start"]).to_numpy(),
                base=part["start"].to_numpy(),
                orientation="h",
                name=labels.get(phase, phase),
                marker_color=PHASE_COLOURS.get(phase, "#999999"),
                marker_line_color="white",
                marker_line_width=1,
                customdata=part["epoch"].to_numpy(),
                hovertemplate="epoch %{customdata}<extra></extra>",
            )
        )
    fig.update_layout(
        barmode="overlay",
        height=150,
        margin=dict(l=10, r=10, t=10, b=30),
        showlegend=False,
        xaxis_title=x_title,
    )
    return fig


# ---------------------------------------------------------------- training curves
#: Loss terms drawn by default, and how each is dashed when several runs share a chart.
LOSS_KEYS = ("meta", "trans", "total")
_DASH = {"meta": "solid", "trans": "dash", "l0": "dot", "total": "dashdot"}
_KEY_COLOURS = {"meta": PHASE_COLOURS["meta"], "trans": PHASE_COLOURS["transfer"], "l0": "#e9c46a", "total": "#264653"}
TRAINING_PHASES = ("meta", "transfer", "joint")


def smooth(values: np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average (TensorBoard's smoothing); ``weight`` 0 returns the values.

    Parameters
    ----------
    values
        The series (NaNs are carried over without updating the average).
    weight
        Smoothing in ``[0, 1)``; larger is smoother.
    """
    values = np.asarray(values, dtype=np.float64)
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smoothing weight must be in [0, 1), got {weight}")
    if weight == 0.0 or len(values) == 0:
        return values.copy()
    out = np.empty_like(values)
    average, count = 0.0, 0
    for i, value in enumerate(values):
        if np.isfinite(value):
            count += 1
            average = weight * average + (1.0 - weight) * value
            out[i] = average / (1.0 - weight**count)
        else:
            out[i] = np.nan
    return out


def loss_figure(
    metrics: pd.DataFrame,
    *,
    keys: Sequence[str] = LOSS_KEYS,
    smoothing: float = 0.0,
    x: str = "step",
    run_labels: Mapping[str, str] | None = None,
    key_labels: Mapping[str, str] | None = None,
    x_title: str = "",
    y_title: str = "",
    height: int = 360,
) -> go.Figure:
    """Training-loss curves, one line per (run, loss term), overlaid.

    Parameters
    ----------
    metrics
        Long-format points with columns ``phase``, ``step``, ``key``, ``value``,
        ``time`` and optionally ``run`` (the run store's ``metrics_frame``).
        Only training phases (meta / transfer / joint) are drawn.
    keys
        Loss terms to draw (``meta``, ``trans``, ``l0``, ``total``).
    smoothing
        Weight of :func:`smooth`.
    x
        ``step`` or ``time`` (seconds since the run's first point).
    run_labels, key_labels
        Display names of runs and loss terms.
    x_title, y_title
        Axis titles.
    """
    if x not in ("step", "time"):
        raise ValueError(f"x must be 'step' or 'time', got '{x}'")
    frame = metrics[metrics["phase"].isin(TRAINING_PHASES) & metrics["key"].isin(keys)]
    if "run" not in frame.columns:
        frame = frame.assign(run="")
    runs = list(dict.fromkeys(frame["run"]))
    fig = go.Figure()
    for r, run in enumerate(runs):
        part = frame[frame["run"] == run]
        start = float(part["time"].min()) if len(part) else 0.0
        for key in keys:
            series = part[part["key"] == key].sort_values(["step", "time"])
            if series.empty:
                continue
            xs = series["step"].to_numpy(dtype=float) if x == "step" else series["time"].to_numpy(dtype=float) - start
            name = (key_labels or {}).get(key, key)
            if len(runs) > 1:
                name = f"{(run_labels or {}).get(run, run)} · {name}"
                line = dict(color=METHOD_COLOURS[r % len(METHOD_COLOURS)], dash=_DASH.get(key, "solid"))
            else:
                line = dict(color=_KEY_COLOURS.get(key, "#999999"))
            fig.add_trace(go.Scatter(x=xs, y=smooth(series["value"].to_numpy(), smoothing), mode="lines", name=name, line=line))
    fig.update_layout(
        height=height,
        margin=dict(l=10, r=10, t=30, b=40),
        xaxis_title=x_title,
        yaxis_title=y_title,
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    )
    return fig


def validation_figure(
    metrics: pd.DataFrame,
    key: str,
    *,
    run_labels: Mapping[str, str] | None = None,
    x_title: str = "",
    y_title: str = "",
    height: int = 300,
) -> go.Figure:
    """A validation metric per epoch (``validate`` points), one line per run."""
    frame = metrics[(metrics["phase"] == "validate") & (metrics["key"] == key)]
    if "run" not in frame.columns:
        frame = frame.assign(run="")
    fig = go.Figure()
    for r, (run, part) in enumerate(frame.groupby("run", sort=False)):
        part = part.sort_values("step")
        fig.add_trace(
            go.Scatter(
                x=part["epoch"].to_numpy(dtype=float),
                y=part["value"].to_numpy(dtype=float),
                mode="lines+markers",
                name=(run_labels or {}).get(run, run) or key,
                line=dict(color=METHOD_COLOURS[r % len(METHOD_COLOURS)]),
            )
        )
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=40), xaxis_title=x_title, yaxis_title=y_title, showlegend=len(fig.data) > 1)
    return fig
