"""The first step offered on a dataset without runs: train the default model in one click."""
from __future__ import annotations

import streamlit as st

from ui import navigation, runs
from ui.errors import guard
from ui.i18n import t
from ui.state import dataset_ref


def offer_default_training() -> None:
    """When the session's dataset has no run yet, offer to train the default model in one click."""
    from metarec_core.train_config import TrainConfig

    ref = dataset_ref()
    if runs.runs_for(ref):
        return
    with st.container(border=True):
        st.markdown(t("onboard.text"))
        if st.button(t("onboard.button"), type="primary", icon=":material/play_arrow:", key="onboard_train"):
            with guard():
                runs.start_run(TrainConfig(), name=t("onboard.run_name"))
                navigation.switch_to("train")
