"""Read a HyperPyYAML file (CosyVoice's ``cosyvoice.yaml``) as plain data, never executing it.

HyperPyYAML tags build objects when the upstream loader runs them; here each one becomes a dict
that only names what it would have built:

- ``!new:pkg.Class`` -> ``{"_class": "pkg.Class", **kwargs}`` (a sequence value: ``"_args"``);
- ``!name:pkg.function`` -> ``{"_name": "pkg.function", **kwargs}`` (a partial, never called);
- ``!apply:pkg.function`` -> ``{"_apply": "pkg.function", "_args": [...]}`` (never called);
- ``!ref <key>`` / ``!ref <key.sub>`` / ``!ref <key[sub]>`` -> the value found there (resolved);
  a ref inside a longer string is substituted as text, and simple arithmetic on numbers
  (``!ref <a> * 2``) is evaluated without ``eval``;
- ``!copy <key>`` -> a deep copy of that value; ``!tuple`` -> a list.

    >>> cfg = read_hyperpyyaml("CosyVoice-300M-25Hz/cosyvoice.yaml")   # doctest: +SKIP
    >>> cfg["flow"]["_class"], cfg["flow"]["encoder"]["num_blocks"]     # doctest: +SKIP
    ('cosyvoice.flow.flow.MaskedDiffWithXvec', 6)
"""
from __future__ import annotations

import ast
import copy
import operator
import re
from pathlib import Path
from typing import Any

import yaml

from manifests.errors import UserError

_REF = re.compile(r"<([^<>]+)>")
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow,
        ast.Mod: operator.mod, ast.USub: operator.neg, ast.UAdd: operator.pos}


class _Ref:
    def __init__(self, text: str, deep_copy: bool = False):
        self.text, self.deep_copy = text, deep_copy


class _Loader(yaml.SafeLoader):
    """SafeLoader that turns HyperPyYAML tags into data (no import, no call)."""


# HyperPyYAML parses YAML 1.2 (ruamel), where ``1e-06`` is a float; PyYAML's 1.1 resolver
# would read it as a string.
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
    list("-+0123456789."),
)


def _value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


def _tagged(key: str):
    def construct(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict:
        value = _value(loader, node)
        out: dict = {key: suffix}
        if isinstance(value, dict):
            out.update(value)
        elif isinstance(value, list):
            out["_args"] = value
        elif value not in ("", None):
            out["_args"] = [value]
        return out
    return construct


_Loader.add_multi_constructor("!new:", _tagged("_class"))
_Loader.add_multi_constructor("!name:", _tagged("_name"))
_Loader.add_multi_constructor("!apply:", _tagged("_apply"))
_Loader.add_constructor("!ref", lambda loader, node: _Ref(loader.construct_scalar(node)))
_Loader.add_constructor("!copy", lambda loader, node: _Ref(loader.construct_scalar(node), True))
_Loader.add_constructor("!tuple", lambda loader, node: list(_value(loader, node)))


def _arith(node: ast.AST) -> Any:
    if isinstance(node, ast.Expression):
        return _arith(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.left), _arith(node.right))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arith(node.operand))
    raise ValueError("not arithmetic")


class _Resolver:
    def __init__(self, root: dict, where: str):
        self.root, self.where, self.active = root, where, set()

    def lookup(self, path: str) -> Any:
        if path in self.active:
            raise UserError(f"{self.where}: !ref <{path}> refers to itself")
        node: Any = self.root
        for part in re.findall(r"[^.\[\]]+", path):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.lstrip("-").isdigit() and -len(node) <= int(part) < len(node):
                node = node[int(part)]
            else:
                raise UserError(f"{self.where}: !ref <{path}> names no value in the file")
        self.active.add(path)
        try:
            return self.resolve(node)
        finally:
            self.active.discard(path)

    def ref(self, ref: _Ref) -> Any:
        text = ref.text.strip()
        whole = _REF.fullmatch(text)
        if whole:
            value = self.lookup(whole.group(1).strip())
            return copy.deepcopy(value) if ref.deep_copy else value
        values = {m.group(1): self.lookup(m.group(1).strip()) for m in _REF.finditer(text)}
        substituted = _REF.sub(lambda m: str(values[m.group(1)]), text)
        if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()):
            try:
                return _arith(ast.parse(substituted, mode="eval"))
            except (ValueError, SyntaxError):
                pass
        return substituted

    def resolve(self, node: Any) -> Any:
        if isinstance(node, _Ref):
            return self.ref(node)
        if isinstance(node, dict):
            for key in list(node):
                node[key] = self.resolve(node[key])
        elif isinstance(node, list):
            for i, item in enumerate(node):
                node[i] = self.resolve(item)
        return node


def parse_hyperpyyaml(text: str, where: str = "<yaml>") -> dict:
    """Parse HyperPyYAML text into plain data (see the module docstring); ``where`` names the
    source in error messages. Raises ``UserError`` on invalid YAML or an unresolvable ``!ref``."""
    try:
        root = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise UserError(f"{where}: not valid YAML: {' '.join(str(exc).split())}") from None
    if not isinstance(root, dict):
        raise UserError(f"{where}: expected a mapping at the top level")
    return _Resolver(root, where).resolve(root)


def read_hyperpyyaml(path: str | Path) -> dict:
    """Read a HyperPyYAML file as plain data; a missing or unreadable file is a ``UserError``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the yaml ({exc.__class__.__name__})") from None
    return parse_hyperpyyaml(text, str(path))


def require(node: dict, key: str, where: str) -> Any:
    """``node[key]``, or a ``UserError`` naming the file and the missing key path."""
    if not isinstance(node, dict) or key not in node:
        raise UserError(f"{where}: missing key {key!r}")
    return node[key]
