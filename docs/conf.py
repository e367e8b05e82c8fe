"""Sphinx configuration for the relayd documentation.

Build with:  sphinx-build -W -b html docs docs/_build/html
No extension needs the network.
"""

import os
import re

_here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_here, "..", "relayd", "__init__.py"), encoding="utf-8") as _f:
    _match = re.search(r'^__version__ = "([^"]+)"', _f.read(), re.M)

project = "relayd"
author = "relayd contributors"
copyright = "relayd contributors"
release = _match.group(1) if _match else "0"
version = release

extensions = []
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
templates_path = []
highlight_language = "none"

html_theme = "alabaster"
html_theme_options = {
    "description": "A self-hosted Azure Relay Hybrid Connections service on Twisted",
    "fixed_sidebar": False,
}
html_static_path = []
html_show_sourcelink = False
