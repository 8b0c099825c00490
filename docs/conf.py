"""Sphinx configuration of minigd's documentation site (``bash docs/build.sh`` builds it).

Why these tools: Sphinx reads the docstrings the code already carries (autodoc, napoleon for their
``Args:`` sections), sphinx-gallery runs every example in ``examples/`` at build time so a broken
example fails the build, MyST lets the guides stay Markdown like the README they came from, and
furo lays the pages out for both a phone and a wide screen without configuration.
"""

from __future__ import annotations

import os
from pathlib import Path

import minigd

DOCS = Path(__file__).resolve().parent
MATHJAX = DOCS / "_static" / "mathjax" / "tex-svg.js"

project = "minigd"
author = "the minigd developers"
copyright = "2026, the minigd developers"
release = version = minigd.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "sphinx_gallery.gen_gallery",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "auto_examples/*.ipynb", "auto_examples/*.py", "**/*.zip"]
myst_enable_extensions = ["dollarmath", "colon_fence"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
napoleon_google_docstring = True
napoleon_numpy_docstring = False

# MathJax served from the site itself (fetched with its checksum by build.sh): the pages render
# their equations offline, and a browser never waits on a third-party CDN.
mathjax_path = "mathjax/tex-svg.js"

# Each example runs at build time; the long ones (names starting with "long_") only when
# MINIGD_DOCS_LONG=1, so the CI build stays at seconds per example.
RUN_PATTERN = r"/(plot_|long_)" if os.environ.get("MINIGD_DOCS_LONG") == "1" else r"/plot_"
sphinx_gallery_conf = {
    "examples_dirs": "../examples",
    "gallery_dirs": "auto_examples",
    "filename_pattern": RUN_PATTERN,
    "abort_on_example_error": True,
    "download_all_examples": False,
    "remove_config_comments": True,
    "within_subsection_order": "FileNameSortKey",
    "reset_modules": ("matplotlib",),
}

html_theme = "furo"
html_title = f"minigd {release}"
html_static_path = ["_static"]
html_show_sourcelink = False


def skip_inherited_sklearn_plumbing(app, what, name, obj, skip, options):
    """scikit-learn generates ``set_fit_request``-style methods on every estimator; their
    docstrings point into scikit-learn's own site."""
    return True if name.startswith("set_") and name.endswith("_request") else None


def setup(app):
    app.connect("autodoc-skip-member", skip_inherited_sklearn_plumbing)
    if not MATHJAX.exists():
        raise RuntimeError(
            f"{MATHJAX} is missing; build with `bash docs/build.sh`, which fetches it."
        )
