"""Optax's own test suite, run against gradtx: every public Optax name a test uses is gradtx's.

A test file of the installed ``optax`` package is rewritten (``rewrite_test_source``) so that each
``import optax...`` / ``from optax... import ...`` binds a ``ModuleProxy`` instead of the real module.
Attribute access on a proxy resolves a name as follows:

* a submodule gives the proxy of that submodule (``optax._src.alias``);
* a sibling test module (``alias_test``) gives the rewritten copy of that test;
* an object that Optax exports under a public name (``optax.adam``, ``optax.losses.l2_loss``,
  ``optax.tree.add``; also when reached through ``optax._src.alias.adam``) gives gradtx's object of
  the same name (``gradtx.adam``, ``gradtx.losses.l2_loss``, ``gradtx.tree.add``). When gradtx has no
  such name the test gets a ``MissingName`` stand-in that fails the test where it is used, so a
  missing name fails its cases instead of hiding them;
* anything else (Optax-internal plumbing: ``test_utils``, private helpers, type aliases) is Optax's own.

Each substitution a test touches is recorded in ``USED`` (read by the generated conftest), so the
runner can tell the cases that exercise gradtx from those that test Optax's internals alone.
"""

from __future__ import annotations

import ast
import functools
import importlib
import inspect
import types
from typing import Any

import optax

import gradtx

# Optax's public namespaces and where gradtx keeps the same names.
PUBLIC_NAMESPACES: dict[str, tuple[str, ...]] = {
    "optax": ("gradtx",),
    "optax.transforms": ("gradtx",),
    "optax.schedules": ("gradtx",),
    "optax.second_order": ("gradtx",),
    "optax.tree": ("gradtx.tree",),
    "optax.tree_utils": ("gradtx.tree", "gradtx"),
    "optax.losses": ("gradtx.losses",),
    "optax.projections": ("gradtx.projections",),
    "optax.contrib": ("gradtx.contrib",),
    "optax.microbatching": ("gradtx.microbatching", "gradtx"),
    "optax.perturbations": ("gradtx.perturbations",),
    "optax.assignment": ("gradtx.assignment",),
    "optax.experimental": ("gradtx.experimental",),
}

USED: set[str] = set()
MISSING: set[str] = set()
_TEST_MODULE_PREFIX = "optaxsuite__"


def _public_index() -> dict[int, tuple[str, str]]:
    """``id(obj) -> (optax namespace, public name)`` for every public callable or class of Optax."""
    index: dict[int, tuple[str, str]] = {}
    for namespace in PUBLIC_NAMESPACES:
        module = importlib.import_module(namespace)
        for name in dir(module):
            if name.startswith("_"):
                continue
            obj = getattr(module, name)
            if isinstance(obj, types.ModuleType) or not (callable(obj) or inspect.isclass(obj)):
                continue
            if getattr(obj, "__module__", "") in ("typing", "builtins", "collections.abc"):
                continue
            index.setdefault(id(obj), (namespace, name))
    return index


_INDEX = _public_index()


def _gradtx_object(namespace: str, name: str) -> Any:
    for target in PUBLIC_NAMESPACES[namespace]:
        try:
            module = importlib.import_module(target)
        except ImportError:
            continue
        if hasattr(module, name):
            return getattr(module, name)
    return None


class MissingName:
    """Stands in for an Optax public name that gradtx lacks: any use fails the test that uses it."""

    def __init__(self, qualified_name: str):
        self._qualified_name = qualified_name

    def _fail(self):
        MISSING.add(self._qualified_name)
        raise NotImplementedError(f"gradtx has no {self._qualified_name}")

    def __call__(self, *args, **kwargs):
        self._fail()

    def __getattr__(self, attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        self._fail()

    def __repr__(self):
        return f"MissingName({self._qualified_name})"


def _recording(obj: Any, qualified_name: str) -> Any:
    """gradtx's object; plain functions are wrapped so that a call records the name."""
    if inspect.isfunction(obj):

        @functools.wraps(obj)
        def wrapper(*args, **kwargs):
            USED.add(qualified_name)
            return obj(*args, **kwargs)

        return wrapper
    return obj


_SUBSTITUTES: dict[tuple[str, str], Any] = {}
_FOUND: set[tuple[str, str]] = set()


def _missing_class(qualified_name: str) -> type:
    """A class that can be subclassed or used in ``isinstance`` but fails when instantiated."""

    def __init__(self, *args, **kwargs):
        MISSING.add(qualified_name)
        raise NotImplementedError(f"gradtx has no {qualified_name}")

    return type(qualified_name.rsplit(".", 1)[-1], (), {"__init__": __init__})


def substitute(obj: Any) -> Any:
    """gradtx's namesake of an Optax public object, or the object itself if it is Optax-internal."""
    key = _INDEX.get(id(obj)) if (callable(obj) or inspect.isclass(obj)) else None
    if key is None:
        return obj
    qualified_name = f"{key[0]}.{key[1]}"
    USED.add(qualified_name)
    if key not in _SUBSTITUTES:
        found = _gradtx_object(*key)
        if found is not None:
            _FOUND.add(key)
            _SUBSTITUTES[key] = _recording(found, qualified_name)
        elif inspect.isclass(obj):
            _SUBSTITUTES[key] = _missing_class(qualified_name)
        else:
            _SUBSTITUTES[key] = MissingName(qualified_name)
    if key not in _FOUND:
        MISSING.add(qualified_name)
    return _SUBSTITUTES[key]


class ModuleProxy(types.ModuleType):
    """An Optax module whose public names resolve to gradtx's (see the module docstring)."""

    def __init__(self, real: types.ModuleType):
        super().__init__(real.__name__)
        object.__setattr__(self, "_real", real)

    def __getattr__(self, name: str) -> Any:
        real = object.__getattribute__(self, "_real")
        if name.endswith("_test"):
            return importlib.import_module(test_module_name(f"{real.__name__}.{name}"))
        try:
            obj = getattr(real, name)
        except AttributeError:
            obj = importlib.import_module(f"{real.__name__}.{name}")
        if isinstance(obj, types.ModuleType):
            return proxy(obj.__name__) if obj.__name__.startswith("optax") else obj
        return substitute(obj)


_PROXIES: dict[str, ModuleProxy] = {}


def proxy(module_name: str) -> ModuleProxy:
    if module_name not in _PROXIES:
        _PROXIES[module_name] = ModuleProxy(importlib.import_module(module_name))
    return _PROXIES[module_name]


def test_module_name(optax_module: str) -> str:
    """The flat module name of a rewritten Optax test: ``optax._src.alias_test`` -> ``optaxsuite___src__alias_test``."""
    return _TEST_MODULE_PREFIX + optax_module.removeprefix("optax.").replace(".", "__")


class _ImportRewriter(ast.NodeTransformer):
    """``import optax.x as y`` / ``from optax.x import y`` -> assignments from ``_shim.proxy``."""

    @staticmethod
    def _assign(target: str, expression: str) -> ast.stmt:
        return ast.parse(f"{target} = {expression}").body[0]

    def visit_Import(self, node: ast.Import):
        statements: list[ast.stmt] = []
        kept = []
        for alias in node.names:
            if alias.name == "optax" or alias.name.startswith("optax."):
                if alias.asname:
                    statements.append(self._assign(alias.asname, f"_shim.proxy({alias.name!r})"))
                else:
                    statements.append(self._assign("optax", "_shim.proxy('optax')"))
            else:
                kept.append(alias)
        if kept:
            statements.insert(0, ast.Import(names=kept))
        return statements or node

    def visit_ImportFrom(self, node: ast.ImportFrom):
        module = node.module or ""
        if node.level or not (module == "optax" or module.startswith("optax.")):
            return node
        return [
            self._assign(alias.asname or alias.name, f"getattr(_shim.proxy({module!r}), {alias.name!r})")
            for alias in node.names
        ]


def rewrite_test_source(source: str) -> str:
    tree = _ImportRewriter().visit(ast.parse(source))
    ast.fix_missing_locations(tree)
    return "import _optax_shim as _shim\n" + ast.unparse(tree) + "\n"


__all__ = ["MISSING", "USED", "ModuleProxy", "proxy", "rewrite_test_source", "substitute", "test_module_name"]
del optax, gradtx
