"""Sphinx configuration of the gradtx API reference (build: ``sphinx-build -W -E docs build/docs``)."""

import pathlib
import sys

DOCS = pathlib.Path(__file__).resolve().parent
sys.path[:0] = [str(DOCS.parent), str(DOCS)]

project = "gradtx"
author = "the gradtx authors"
copyright = "the gradtx authors"

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "gradtx_api",
]

# Docstrings follow Google style ("Args:", "Returns:", "References:") with RST inline markup.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_custom_sections = ["State", "Params"]

autodoc_typehints = "signature"
autodoc_typehints_format = "short"
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False
autoclass_content = "class"
add_module_names = False
python_use_unqualified_type_names = True
python_maximum_signature_line_length = 100

default_role = "code"
html_theme = "alabaster"
html_static_path: list[str] = []
exclude_patterns = ["_build"]
