"""A guard against a reference-count bug of PySide6 6.12 on CPython 3.11: every call of a Qt method returning void
(``label.setText``, ``painter.save``, ``widget.update``, ``QApplication.processEvents`` ...) gives back ``None``
without taking a reference to it, so ``None``'s count drops by one per call until CPython aborts the process
("Fatal Python error: none_dealloc: deallocating None"). On this machine the count is ~5,000 before numpy is
imported and ~160,000 once torch and transformers are; painting a view from our delegates makes ~70 such calls,
so a window aborted after a few thousand repaints (a few minutes of scrolling), and a script looping on
``processEvents`` within a second. CPython 3.12+ makes ``None`` immortal, which is why the bug went unseen upstream.

``guard()`` measures the leak with one void method and, when there is one (CPython < 3.12 only), gives ``None`` the
practically endless count 3.12 gives it (2**48 more references; ``None`` is a static object, never freed).
"""
from __future__ import annotations

import sys

_done = False
EXTRA = 1 << 48


def leaks_none(calls: int = 64) -> bool:
    """Whether calling a void Qt method loses references to ``None`` (measured, not assumed from versions)."""
    from PySide6.QtCore import QObject

    o = QObject()
    before = sys.getrefcount(None)
    for _ in range(calls):
        o.setObjectName("")  # void
    return before - sys.getrefcount(None) >= calls // 2


def guard() -> bool:
    """Make ``None`` immortal in practice when this PySide6 leaks it (once per process); True if it was needed."""
    global _done
    if _done or sys.version_info >= (3, 12) or sys.implementation.name != "cpython":
        return False
    _done = True
    if not leaks_none():
        return False
    import ctypes

    ctypes.c_ssize_t.from_address(id(None)).value += EXTRA  # ob_refcnt is the object's first field
    return True
