"""``ckpt-explorer open``: create the QApplication, paint the window, then load in the background.

torch/transformers are imported by the first load job (a worker), after the window is on screen.
``main`` takes a typed ``OpenRequest`` (built by ``explorer.cli.open``; the GUI never imports the CLI). With a
``screenshot`` it waits until the report and the first histogram are shown, saves the window and exits; with
``compare`` it waits for the diff and shows the Compare tab with the most-changed tensor selected.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Any

from .request import OpenRequest

T0 = time.perf_counter()
SCREENSHOT_SIZE = (1440, 900)
SCREENSHOT_TIMEOUT_S = 300


_QUIET = ("This plugin does not support propagateSizeHints()",)  # offscreen/xvfb noise, nothing a user can act on
_previous_handler: Any = None


def _message_handler(mode: Any, context: Any, message: str) -> None:
    if any(q in message for q in _QUIET):
        return
    if _previous_handler is not None:
        _previous_handler(mode, context, message)
    else:
        print(message, file=sys.stderr)


def install_message_filter() -> None:
    """Drop Qt's known-harmless platform warnings; everything else goes where it went before."""
    global _previous_handler
    from PySide6.QtCore import qInstallMessageHandler

    if _previous_handler is None:
        prev = qInstallMessageHandler(_message_handler)
        _previous_handler = prev if prev is not None and prev is not _message_handler else None


def make_app() -> Any:
    from PySide6.QtGui import QFont
    from PySide6.QtWidgets import QApplication

    from .none_refcount import guard

    guard()  # PySide6 6.12 on CPython 3.11 loses a reference to None per void call: before any is made
    install_message_filter()
    app = QApplication.instance()
    if app is None:
        app = QApplication([sys.argv[0] if sys.argv else "ckpt-explorer"])
        app.setApplicationName("Checkpoint Explorer")
        app.setOrganizationName("ckpt-explorer")
        app.setStyle("Fusion")
        f = QFont(app.font())
        if f.pointSizeF() < 10:
            f.setPointSizeF(10)
        app.setFont(f)
    from . import palette

    app.setStyleSheet(palette.stylesheet())
    app.setWindowIcon(palette.app_icon())
    app.setDesktopFileName(palette.DESKTOP_FILE_NAME)  # ties the window to resources/<app id>.desktop
    return app


NO_DISPLAY = "no display found; run under a desktop session, xvfb-run, or set QT_QPA_PLATFORM=offscreen with --screenshot"


def ensure_display(*, screenshot: bool) -> bool:
    """False when Qt would abort for want of a display (Linux/BSD with neither X11 nor Wayland and no
    QT_QPA_PLATFORM). With ``--screenshot`` the offscreen platform is chosen instead."""
    env = os.environ
    if env.get("QT_QPA_PLATFORM") or env.get("DISPLAY") or env.get("WAYLAND_DISPLAY") or sys.platform in ("darwin", "win32"):
        return True
    if screenshot:
        env["QT_QPA_PLATFORM"] = "offscreen"
        return True
    return False


def main(request: OpenRequest) -> int:
    """Run the window until it is closed (or, with a screenshot, until the PNG is written)."""
    source, shot = request.source, request.screenshot
    if not ensure_display(screenshot=bool(shot)):
        print(f"ckpt-explorer: error: {NO_DISPLAY}", file=sys.stderr)
        return 2
    from .xcb_check import xcb_problem

    problem = xcb_problem()  # before Qt: its xcb plugin aborts the process when these libraries are missing
    if problem:
        print(f"ckpt-explorer: error: {problem}", file=sys.stderr)
        return 2
    app = make_app()
    from PySide6.QtCore import QTimer

    from .main_window import MainWindow
    from .panels import ComparePanel

    settings = None
    if shot:  # a screenshot shows the defaults (layout, log-y, bins), never this user's saved ones: reproducible
        import tempfile

        from PySide6.QtCore import QSettings

        tmp = tempfile.TemporaryDirectory(prefix="ckpt-explorer-shot-")
        app.aboutToQuit.connect(tmp.cleanup)
        settings = QSettings(os.path.join(tmp.name, "settings.ini"), QSettings.Format.IniFormat)
    win = MainWindow(settings=settings, interactive=not shot)
    if request.compare:
        win.session.compare_path = request.compare  # compared as soon as the report is loaded
    if shot:
        win.resize(*SCREENSHOT_SIZE)
    win.show()
    from . import timing

    timing.mark("shown", win)
    code = {"value": 0}
    if shot:
        state = {"done": False}

        def leave() -> None:
            # exit() only stops a running loop: asked before app.exec() started (a gate that was ready at once), it
            # would be lost and the process would idle for ever; so ask again from inside the loop as well
            app.exit(code["value"])
            QTimer.singleShot(0, lambda: app.exit(code["value"]))

        def done() -> None:
            if state["done"]:  # the timeout after a finished shot, or a second ready
                leave()
                return
            state["done"] = True
            from ..core.errors import ExplorerError
            from ..core.fmt import safe_text

            try:
                # the window shows its errors in the message bar; a script reading stderr/exit code needs them too
                failed = win.session.current is None or (request.compare and win.panel(ComparePanel).error)
                for msg in dict.fromkeys(win.errors):
                    print(f"ckpt-explorer: error: {msg}", file=sys.stderr)
                if failed:
                    code["value"] = 2
                app.processEvents()
                win.save_screenshot(shot, force=request.force)
                print(f"screenshot: {shot}", file=sys.stderr)
            except (OSError, ExplorerError) as e:
                print(f"ckpt-explorer: error: {safe_text(e)}", file=sys.stderr)
                code["value"] = 2
            except Exception as e:  # never left running with no window to close: one line, exit 2
                print(f"ckpt-explorer: error: the screenshot failed: {type(e).__name__}: {safe_text(e)}",
                      file=sys.stderr)
                code["value"] = 2
            finally:
                try:
                    win.close()
                finally:
                    leave()

        def timeout() -> None:
            if not state["done"]:
                print("ckpt-explorer: error: timed out waiting for the report", file=sys.stderr)
                code["value"] = 2
            done()

        win.ready.connect(done)
        QTimer.singleShot(SCREENSHOT_TIMEOUT_S * 1000, timeout)
        win.when_ready()  # the panels' parts too: the init check's badges, the Compare tab with --compare
        if source is None:
            QTimer.singleShot(0, win.ready.emit)
    if source is not None:
        QTimer.singleShot(0, lambda: win.open_source(source))  # after the first paint
    else:
        QTimer.singleShot(0, win.finish_startup)  # nothing to show first: the histogram's plot now
    rc = app.exec()
    # the window closed with every job cancelled: a worker in a long step (one tensor's init) stops at its next
    # check; let it, rather than tear the interpreter down under it
    win.session.jobs.pool.waitForDone(30_000)
    return code["value"] if shot else rc
