"""Cold-start lab: a new user rates a few items; the model adapts on every rating, live."""
from __future__ import annotations

import streamlit as st

from ui import lab, navigation
from ui.i18n import t

navigation.enter_page(__file__)
lab.style()
st.title(t("lab.title"), help=t("lab.intro"))
# A rating reruns only the fragment: the rating area, the lists, the map and the losses.
st.fragment(lab.lab_view)()
if st.session_state.get(lab.WAITING):  # a run of the other kind is training: show its list as soon as it has finished
    st.fragment(lab.await_other_run, run_every=lab.WAIT_POLL_S)()
