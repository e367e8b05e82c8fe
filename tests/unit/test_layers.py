"""The layers of relayd, enforced (issue 9 item 2; see ../shared/ARCHITECTURE.md "Arrows point
one way").

Every module under ``relayd/`` is parsed (not imported) and every import in it counts: at module
level, inside functions, under ``if``/``try``.  The rules:

* ``relayd.wire`` is pure: it imports nothing from Twisted or Autobahn, and nothing of relayd
  outside ``relayd.wire``;
* ``relayd.switchboard``, ``relayd.interfaces`` and ``relayd.wire`` import no transport, web or
  client module;
* ``relayd.client`` (the SDK) imports no ``relayd.transports`` or ``relayd.web`` module;
* ``relayd.cluster`` imports no transport, web or client module;
* the model (``switchboard``, ``namespace``, ``access``, ``pipe``, ``limits``, ``interfaces``,
  ``wire``) imports neither the config parser (``relayd.config``) nor the wiring (``relayd.tap``,
  ``relayd.cli``), and ``namespace``, ``access``, ``pipe``, ``limits`` no door, web or client
  module either;
* no import cycles among relayd's modules (a function-level import hides a cycle from Python
  but not from this check).

A failure names the file, the line and the rule each import breaks.
"""

import ast
from pathlib import Path

import relayd

ROOT = Path(relayd.__file__).resolve().parent

def _module_name(path):
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    """{dotted name: path} of every module in the relayd package."""
    return {_module_name(p): p for p in sorted(ROOT.rglob("*.py"))}


MODULES = _modules()


def _is_package(name):
    return MODULES.get(name, Path()).name == "__init__.py"


def _resolve_relative(module, level, target):
    package = module if _is_package(module) else module.rpartition(".")[0]
    for _ in range(level - 1):
        package = package.rpartition(".")[0]
    return package + ("." + target if target else "") if package else (target or "")


def imports_of(module):
    return imports_in(MODULES[module].read_text(encoding="utf-8"), module)


def imports_in(source, module):
    """``[(imported dotted name, line)]`` for every import statement anywhere in ``source``
    (the text of ``module``): module level, functions, classes, ``if``/``try`` blocks.

    ``from a.b import c`` counts as importing ``a.b.c`` when that is a relayd module, else
    ``a.b``."""
    tree = ast.parse(source, module)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(module, node.level, node.module)
            for alias in node.names:
                sub = base + "." + alias.name
                found.append((sub if sub in MODULES else base, node.lineno))
    return sorted(found, key=lambda item: item[1])


def _within(name, prefix):
    return name == prefix or name.startswith(prefix + ".")


def _relayd_target(name):
    """The relayd module an import loads (``relayd.wire.sas.Rule`` -> ``relayd.wire.sas``), or None."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _any_of(*prefixes):
    return lambda name: any(_within(name, p) for p in prefixes)


def _relayd_outside_wire(name):
    return _within(name, "relayd") and not _within(name, "relayd.wire")


_SERVER_SIDE = ("relayd.transports", "relayd.web", "relayd.client")

# (who, forbids(imported name), why): ``who`` is a module or a package and everything below it.
# relayd.wire knows no door, web or client module either: the third rule covers that.
RULES = [
    ("relayd.wire", _any_of("twisted", "autobahn"), "relayd.wire is pure: no Twisted, no Autobahn"),
    ("relayd.wire", _relayd_outside_wire, "relayd.wire imports nothing of relayd outside relayd.wire"),
    ("relayd.switchboard", _any_of(*_SERVER_SIDE), "the switchboard knows no door, web or client module"),
    ("relayd.interfaces", _any_of(*_SERVER_SIDE), "the interfaces know no door, web or client module"),
    ("relayd.client", _any_of("relayd.transports", "relayd.web"),
     "the client SDK imports no server code (relayd.transports, relayd.web)"),
    ("relayd.cluster", _any_of(*_SERVER_SIDE),
     "the cluster (Redis store, registry, bus) knows no door, web or client module"),
]
# (relayd.wire is covered by its own rule: it imports nothing of relayd outside itself.)
_MODEL = ("relayd.switchboard", "relayd.namespace", "relayd.access", "relayd.pipe", "relayd.limits",
          "relayd.interfaces")
RULES += [(who, _any_of("relayd.config", "relayd.tap", "relayd.cli"),
           "the model imports neither the config parser nor the wiring (relayd.config, relayd.tap, relayd.cli)")
          for who in _MODEL]
RULES += [(who, _any_of(*_SERVER_SIDE), "the model knows no door, web or client module")
          for who in ("relayd.namespace", "relayd.access", "relayd.pipe", "relayd.limits")]


def rule_breaks(module, imports, filename):
    """A message for each of ``imports`` (``[(name, line)]``) of ``module`` that breaks a rule."""
    return ["%s:%d imports %s: %s" % (filename, line, name, why)
            for name, line in imports
            for who, forbids, why in RULES
            if _within(module, who) and forbids(name)]


def violations():
    out = []
    for module in MODULES:
        out.extend(rule_breaks(module, imports_of(module), MODULES[module].relative_to(ROOT.parent)))
    return out


def import_graph():
    """{module: {imported relayd module: first line}} over relayd's modules."""
    graph = {}
    for module in MODULES:
        edges = graph.setdefault(module, {})
        for name, line in imports_of(module):
            target = _relayd_target(name) if _within(name, "relayd") else None
            if target and target != module:
                edges.setdefault(target, line)
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def describe_cycle(graph, component):
    members = set(component)
    lines = []
    for module in component:
        for target, line in sorted(graph[module].items()):
            if target in members:
                lines.append("  %s:%d imports %s" % (MODULES[module].relative_to(ROOT.parent), line, target))
    return "import cycle among %s:\n%s" % (", ".join(component), "\n".join(lines))


def test_every_module_is_seen():
    assert "relayd.wire.hc" in MODULES and "relayd.switchboard" in MODULES
    assert all(imports_of(m) is not None for m in MODULES)


def test_layer_rules():
    problems = violations()
    assert not problems, "imports that break relayd's layers:\n" + "\n".join(problems)


def test_no_import_cycles():
    graph = import_graph()
    found = cycles(graph)
    assert not found, "\n".join(describe_cycle(graph, c) for c in found)


# -- the checker itself, on a made-up tree --------------------------------------------------------

def test_cycle_finder_on_a_small_graph():
    graph = {"a": {"b": 1}, "b": {"c": 2}, "c": {"a": 3}, "d": {"a": 4}, "e": {}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b": 1}, "b": {}}) == []


def test_relative_and_from_imports_resolve_to_modules():
    assert _resolve_relative("relayd.wire.hc", 1, "sas") == "relayd.wire.sas"
    assert _resolve_relative("relayd.wire", 1, "names") == "relayd.wire.names"
    assert _resolve_relative("relayd.transports.hybrid.websocket", 2, None) == "relayd.transports"
    assert _relayd_target("relayd.wire.sas.Rule") == "relayd.wire.sas"
    assert "relayd.wire.sas" in [name for name, _ in imports_of("relayd.namespace")]


def test_imports_anywhere_count():
    """A function-level import hides a cycle from Python, not from the check."""
    source = ("import json\n"
              "def f():\n"
              "    from relayd.transports.http import soap\n"
              "class C:\n"
              "    def g(self):\n"
              "        try:\n"
              "            import twisted.internet.reactor\n"
              "        except ImportError:\n"
              "            from . import sas\n")
    assert imports_in(source, "relayd.wire.hc") == [
        ("json", 1), ("relayd.transports.http.soap", 3), ("twisted.internet.reactor", 7),
        ("relayd.wire.sas", 9)]


def test_each_rule_catches_its_import():
    assert rule_breaks("relayd.wire.hc", [("json", 1), ("twisted.logger", 2), ("relayd.wire.sas", 3),
                                          ("relayd.config", 4), ("relayd.transports.front", 5)], "hc.py") == [
        "hc.py:2 imports twisted.logger: relayd.wire is pure: no Twisted, no Autobahn",
        "hc.py:4 imports relayd.config: relayd.wire imports nothing of relayd outside relayd.wire",
        "hc.py:5 imports relayd.transports.front: relayd.wire imports nothing of relayd outside relayd.wire"]
    assert rule_breaks("relayd.switchboard", [("relayd.web.site", 7), ("relayd.wire.sas", 8)], "s.py") == [
        "s.py:7 imports relayd.web.site: the switchboard knows no door, web or client module"]
    assert rule_breaks("relayd.client.bridge", [("relayd.transports.nettcp", 9), ("relayd.pipe", 10)], "b.py") == [
        "b.py:9 imports relayd.transports.nettcp: the client SDK imports no server code "
        "(relayd.transports, relayd.web)"]
    assert rule_breaks("relayd.interfaces", [("relayd.client.sender", 1)], "i.py") != []
    assert rule_breaks("relayd.namespace", [("relayd.config", 3), ("relayd.wire.names", 4)], "n.py") == [
        "n.py:3 imports relayd.config: the model imports neither the config parser nor the wiring "
        "(relayd.config, relayd.tap, relayd.cli)"]
    assert rule_breaks("relayd.pipe", [("relayd.transports.tcp", 2)], "p.py") == [
        "p.py:2 imports relayd.transports.tcp: the model knows no door, web or client module"]
    # a prefix is a package, not a string prefix: relayd.client is not under relayd.cli
    assert rule_breaks("relayd.switchboard", [("relayd.client_helpers", 1)], "s.py") == []
