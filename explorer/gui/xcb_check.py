"""Before Qt starts on X11: are the system libraries its xcb platform plugin links against there? (Qt-free)

PySide6's wheel ships Qt but not the X11 helper libraries; on a fresh Debian/Ubuntu without them Qt cannot load
its ``xcb`` plugin and aborts the process (a core dump) before any Python code could say why. Each library is
looked up the way the plugin's own loader would find it (``dlopen`` by soname, i.e. LD_LIBRARY_PATH and the ld.so
cache); what is missing is named with the Debian/Ubuntu packages that provide it, in one line.
"""
from __future__ import annotations

import ctypes
import os
import sys
from typing import Callable, Mapping

# soname -> Debian/Ubuntu package, for the libraries Qt 6's libqxcb.so links (ldd .../plugins/platforms/libqxcb.so)
XCB_LIBRARIES: dict[str, str] = {
    "libxcb.so.1": "libxcb1",
    "libX11-xcb.so.1": "libx11-xcb1",
    "libxcb-cursor.so.0": "libxcb-cursor0",
    "libxcb-icccm.so.4": "libxcb-icccm4",
    "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0",
    "libxcb-util.so.1": "libxcb-util1",
    "libxcb-randr.so.0": "libxcb-randr0",
    "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xfixes.so.0": "libxcb-xfixes0",
    "libxcb-render.so.0": "libxcb-render0",
    "libxcb-xkb.so.1": "libxcb-xkb1",
    "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
}


def _loadable(soname: str) -> bool:
    try:
        ctypes.CDLL(soname)
    except OSError:
        return False
    return True


def uses_xcb(env: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """Whether Qt will pick its xcb plugin: Linux/BSD, QT_QPA_PLATFORM unset or ``xcb``, an X display set, and (when
    the platform is not named) no Wayland display Qt would prefer."""
    env = os.environ if env is None else env
    platform = sys.platform if platform is None else platform
    if platform in ("darwin", "win32", "cygwin"):
        return False
    qpa = env.get("QT_QPA_PLATFORM", "")
    if qpa:
        return qpa.split(":", 1)[0].split(";", 1)[0] == "xcb"
    return bool(env.get("DISPLAY")) and not env.get("WAYLAND_DISPLAY")


def missing_xcb_libraries(loadable: Callable[[str], bool] | None = None) -> list[str]:
    """The sonames of :data:`XCB_LIBRARIES` this system cannot load (``loadable``: default ``_loadable``, looked up
    when called)."""
    loadable = loadable or _loadable
    return [so for so in XCB_LIBRARIES if not loadable(so)]


def xcb_problem(env: Mapping[str, str] | None = None, loadable: Callable[[str], bool] | None = None) -> str | None:
    """One line naming the missing libraries and the packages to install, when Qt would use xcb and some are
    missing; else None."""
    if not uses_xcb(env):
        return None
    missing = missing_xcb_libraries(loadable)
    if not missing:
        return None
    packages = " ".join(XCB_LIBRARIES[so] for so in missing)
    return (f"Qt's X11 platform plugin (xcb) needs system libraries this machine lacks ({', '.join(missing)}); "
            f"install them with: sudo apt-get install {packages}  (or, without a window: QT_QPA_PLATFORM=offscreen "
            "ckpt-explorer open ... --screenshot shot.png)")
