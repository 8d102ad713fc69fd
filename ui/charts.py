"""Figure builders for the pages: pure functions from data to Plotly figures, Vega-Lite specs or Graphviz DOT text."""
from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from metarec_core.schedule import plan

if TYPE_CHECKING:
    from metarec_core.train_config import TrainConfig

#: Colours shared by all figures (phase and cohort colours stay the same everywhere).
PHASE_COLOURS = {"meta": "#7b2cbf", "transfer": "#2a9d8f", "joint": "#e76f51", "validation": "#264653"}
COHORT_COLOURS = {"warm": "#8d99ae", "new": "#e63946", "meta-test": "#f4a261", "you": "#111111"}
METHOD_COLOURS = ["#7b2cbf", "#2a9d8f", "#e76f51", "#264653", "#e9c46a", "#8d99ae", "#f4a261", "#457b9d"]

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
def schedule_segments(config: "TrainConfig") -> pd.DataFrame:
    """The passes a run's schedule makes, in the order training makes them, as bars for a timeline.

    Drawn from :func:`metarec_core.schedule.plan` (the plan ``fit`` follows)
    with one step per pass; consecutive passes of one phase in one epoch make
    one bar.

    Parameters
    ----------
    config
        The run's settings (schedule, epoch split, ``lambda_meta`` / ``lambda_trans``:
        a phase whose weight is 0 is left out).

    Returns
    -------
    pandas.DataFrame
        Columns ``phase`` (meta / transfer / joint), ``epoch`` (1-based, as
        training reports it), ``start`` and ``end`` (pass counts from 0).
    """
    rows: list[list] = []
    for epoch, phase, _ in plan(config, n_meta_steps=1, n_trans_steps=1):
        if rows and rows[-1][0] == phase and rows[-1][1] == epoch + 1:
            rows[-1][2] += 1
        else:
            rows.append([phase, epoch + 1, 1])
    frame = pd.DataFrame(rows, columns=["phase", "epoch", "length"])
    frame["end"] = frame["length"].cumsum()
    frame["start"] = frame["end"] - frame["length"]
    return frame[["phase", "epoch", "start", "end"]].astype({"epoch": int, "start": int, "end": int})


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


def run_colours(run_ids: Sequence[str]) -> dict[str, str]:
    """A colour per run that depends on its ID, not on its place in a list, so a run looks the same on every page and in every session.

    Each ID hashes to a colour of :data:`METHOD_COLOURS`; when two of the runs
    shown hash to the same one, the later ID (in sorted order, so again not by
    position) takes the next free colour.
    """
    import hashlib

    out: dict[str, str] = {}
    taken: set[str] = set()
    for run_id in sorted(set(run_ids)):
        start = int(hashlib.sha256(str(run_id).encode()).hexdigest(), 16) % len(METHOD_COLOURS)
        for step in range(len(METHOD_COLOURS)):
            colour = METHOD_COLOURS[(start + step) % len(METHOD_COLOURS)]
            if colour not in taken or len(taken) >= len(METHOD_COLOURS):
                break
        out[run_id] = colour
        taken.add(colour)
    return out


def phase_spans(points: pd.DataFrame, x: str = "step") -> list[tuple[str, float, float]]:
    """Contiguous stretches of one training phase in a run's points: ``(phase, first x, last x)``, in order."""
    part = points[points["phase"].isin(TRAINING_PHASES)].sort_values(["step", "time"])
    if part.empty:
        return []
    xs = part["step"].to_numpy(dtype=float) if x == "step" else part["time"].to_numpy(dtype=float) - float(points["time"].min())
    phases = part["phase"].to_numpy()
    spans: list[tuple[str, float, float]] = []
    start = 0
    for i in range(1, len(phases) + 1):
        if i == len(phases) or phases[i] != phases[start]:
            spans.append((str(phases[start]), float(xs[start]), float(xs[i - 1])))
            start = i
    return spans
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
    colours: Mapping[str, str] | None = None,
    phase_names: Mapping[str, str] | None = None,
) -> go.Figure:
    """Training-loss curves, one line per (run, loss term), overlaid; the first run's phases shaded and labelled.

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
    colours
        A colour per run (:func:`run_colours`); default by position.
    phase_names
        Labels of the phases (``meta``, ``transfer``, ``joint``); when given, the
        phases of the first run are shaded in their colours and labelled at the top.
    """
    if x not in ("step", "time"):
        raise ValueError(f"x must be 'step' or 'time', got '{x}'")
    if "run" not in metrics.columns:
        metrics = metrics.assign(run="")
    starts = metrics.groupby("run", sort=False)["time"].min()
    frame = metrics[metrics["phase"].isin(TRAINING_PHASES) & metrics["key"].isin(keys)]
    runs = list(dict.fromkeys(frame["run"]))
    fig = go.Figure()
    for r, run in enumerate(runs):
        part = frame[frame["run"] == run]
        start = float(starts[run])
        for key in keys:
            series = part[part["key"] == key].sort_values(["step", "time"])
            if series.empty:
                continue
            xs = series["step"].to_numpy(dtype=float) if x == "step" else series["time"].to_numpy(dtype=float) - start
            ys = smooth(series["value"].to_numpy(), smoothing)
            breaks = np.flatnonzero(np.diff(series["step"].to_numpy(dtype=float)) > 1) + 1  # a phase of the other kind ran between
            xs, ys = np.insert(xs, breaks, np.nan), np.insert(ys, breaks, np.nan)
            name = (key_labels or {}).get(key, key)
            if len(runs) > 1:
                name = f"{esc((run_labels or {}).get(run, run))} · {name}"
                line = dict(color=(colours or {}).get(run, METHOD_COLOURS[r % len(METHOD_COLOURS)]), dash=_DASH.get(key, "solid"))
            else:
                line = dict(color=_KEY_COLOURS.get(key, "#999999"))
            fig.add_trace(go.Scatter(x=xs, y=ys, mode="lines", name=name, line=line, connectgaps=False))
    if phase_names and runs:
        first = metrics[metrics["run"] == runs[0]]
        line_of: dict[str, int] = {}  # each phase is named once, on its first span, on a line of its own (bands can be narrow)
        for phase, x0, x1 in phase_spans(first, x):
            named = {}
            if phase not in line_of:
                line_of[phase] = len(line_of)
                named = dict(annotation_text=esc(phase_names.get(phase, phase)), annotation_position="top left",
                             annotation_yshift=-14 * line_of[phase], annotation_font=dict(size=10, color=PHASE_COLOURS.get(phase, "#666666")))
            fig.add_vrect(
                x0=x0, x1=max(x1, x0 + 0.5), fillcolor=PHASE_COLOURS.get(phase, "#999999"), opacity=0.08, line_width=0, layer="below",
                **named,
            )
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
    colours: Mapping[str, str] | None = None,
    best_epochs: Mapping[str, int] | None = None,
    best_label: str = "best",
) -> go.Figure:
    """A validation metric per epoch (``validate`` points), one line per run; each run's best epoch ringed (``best_epochs``)."""
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
                name=esc((run_labels or {}).get(run, run) or y_title),
                line=dict(color=(colours or {}).get(run, METHOD_COLOURS[r % len(METHOD_COLOURS)])),
            )
        )
        best = (best_epochs or {}).get(run)
        at_best = part[part["epoch"] == best] if best is not None else part.iloc[0:0]
        if len(at_best):
            fig.add_trace(
                go.Scatter(
                    x=at_best["epoch"].to_numpy(dtype=float)[:1], y=at_best["value"].to_numpy(dtype=float)[:1], mode="markers+text",
                    marker=dict(size=16, color="rgba(0,0,0,0)", line=dict(color=(colours or {}).get(run, "#111111"), width=2)),
                    text=[esc(best_label)], textposition="top center", showlegend=False, hoverinfo="skip", name=esc(best_label),
                )
            )
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=30, b=40), xaxis_title=x_title, yaxis_title=y_title,
                      showlegend=frame["run"].nunique() > 1)
    fig.update_xaxes(tickformat="d", dtick=1 if len(frame) and frame["epoch"].max() <= 20 else None)  # whole epochs only
    return fig


# ---------------------------------------------------------------- dataset summary
def rating_histogram(histogram: Mapping[float, int], *, x_title: str = "", y_title: str = "") -> go.Figure:
    """Bar chart of how often each rating value occurs."""
    values = sorted(histogram)
    fig = go.Figure(go.Bar(x=[float(v) for v in values], y=[int(histogram[v]) for v in values], marker_color=PHASE_COLOURS["transfer"]))
    fig.update_layout(height=300, margin=dict(l=10, r=10, t=30, b=40), xaxis_title=x_title, yaxis_title=y_title, bargap=0.15)
    return fig


def long_tail_figure(
    per_item: np.ndarray,
    per_user: np.ndarray,
    *,
    labels: Mapping[str, str],
    x_title: str = "",
    y_title: str = "",
) -> go.Figure:
    """Interactions per item and per user, sorted from most to least, on a log scale: the long tail.

    Parameters
    ----------
    per_item, per_user
        Interaction counts per item / user index.
    labels
        Trace names for ``items`` and ``users``.
    """
    fig = go.Figure()
    for key, counts, colour in (("items", per_item, PHASE_COLOURS["meta"]), ("users", per_user, PHASE_COLOURS["joint"])):
        ordered = np.sort(np.asarray(counts))[::-1]
        fig.add_trace(
            go.Scatter(x=np.arange(1, len(ordered) + 1), y=np.maximum(ordered, 0.5), mode="lines", name=labels.get(key, key), line=dict(color=colour))
        )
    fig.update_layout(
        height=300, margin=dict(l=10, r=10, t=30, b=40), xaxis_title=x_title, yaxis_title=y_title, yaxis=dict(type="log", dtick=1),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    )
    return fig


def cold_share_figure(
    scenarios: pd.DataFrame,
    n_users: int,
    n_items: int,
    *,
    scenario_labels: Mapping[str, str],
    labels: Mapping[str, str],
    y_title: str = "",
) -> go.Figure:
    """Grouped bars: the share of users and of items each cold-start scenario makes cold.

    Parameters
    ----------
    scenarios
        One row per scenario with ``scenario``, ``cold_users`` and ``cold_items``
        (``DatasetSummary.scenarios_frame()``).
    n_users, n_items
        Totals the shares are taken of.
    """
    x = [scenario_labels.get(s, s) for s in scenarios["scenario"]]
    fig = go.Figure()
    for key, total, colour in (("users", n_users, PHASE_COLOURS["joint"]), ("items", n_items, PHASE_COLOURS["meta"])):
        share = scenarios[f"cold_{key}"].to_numpy(dtype=float) / max(total, 1)
        # Zero bars get no label (two "0%" side by side ran together); the rest in a small font.
        text = [f"{v:.0%}" if v > 0 else "" for v in share]
        fig.add_trace(go.Bar(x=x, y=share, name=labels.get(key, key), marker_color=colour, text=text, textposition="outside", textfont=dict(size=10)))
    fig.update_layout(
        barmode="group", height=300, margin=dict(l=10, r=10, t=30, b=40), yaxis_title=y_title, yaxis_tickformat=".0%",
        yaxis_range=[0, 1], legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    )
    return fig


# ---------------------------------------------------------------- embeddings
#: At most this many colour groups; rarer values are drawn together as "other".
MAX_GROUPS = 12
GROUP_COLOURS = ["#7b2cbf", "#2a9d8f", "#e76f51", "#264653", "#e9c46a", "#457b9d", "#f4a261", "#8d99ae",
                 "#d62828", "#6a994e", "#bc6c25", "#5e548e", "#adb5bd"]


def esc(text: object) -> str:
    """Escape data for Plotly labels (Plotly reads a few HTML-like tags; data must never be markup)."""
    return html.escape(str(text), quote=False)


def hover_text(frame: pd.DataFrame, title: str, fields: Sequence[str], labels: Mapping[str, str] | None = None) -> list[str]:
    """One escaped hover label per row: the title in bold, then ``field: value`` lines (fields named by ``labels``)."""
    titles = frame[title].map(esc).to_numpy()
    names = labels or {}
    parts = [frame[f].map(lambda v, f=f: f"{esc(names.get(f, f))}: {esc(v)}").to_numpy() for f in fields if f in frame.columns]
    return ["<br>".join([f"<b>{titles[i]}</b>", *(p[i] for p in parts)]) for i in range(len(frame))]


def embedding_base(
    points: pd.DataFrame,
    *,
    color: str | None = None,
    hover: Sequence[str] = (),
    title: str = "label",
    group_colours: Mapping[str, str] | None = None,
    other_label: str = "other",
    group_labels: Mapping[str, str] | None = None,
    field_labels: Mapping[str, str] | None = None,
) -> tuple[list, np.ndarray]:
    """The base layer of an embedding map: one WebGL trace per colour group, and the escaped hover labels.

    Built once per run and language by the lab (the costly part of a map of
    thousands of points); see :func:`embedding_figure` for the parameters.
    """
    traces: list = []
    text = np.asarray(hover_text(points, title, hover, field_labels), dtype=object)  # arrays validate much faster than lists
    color_name = esc((field_labels or {}).get(color, color)) if color is not None else ""
    base = dict(mode="markers", hoverinfo="text", hovertemplate="%{text}<extra></extra>")
    if color is None:
        traces.append(go.Scattergl(x=points["x"], y=points["y"], text=text, marker=dict(size=5, color="#7b2cbf", opacity=0.6), name="", **base))
    elif pd.api.types.is_numeric_dtype(points[color]) and not pd.api.types.is_bool_dtype(points[color]):
        traces.append(
            go.Scattergl(
                x=points["x"], y=points["y"], text=text, name=color_name,
                marker=dict(size=5, color=points[color], colorscale="Viridis", showscale=True, opacity=0.7,
                            colorbar=dict(title=color_name, thickness=12)),
                **base,
            )
        )
    else:
        values = points[color].astype(object).where(points[color].notna(), "—").astype(str)
        common = values.value_counts().index[: MAX_GROUPS - 1]
        values = values.where(values.isin(common), other_label) if values.nunique() > MAX_GROUPS - 1 else values
        order = list(values.value_counts().index)
        if other_label in order:
            order.remove(other_label)
            order.append(other_label)
        for g, group in enumerate(order):
            mask = (values == group).to_numpy()
            colour = (group_colours or {}).get(group, GROUP_COLOURS[g % len(GROUP_COLOURS)] if group != other_label else "#ced4da")
            traces.append(
                go.Scattergl(
                    x=points["x"].to_numpy()[mask], y=points["y"].to_numpy()[mask], text=text[mask],
                    name=esc((group_labels or {}).get(group, group)),
                    marker=dict(size=5, color=colour, opacity=0.65), **base,
                )
            )
    return traces, text


def embedding_figure(
    points: pd.DataFrame,
    *,
    color: str | None = None,
    hover: Sequence[str] = (),
    title: str = "label",
    highlight: Sequence[int] = (),
    trail: pd.DataFrame | None = None,
    group_colours: Mapping[str, str] | None = None,
    other_label: str = "other",
    trail_label: str = "",
    group_labels: Mapping[str, str] | None = None,
    focus: bool = False,
    height: int = 560,
    field_labels: Mapping[str, str] | None = None,
) -> go.Figure:
    """A 2-D map of embeddings drawn with WebGL (``Scattergl``), one figure per page.

    Parameters
    ----------
    points
        One row per entity with ``x``, ``y``, the ``title`` column and any
        ``color`` / ``hover`` columns.
    color
        Column to colour by: numbers get a colour scale, other values one
        colour per group (the ``MAX_GROUPS - 1`` most common, the rest as ``other_label``).
    hover
        Columns listed in the hover label.
    title
        Column shown in bold in the hover label.
    highlight
        Row positions drawn larger and outlined (search hits, neighbours).
    trail
        Optional path of a moving point (``x``, ``y``, ``label``), e.g. a user adapting in the lab.
    group_colours
        Fixed colours for some groups (e.g. cohorts).
    group_labels
        Legend names of some groups (e.g. translated cohort names); colours stay keyed by the raw value.
    focus
        Start zoomed in on the trail (the rest of the map stays there: zoom
        out, or use the autoscale button).
    field_labels
        Display names of columns (hover lines, the colour bar's title); default the column names.
    """
    traces, text = embedding_base(points, color=color, hover=hover, title=title, group_colours=group_colours,
                                  other_label=other_label, group_labels=group_labels, field_labels=field_labels)
    fig = go.Figure(data=traces)
    base = dict(mode="markers", hoverinfo="text", hovertemplate="%{text}<extra></extra>")
    if len(highlight):
        rows = points.iloc[list(highlight)]
        fig.add_trace(
            go.Scattergl(
                x=rows["x"], y=rows["y"], text=text[list(highlight)], name="★", showlegend=False,
                marker=dict(size=13, color="rgba(0,0,0,0)", line=dict(color="#111111", width=2)), **base,
            )
        )
    if trail is not None and len(trail):
        # SVG, not WebGL: a handful of points, and text labels render everywhere (also without a GPU).
        fig.add_trace(
            go.Scatter(
                x=trail["x"], y=trail["y"], mode="lines+markers+text", name=esc(trail_label),
                text=[esc(v) for v in trail["label"]], hoverinfo="skip",
                # Above and below in turn: steps that land close together keep readable labels.
                textposition=["top center" if k % 2 == 0 else "bottom center" for k in range(len(trail))],
                textfont=dict(size=13, color=COHORT_COLOURS["you"]),
                line=dict(color=COHORT_COLOURS["you"], width=2),
                marker=dict(size=[9] * (len(trail) - 1) + [18], color=COHORT_COLOURS["you"], symbol="diamond",
                            line=dict(color="#ffffff", width=1)),
            )
        )
    if focus and trail is not None and len(trail):
        xs, ys = trail["x"].to_numpy(float), trail["y"].to_numpy(float)
        full_x = float(np.ptp(points["x"].to_numpy(float))) or 1.0
        full_y = float(np.ptp(points["y"].to_numpy(float))) or 1.0
        # At least a fifth of the whole map on each axis, so the items around the path show too.
        half_x = max(float(np.ptp(xs)) * 0.75, full_x / 10)
        half_y = max(float(np.ptp(ys)) * 0.75, full_y / 10)
        cx, cy = (xs.min() + xs.max()) / 2, (ys.min() + ys.max()) / 2
        fig.update_xaxes(range=[cx - half_x, cx + half_x])
        fig.update_yaxes(range=[cy - half_y, cy + half_y])
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=10, b=10), legend=dict(itemsizing="constant"),
        xaxis=dict(showticklabels=False, zeroline=False, showgrid=False), yaxis=dict(showticklabels=False, zeroline=False, showgrid=False),
        dragmode="pan",
    )
    return fig


# ---------------------------------------------------------------- the lab
# Vega-Lite, not Plotly: the spec stays the same from one rating to the next and only its named datasets change, so
# the browser replaces the data in the chart it already has (a changed Plotly figure is a new chart, mounted afresh).
LAB_MAP_DATASETS = ("items", "outlined", "trail", "frame")


def _lab_xy() -> dict:
    # The view is the two corner points of the ``frame`` dataset: a new view is new data, not a new spec, and the
    # item layer (the same data on every rating, so never sent to the chart again) does not widen it.
    def axis(name: str) -> dict:
        scale = {"zero": False, "nice": False, "padding": 12,  # pixels: the outlines of items at the view's edge stay whole
                 "domainMin": {"expr": f"data('frame')[0].{name}"}, "domainMax": {"expr": f"data('frame')[1].{name}"}}
        return {"field": name, "type": "quantitative", "scale": scale, "axis": None}
    return {"x": axis("x"), "y": axis("y")}


def lab_map_spec(groups: Mapping[str, str], *, you: str, height: int = 300) -> dict:
    """The lab map's Vega-Lite spec (no data): items by group, the outlined top items, the new user's path.

    The data come from :func:`lab_map_datasets` under the names of
    ``LAB_MAP_DATASETS``. The spec depends only on the legend, so it is the same
    for every rating of a run in a language.

    Parameters
    ----------
    groups
        Legend name -> colour of each item group, in legend order.
    you
        Legend name of the path.
    height
        Height of the plot area in pixels.
    """
    names, colours = [*groups, you], [*groups.values(), COHORT_COLOURS["you"]]
    colour = {"scale": {"domain": names, "range": colours},
              "legend": {"orient": "top", "direction": "horizontal", "title": None, "symbolSize": 40, "labelLimit": 120,
                         "labelFontSize": 12, "columnPadding": 6, "offset": 4}}
    xy = _lab_xy()
    you_colour = {"datum": you, **colour}
    return {
        "height": height,
        # Canvas: on every rating the item layer is drawn again; as SVG that is one DOM node per item to restyle.
        "usermeta": {"embedOptions": {"renderer": "canvas"}},
        "config": {"view": {"stroke": "#e6e6e6"}, "aria": False},
        "layer": [
            {"data": {"name": "frame"}, "mark": {"type": "point", "opacity": 0}, "encoding": dict(xy)},
            {"data": {"name": "items"}, "mark": {"type": "circle", "size": 22, "opacity": 0.65, "clip": True},
             "params": [{"name": "lab_view", "select": "interval", "bind": "scales"}],
             "encoding": {**xy, "color": {"field": "group", "type": "nominal", **colour},
                          "tooltip": {"field": "title", "type": "nominal"}}},
            {"data": {"name": "outlined"}, "mark": {"type": "point", "shape": "circle", "size": 190, "filled": False, "clip": True,
                                                    "stroke": COHORT_COLOURS["you"], "strokeWidth": 2},
             "encoding": {**xy, "tooltip": {"field": "title", "type": "nominal"}}},
            {"data": {"name": "trail"}, "mark": {"type": "line", "strokeWidth": 2, "clip": True},
             "encoding": {**xy, "order": {"field": "step", "type": "quantitative"}, "color": you_colour}},
            {"data": {"name": "trail"}, "mark": {"type": "point", "shape": "diamond", "filled": True, "opacity": 1, "clip": True,
                                                 "stroke": "#ffffff", "strokeWidth": 1},
             "encoding": {**xy, "size": {"field": "size", "type": "quantitative", "scale": None, "legend": None},
                          "color": you_colour, "tooltip": {"field": "hover", "type": "nominal"}}},
            {"data": {"name": "trail"}, "transform": [{"filter": "datum.label != ''"}],
             "mark": {"type": "text", "clip": True, "dy": -15, "fontSize": 13, "fontWeight": "bold", "color": COHORT_COLOURS["you"]},
             "encoding": {**xy, "text": {"field": "label", "type": "nominal"}}},
        ],
    }


def lab_map_datasets(
    points: pd.DataFrame,
    trail: pd.DataFrame,
    *,
    outlined: Sequence[int] = (),
    window: tuple[tuple[float, float], tuple[float, float]] | None = None,
    step_hover: Sequence[str] = (),
    margin: float = 0.03,
) -> dict[str, pd.DataFrame]:
    """The lab map's data that change with a rating: the outlined items, the path and the view's corners.

    The ``items`` dataset of :func:`lab_map_spec` is ``points`` itself
    (``x``, ``y``, ``title``, ``group``), the same on every rating.

    Parameters
    ----------
    points
        One row per item: ``x``, ``y``, ``title`` (plain text: Vega draws and
        escapes it) and ``group`` (a legend name of :func:`lab_map_spec`).
    trail
        ``x``, ``y`` and ``label`` (number of ratings) of each step of the path.
    outlined
        Row positions in ``points`` of the items drawn with an outline (the current top items).
    window
        ``((x0, x1), (y0, y1))`` the view shows (see :func:`metarec_core.projection.view_window`);
        ``None``: the whole map and path, padded by ``margin`` of their extent.
    step_hover
        Hover text of each step; only the newest step carries a text label, so labels never overlap.

    Returns
    -------
    dict
        ``outlined`` (``x``, ``y``, ``title``), ``trail`` (``x``, ``y``, ``step``,
        ``label``, ``size``, ``hover``) and ``frame`` (the view's lower-left and
        upper-right corners: the scales' domains).
    """
    path = trail[["x", "y"]].to_numpy(float)
    if window is None:
        xy = points[["x", "y"]].to_numpy(float)
        held = np.concatenate([xy, path]) if len(path) else xy
        lo, hi = held.min(axis=0), held.max(axis=0)
        pad = np.where(hi > lo, hi - lo, 1.0) * margin
        (x0, y0), (x1, y1) = lo - pad, hi + pad
    else:
        (x0, x1), (y0, y1) = window
    n = len(trail)
    ring = points.iloc[list(outlined)][["x", "y", "title"]].reset_index(drop=True)
    steps = pd.DataFrame({
        "x": path[:, 0], "y": path[:, 1], "step": np.arange(n),
        "label": [""] * max(0, n - 1) + ([str(trail["label"].iloc[-1])] if n else []),
        "size": [60] * max(0, n - 1) + ([220] if n else []),
        "hover": [str(h) for h in step_hover] if len(step_hover) == n else [str(v) for v in trail["label"]],
    })
    frame = pd.DataFrame({"x": [float(x0), float(x1)], "y": [float(y0), float(y1)]})
    return {"outlined": ring, "trail": steps, "frame": frame}


def inner_loss_spec(labels: Mapping[str, str], *, x_title: str = "", y_title: str = "", height: int = 250) -> dict:
    """The Vega-Lite spec (no data) of the loss per inner step of adaptation: one line per set.

    The data, :func:`inner_loss_data`, come under the name ``losses``.

    Parameters
    ----------
    labels
        Display name of each set (``support``, ``query``), in legend order.
    """
    colours = {"support": PHASE_COLOURS["meta"], "query": PHASE_COLOURS["joint"]}
    return {
        "height": height,
        "usermeta": {"embedOptions": {"renderer": "canvas"}},
        "config": {"aria": False},
        "data": {"name": "losses"},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "step", "type": "quantitative", "title": x_title, "axis": {"tickMinStep": 1, "format": "d"}},
            "y": {"field": "loss", "type": "quantitative", "title": y_title, "scale": {"zero": False}},
            "color": {"field": "set", "type": "nominal", "title": None,
                      "scale": {"domain": list(labels.values()), "range": [colours.get(k, "#264653") for k in labels]},
                      "legend": {"orient": "top", "direction": "vertical", "labelLimit": 220, "labelFontSize": 12, "symbolSize": 40,
                                 "rowPadding": 2, "offset": 4}},
            "tooltip": [{"field": "set", "type": "nominal", "title": " "}, {"field": "loss", "type": "quantitative", "format": ".4f", "title": y_title}],
        },
    }


def inner_loss_data(losses: pd.DataFrame | None, labels: Mapping[str, str]) -> pd.DataFrame:
    """Rows of :func:`inner_loss_spec`: ``set`` (its display name), ``step``, ``loss``; none before the first rating."""
    if losses is None or not len(losses):
        return pd.DataFrame({"set": pd.Series([], dtype=str), "step": pd.Series([], dtype="int64"), "loss": pd.Series([], dtype=float)})
    part = losses.sort_values(["set", "step"], kind="stable")
    return pd.DataFrame({"set": [labels.get(s, s) for s in part["set"]], "step": part["step"].astype("int64").to_numpy(),
                         "loss": part["loss"].astype(float).to_numpy()})


# ---------------------------------------------------------------- evaluation
def shots_figure(
    curve: pd.DataFrame, *, highlight: str | None = None, x_title: str = "", y_title: str = "", height: int = 360,
    labels: Mapping[str, str] | None = None,
) -> go.Figure:
    """A metric against K support ratings, one line per method (error bars when there are several seeds).

    Parameters
    ----------
    curve
        Columns ``method``, ``shots``, ``mean`` and ``std`` (``EvaluationResult.shots_curve``).
    highlight
        A method drawn thicker (the run itself).
    labels
        Legend names of methods (e.g. translated baseline names); styles stay keyed by the raw name.
    """
    fig = go.Figure()
    for m, (method, part) in enumerate(curve.groupby("method", sort=False)):
        part = part.sort_values("shots")
        std = part["std"].to_numpy(dtype=float)
        fig.add_trace(
            go.Scatter(
                x=part["shots"].to_numpy(dtype=float), y=part["mean"].to_numpy(dtype=float), mode="lines+markers", name=esc((labels or {}).get(method, method)),
                error_y=dict(type="data", array=np.nan_to_num(std), visible=bool(np.isfinite(std).any())),
                line=dict(color=METHOD_COLOURS[m % len(METHOD_COLOURS)], width=4 if method == highlight else 2,
                          dash="solid" if method == highlight or "no adaptation" not in str(method) else "dot"),
            )
        )
    fig.update_layout(
        height=height, margin=dict(l=10, r=10, t=30, b=40), xaxis_title=x_title, yaxis_title=y_title,
        xaxis=dict(type="log" if (curve["shots"].dropna() > 0).all() else "linear", tickvals=sorted(curve["shots"].dropna().unique().tolist())),
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
    )
    return fig


def gain_histogram(gains: np.ndarray, *, x_title: str = "", y_title: str = "") -> go.Figure:
    """Histogram of per-user gains from adaptation (positive = adaptation helped)."""
    gains = np.asarray(gains, dtype=float)
    gains = gains[np.isfinite(gains)]
    fig = go.Figure(go.Histogram(x=gains, nbinsx=30, marker_color=PHASE_COLOURS["meta"]))
    fig.add_vline(x=0.0, line_dash="dash", line_color="#666666")
    fig.update_layout(height=280, margin=dict(l=10, r=10, t=30, b=40), xaxis_title=x_title, yaxis_title=y_title, bargap=0.05)
    return fig
