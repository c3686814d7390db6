"""The Qt front-end: a thin layer over explorer.core (start it with ``ckpt-explorer open``).

Modules: ``app`` (entry point), ``main_window`` (MainWindow with ``add_panel``), ``session`` (the only GUI
state), ``tree_model`` / ``table_model`` / ``filtering`` (item models over a core Report), ``details`` and
``histogram`` (statistics panel; ``HistogramWidget.set_overlay``), ``workers`` (thread pool jobs),
``palette`` (the only place with colours).
"""
