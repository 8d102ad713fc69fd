"""The dashboard's shared UI code (``app.py`` and the page scripts in ``pages/`` import from here)."""
