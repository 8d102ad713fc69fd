"""How metrics, settings and methods are named on screen (in the current language), and how a change is shown."""
from __future__ import annotations

from ui.i18n import load_strings, t

#: Where a metric was measured, by the prefix of its key (``test_mae``, ``valid_ndcg@3``).
_WHERE = ("test", "valid")


def _known(key: str) -> bool:
    return key in load_strings()


def metric_label(key: str) -> str:
    """A metric key (``test_mae``, ``valid_ndcg@3``, ``catalogue_ndcg@10``, ``best_epoch``) in words; unknown keys as they are.

    Parameters
    ----------
    key
        The key as the core records it.

    Returns
    -------
    str
    """
    where, _, rest = key.partition("_")
    if where not in _WHERE:
        where, rest = "", key
    name, at, cut = rest.partition("@")
    if not _known(f"metric.{name}"):
        return key
    text = t(f"metric.{name}") + (f"@{cut}" if at else "")
    return t(f"metric.where.{where}", metric=text) if where else text


def lower_is_better(key: str) -> bool:
    """Whether a smaller value of this metric is better (errors: MAE, RMSE)."""
    return key.rsplit("_", 1)[-1] in ("mae", "rmse") or key.endswith(("_mae", "_rmse"))


def method_label(name: str) -> str:
    """A baseline's or method's short name (``mf``, ``global-mean``) in words; a run's own name stays as it is.

    ``"<run>, no adaptation"`` (the evaluation's name for a run's meta-learned start) keeps the run's name.
    """
    run, sep, rest = name.rpartition(", ")
    if sep and rest == "no adaptation":
        return f"{run}, {t('method.no_adaptation')}"
    return t(f"method.{name}") if _known(f"method.{name}") else name


def setting_label(key: str) -> str:
    """A setting's dotted key (``lambda_meta``, ``model.hidden``) as the Train page names it; unknown keys as they are."""
    for candidate in (f"train.{key}", f"train.{key.rsplit('.', 1)[-1]}"):
        if _known(candidate):
            return t(candidate)
    return key


def kind_label(kind: str | None) -> str:
    """A run's kind (``both``, ``transfer``, ``meta``) in words; a dash when unknown."""
    return t(f"lab.kind.{kind}") if kind and _known(f"lab.kind.{kind}") else "—"


def change(delta: float, *, lower_is_better: bool = False, digits: int = 3) -> dict:
    """``st.metric`` arguments for a change, rounded as shown: neutral (grey, no arrow) when it rounds to zero.

    Parameters
    ----------
    delta
        New value minus old.
    lower_is_better
        An error metric: a fall is shown green.
    digits
        Decimals shown.

    Returns
    -------
    dict
        ``delta``, ``delta_color`` (and ``delta_arrow`` when neutral) for ``st.metric``.
    """
    rounded = round(float(delta), digits)
    if rounded == 0:
        return {"delta": f"±{0:.{digits}f}", "delta_color": "off", "delta_arrow": "off"}
    return {"delta": f"{rounded:+.{digits}f}", "delta_color": "inverse" if lower_is_better else "normal"}
