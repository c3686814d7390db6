# The top-level resources/ folder is installed as the package explorer.resources (found with importlib.resources).
# pyproject.toml cannot combine package discovery with a package that lives outside explorer/, hence these lines.
from setuptools import find_packages, setup

setup(packages=[*find_packages(include=["explorer", "explorer.*"]), "explorer.resources"],
      package_dir={"explorer.resources": "resources"})
