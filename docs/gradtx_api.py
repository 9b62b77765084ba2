"""The public API of gradtx, and a Sphinx directive that documents it module by module.

``public_objects()`` lists what a user may import: everything in ``gradtx.__all__`` and the
``__all__`` of each package in ``SUBPACKAGES`` (``gradtx.nn``, ...), and the functions and classes defined
in the modules of ``EXTENSION_MODULES`` (public modules whose names need not all be exported). Each object gets one
canonical name, the shortest import path (``gradtx.adam`` before ``gradtx.adam.adam``).

In the docs, ``.. gradtx-api:: gradtx.momentum`` documents every public object *defined* in that
module, in source order, under its canonical name. When the build finishes, a public object that no
page documented is reported as a warning, so ``sphinx-build -W`` fails until a page covers it.
``tests/test_docs.py`` uses ``public_objects()`` for the docstring rules (see CONTRIBUTING.md).
"""

from __future__ import annotations

import importlib
import inspect
import re
import types
import typing
from typing import Any, NamedTuple

# Subpackages with an ``__all__`` of their own, searched after the flat namespace.
SUBPACKAGES = (
    "gradtx.nn",
    "gradtx.second_order",
    "gradtx.projections",
    "gradtx.tree",
    "gradtx.losses",
    "gradtx.contrib",
    "gradtx.assignment",
    "gradtx.perturbations",
    "gradtx.preconditioners",
)
# Modules whose functions and classes are all public, whether or not ``gradtx.__all__`` exports them.
EXTENSION_MODULES = (
    "gradtx.sweep",
    "gradtx.hyperparams",
    "gradtx.numerics",
    "gradtx.accumulation",
    "gradtx.checkpoint",
    "gradtx.distributed",
    "gradtx.fused",
    "gradtx.microbatching",
    "gradtx.quantization_maps",
)


_BULLET = re.compile(r"^([*+\-]|\d+\.|#\.)\s+")
_FIELD = re.compile(r"^:[^:\s][^:]*:")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def verbatim_formulas(lines: list[str]) -> list[str]:
    """Keeps the docstrings' plain-text formulas as written when they are parsed as reStructuredText.

    gradtx docstrings write update rules in plain text (see CONTRIBUTING.md, "Docstrings"):

    1. an indented block after a blank line, under a text paragraph or list item, is a formula
       or code block and becomes a literal block (as if the paragraph had ended with ``::``);
    2. a paragraph of several lines with hanging indents (``name: text`` lines whose
       continuations are indented) becomes a line block, so each entry keeps its own line.

    Directives (``.. math::``), field lists and existing literal blocks are left untouched.
    """
    out: list[str] = []
    i, n = 0, len(lines)
    previous: tuple[str, int] | None = None  # (kind, content indent) of the last paragraph
    while i < n:
        if not lines[i].strip():
            out.append(lines[i])
            i += 1
            continue
        j = i
        while j < n and lines[j].strip():
            j += 1
        paragraph, base = lines[i:j], _indent(lines[i])
        first = paragraph[0].strip()
        if previous and previous[0] in ("text", "bullet") and base > previous[1]:
            # Rule 1: the block runs until a line that is not indented past the paragraph above.
            k = i
            while k < n and (not lines[k].strip() or _indent(lines[k]) > previous[1]):
                k += 1
            while k > i and not lines[k - 1].strip():
                k -= 1
            out += [" " * previous[1] + "::", "", *lines[i:k]]
            i = k
            continue
        if first.startswith(".. ") or paragraph[-1].rstrip().endswith("::"):
            # A directive or a literal block: copy it and everything indented under it.
            k = j
            while k < n and (not lines[k].strip() or _indent(lines[k]) > base):
                k += 1
            while k > j and not lines[k - 1].strip():
                k -= 1
            out += lines[i:k]
            previous = None
            i = k
            continue
        bullet = _BULLET.match(first)
        if _FIELD.match(first):
            previous = ("field", base)
        elif bullet:
            previous = ("bullet", base + bullet.end())
        else:
            previous = ("text", base)
            deeper = any(_indent(line) > base for line in paragraph)
            at_base = sum(_indent(line) == base for line in paragraph)
            if deeper and at_base > 1:  # Rule 2.
                paragraph = [
                    line[:base] + "| " + line[base:] if _indent(line) == base else "  " + line for line in paragraph
                ]
        out += paragraph
        i = j
    return out


class PublicObject(NamedTuple):
    """One public name: ``canonical`` is where the docs put it, ``module`` where it is defined."""

    canonical: str
    obj: Any
    module: str
    kind: str  # "function", "class", "module" or "alias"


def is_type_alias(obj: Any) -> bool:
    """Type aliases (``Params = Any``, ``Schedule = Callable[...]``) carry no docstring of their own."""
    return obj is typing.Any or isinstance(obj, (typing._GenericAlias, types.GenericAlias, types.UnionType)) or (
        type(obj).__module__ == "typing" and not inspect.isclass(obj) and not inspect.isfunction(obj)
    )


def _kind(obj: Any) -> str:
    if inspect.ismodule(obj):
        return "module"
    if is_type_alias(obj):
        return "alias"
    if inspect.isclass(obj):
        return "class"
    if callable(obj):
        return "function"
    return "data"


def _exported(package_name: str) -> list[tuple[str, Any]]:
    package = importlib.import_module(package_name)
    return [(f"{package_name}.{name}", getattr(package, name)) for name in getattr(package, "__all__", [])]


def _defined_in(module_name: str) -> list[tuple[str, Any]]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    found = []
    for name in names:
        obj = getattr(module, name)
        if (inspect.isfunction(obj) or inspect.isclass(obj)) and obj.__module__ == module_name:
            found.append((f"{module_name}.{name}", obj))
    return found


def public_objects() -> list[PublicObject]:
    """Every public object once, under its canonical (shortest) name, flat namespace first."""
    candidates = _exported("gradtx")
    for package in SUBPACKAGES:
        candidates += _exported(package)
    for module in EXTENSION_MODULES:
        candidates += _defined_in(module)
    seen: dict[int, PublicObject] = {}
    aliases: dict[str, PublicObject] = {}
    for canonical, obj in candidates:
        kind = _kind(obj)
        if kind == "data":
            continue
        if kind in ("alias", "module"):
            # Aliases are not unique objects (``Params`` and ``Updates`` are both ``Any``): key by name.
            module = obj.__name__ if kind == "module" else canonical.rpartition(".")[0]
            aliases.setdefault(canonical, PublicObject(canonical, obj, module, kind))
            continue
        if id(obj) not in seen:
            seen[id(obj)] = PublicObject(canonical, obj, getattr(obj, "__module__", ""), kind)
    # Subpackage modules (``gradtx.nn.initializers``) listed in an ``__all__`` are documented as
    # pages, not as objects.
    modules = [p for p in aliases.values() if p.kind == "module" and p.canonical.count(".") == 1]
    return list(seen.values()) + [p for p in aliases.values() if p.kind == "alias"] + modules


def _source_line(obj: Any) -> int:
    try:
        return inspect.getsourcelines(obj)[1]
    except (OSError, TypeError):
        return 0


def setup(app: Any) -> dict[str, Any]:
    """Registers ``.. gradtx-api:: module`` and the end-of-build coverage check."""
    from docutils import nodes
    from docutils.statemachine import StringList
    from sphinx.util import logging
    from sphinx.util.docutils import SphinxDirective
    from sphinx.util.nodes import nested_parse_with_titles

    logger = logging.getLogger(__name__)

    class GradtxApi(SphinxDirective):
        """``.. gradtx-api:: gradtx.momentum``: autodoc every public object defined in the module."""

        required_arguments = 1

        def run(self) -> list[Any]:
            module_name = self.arguments[0]
            importlib.import_module(module_name)
            objects = [p for p in public_objects() if p.module == module_name and p.kind in ("function", "class")]
            if not objects:
                logger.warning("gradtx-api: no public object in %s", module_name, location=self.get_location())
            # The module's docstring introduces the section; its name may be taken by a function
            # (``gradtx.adam``), so the module itself is not indexed.
            lines = [f".. automodule:: {module_name}", "   :no-index:", ""]
            for item in sorted(objects, key=lambda p: _source_line(p.obj)):
                lines += [f".. auto{item.kind}:: {item.canonical}", ""]
            container = nodes.container()
            nested_parse_with_titles(self.state, StringList(lines, source=f"<gradtx-api {module_name}>"), container)
            return container.children

    def check_coverage(app: Any, env: Any) -> None:
        domain = env.get_domain("py")
        for item in public_objects():
            if item.kind != "module" and item.canonical not in domain.objects:
                where = f"`.. gradtx-api:: {item.module}`" if item.kind in ("function", "class") else "an entry"
                logger.warning("public %s %s is in no page of the API reference: add %s to a page in docs/api/",
                               item.kind, item.canonical, where)

    def process_docstring(app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]) -> None:
        lines[:] = verbatim_formulas(lines)

    app.add_directive("gradtx-api", GradtxApi)
    # After napoleon (priority 500), so that its sections are already reStructuredText.
    app.connect("autodoc-process-docstring", process_docstring, priority=600)
    app.connect("env-check-consistency", check_coverage)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
