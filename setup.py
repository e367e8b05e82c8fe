# All metadata is in pyproject.toml (PEP 517/621).  This shim stays for tools that still call
# setup.py directly (e.g. `pip install -e . --config-settings editable_mode=compat`).
from setuptools import setup

setup()
