"""``supervisor graph``: the dependency graph of a planned topology, as text, Mermaid or DOT.

Pure rendering: a ``Plan`` in, a string out, so the same functions serve the CLI, docs and tests. Each
service shows its replica count and its GPUs (when it has any); each edge goes from a dependency to its
dependent and names the condition waited for (started, ready, completed). The text form is a layered
list: layer N holds the services whose longest dependency chain has N links, so it reads in start order.
ASCII only: a terminal or a pipe without UTF-8 shows it the same.
"""

from __future__ import annotations

import re

from .._units import counted
from .plan import Plan, ServicePlan

__all__ = ["FORMATS", "layers", "render_dot", "render_graph", "render_mermaid", "render_text"]

FORMATS = ("text", "mermaid", "dot")
_MERMAID_KEYWORDS = frozenset({"end", "graph", "subgraph", "flowchart", "direction", "click", "style", "class"})


def render_graph(plan: Plan, fmt: str = "text") -> str:
    """The graph in ``fmt``: text, mermaid or dot."""
    renderers = {"text": render_text, "mermaid": render_mermaid, "dot": render_dot}
    if fmt not in renderers:
        raise ValueError(f"unknown graph format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return renderers[fmt](plan)


def layers(plan: Plan) -> list[list[ServicePlan]]:
    """Services by depth (the longest chain of dependencies below them), each layer in start order."""
    depth: dict[str, int] = {}
    for service in plan.services:  # start order: every dependency comes first
        depth[service.name] = 1 + max((depth[d.service] for d in service.depends_on), default=-1)
    grouped: list[list[ServicePlan]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for service in plan.services:
        grouped[depth[service.name]].append(service)
    return grouped


def render_text(plan: Plan) -> str:
    """``name: N services, M replicas``, then one line per service by layer: its label and what it waits for."""
    replicas = sum(len(s.replicas) for s in plan.services)
    lines = [f"{plan.name}: {counted(len(plan.services), 'service')}, {counted(replicas, 'replica')}"]
    rows = []
    for depth, layer in enumerate(layers(plan)):
        for i, service in enumerate(layer):
            after = ", ".join(f"{d.service} ({d.condition})" for d in service.depends_on)
            rows.append((f"layer {depth}" if i == 0 else "", _label(service), f"after {after}" if after else ""))
    widths = [max((len(row[i]) for row in rows), default=0) for i in range(2)]
    lines += [f"  {a:<{widths[0]}}  {b:<{widths[1]}}  {c}".rstrip() for a, b, c in rows]
    return "\n".join(lines)


def render_mermaid(plan: Plan) -> str:
    """A Mermaid ``flowchart``: one node per service, an arrow per dependency labelled with its condition
    (dashed for ``started``: the dependent does not wait for it to be ready)."""
    ids = _ids(plan)
    lines = ["flowchart TD"]
    lines += [f'    {ids[s.name]}["{_mermaid_text(_label(s))}"]' for s in plan.services]
    for service in plan.services:
        for dep in service.depends_on:
            arrow = "-.->" if dep.condition == "started" else "-->"
            lines.append(f"    {ids[dep.service]} {arrow}|{dep.condition}| {ids[service.name]}")
    return "\n".join(lines)


def render_dot(plan: Plan) -> str:
    """A Graphviz digraph, dependencies first (left to right), edges labelled with their condition."""
    lines = [f"digraph {_dot_quote(plan.name)} {{", "    rankdir=LR;", "    node [shape=box];"]
    lines += [f"    {_dot_quote(s.name)} [label={_dot_quote(_label(s))}];" for s in plan.services]
    for service in plan.services:
        for dep in service.depends_on:
            edge = f"{_dot_quote(dep.service)} -> {_dot_quote(service.name)}"
            style = ", style=dashed" if dep.condition == "started" else ""
            lines.append(f"    {edge} [label={_dot_quote(dep.condition)}{style}];")
    lines.append("}")
    return "\n".join(lines)


def _label(service: ServicePlan) -> str:
    """``decode x2 (gpus 2,3; 4,5)``: the name, the replica count when not 1, each replica's GPUs."""
    label = service.name
    if len(service.replicas) != 1:
        label += f" x{len(service.replicas)}"
    if any(r.gpus for r in service.replicas):
        label += f" (gpus {'; '.join(','.join(map(str, r.gpus)) or '-' for r in service.replicas)})"
    return label


def _ids(plan: Plan) -> dict[str, str]:
    """Mermaid node ids: the name with anything but letters, digits and ``_`` as ``_``, never a keyword;
    unique."""
    ids: dict[str, str] = {}
    for service in plan.services:
        base = re.sub(r"\W", "_", service.name, flags=re.ASCII) or "service"
        if base.lower() in _MERMAID_KEYWORDS:  # "end" would close the flowchart
            base += "_"
        node, n = base, 1
        while node in ids.values():
            n += 1
            node = f"{base}_{n}"
        ids[service.name] = node
    return ids


def _mermaid_text(text: str) -> str:
    return text.replace('"', "#quot;")


def _dot_quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
