# The top-level resources/ folder is installed as the package explorer.resources (found with importlib.resources).
# pyproject.toml cannot combine package discovery with a package that lives outside explorer/, hence these lines.
#
# explorer/core/_kernels.c: the statistics pass's optional C kernels (plain C, loaded with ctypes by
# explorer/core/stats_kernels.py). optional=True: without a compiler the build goes on and the numpy kernels run.
# The flags keep IEEE arithmetic exactly as written (no fast-math, no fused multiply-adds): the figures must equal
# the numpy kernels' bit for bit.
import sys

from setuptools import Extension, find_packages, setup

FLAGS = [] if sys.platform == "win32" else ["-O3", "-fno-fast-math", "-ffp-contract=off", "-fno-strict-aliasing"]

setup(packages=[*find_packages(include=["explorer", "explorer.*"]), "explorer.resources"],
      package_dir={"explorer.resources": "resources"},
      ext_modules=[Extension("explorer.core._kernels", ["explorer/core/_kernels.c"], extra_compile_args=FLAGS,
                             optional=True)])
