"""``app.py`` as the app's entry point from a folder without ``pages/``, for ``streamlit.testing``.

``AppTest`` decides before every run whether the entry point's folder holds a
``pages/`` directory and, when it does, runs a switched-to page file on its own
(Streamlit's legacy multipage mode, which a server leaves for good as soon as
``st.navigation`` has run). Started from here, every test run goes through
``app.py`` and ``st.navigation`` as the server's runs do.
"""
import runpy
from pathlib import Path

runpy.run_path(str(Path(__file__).resolve().parent.parent / "app.py"), run_name="__main__")
