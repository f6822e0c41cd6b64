"""FakeHelm: renders this project's chart for tests, because no `helm` binary can be installed
on this project's CI machines (docs/KUBERNETES.md).

It implements only the Go-template subset the chart uses — `{{ .Values.a.b }}`,
`{{ .Release.Namespace }}`, `if`/`else`/`end`, the `quote`, `toYaml` and `nindent` functions, and
`{{-`/`-}}` whitespace trimming, with Go's semantics for each — and refuses anything else, so the
chart cannot quietly grow a construct this fake would render differently from Helm.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)


class Unsupported(ValueError):
    pass


def _lookup(path: str, scope: Mapping[str, Any]) -> Any:
    if not re.fullmatch(r"(\.[A-Za-z_][A-Za-z0-9_]*)+", path):
        raise Unsupported(f"not a field path: {path!r}")
    value: Any = scope
    for part in path[1:].split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    return value


def _truthy(value: Any) -> bool:  # Go templates: false, 0, nil and empty are false
    return value not in (None, False, 0, "") and not (hasattr(value, "__len__") and not len(value))


def _pipeline(expr: str, scope: Mapping[str, Any]) -> str:
    first, *calls = (part.strip() for part in expr.split("|"))
    words = first.split()
    if words[0] == "toYaml" and len(words) == 2:
        value: Any = yaml.safe_dump(_lookup(words[1], scope), default_flow_style=False).rstrip()
    elif len(words) == 1:
        value = _lookup(words[0], scope)
    else:
        raise Unsupported(f"unsupported action: {expr!r}")
    for call in calls:
        name, *args = call.split()
        if name == "quote" and not args:
            value = json.dumps("" if value is None else str(value))
        elif name == "nindent" and len(args) == 1 and args[0].isdigit():
            pad = " " * int(args[0])
            value = "\n" + "\n".join(pad + line for line in str(value).splitlines())
        else:
            raise Unsupported(f"unsupported function: {call!r}")
    if value is None:
        return ""
    return str(value).lower() if isinstance(value, bool) else str(value)


def render_template(text: str, scope: Mapping[str, Any]) -> str:
    pieces: list[str | tuple[str]] = []
    pos = 0
    for m in ACTION.finditer(text):
        literal = text[pos : m.start()]
        if m.group(1):
            literal = literal.rstrip()
        pieces.append(literal)
        pieces.append((m.group(2),))
        pos = m.end()
        if m.group(3):
            pos = len(text) - len(text[pos:].lstrip())
    pieces.append(text[pos:])
    out: list[str] = []
    emitting: list[bool] = []  # one per open `if`: is its current branch rendered?
    for piece in pieces:
        live = all(emitting)
        if isinstance(piece, str):
            if live:
                out.append(piece)
            continue
        action = piece[0]
        if action.startswith("if "):
            emitting.append(_truthy(_lookup(action[3:].strip(), scope)) if live else False)
        elif action == "else":
            if not emitting:
                raise Unsupported("else without if")
            outer = all(emitting[:-1])
            emitting[-1] = outer and not emitting[-1]
        elif action == "end":
            if not emitting:
                raise Unsupported("end without if")
            emitting.pop()
        elif live:
            out.append(_pipeline(action, scope))
    if emitting:
        raise Unsupported("if without end")
    return "".join(out)


def _merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in overrides.items():
        held = merged.get(key)
        is_map = isinstance(held, Mapping) and isinstance(value, Mapping)
        merged[key] = _merge(held, value) if is_map else value  # type: ignore[arg-type]
    return merged


def render_chart(
    chart: Path, namespace: str, values: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    """`helm template --namespace NS CHART --values ...`: every object, parsed."""
    defaults = yaml.safe_load((chart / "values.yaml").read_text())
    scope = {"Values": _merge(defaults, values or {}), "Release": {"Namespace": namespace}}
    docs: list[dict[str, Any]] = []
    for path in sorted((chart / "templates").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(render_template(path.read_text(), scope)) if d]
    return docs
