"""The house rules of the code, checked: a newcomer can read the packages from their modules.

Every module says its job in its first docstring line; first-party imports sit at module top (only
optional heavy third-party libraries are imported lazily); the first-party import graph has no
cycle; modules stay small enough to hold in one's head; and no block of logic appears twice
(pylint's duplicate-code check over the packages).
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("features", "training", "serving")
MAX_LINES = 500  # a module a reader holds in their head
MODULES = sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def first_party(name: str | None) -> bool:
    return name is not None and name.split(".")[0] in PACKAGES


def imports(tree: ast.Module, *, top_level: bool) -> list[tuple[int, str]]:
    """(line, module) of first-party imports at module level or nested in functions/classes."""
    nodes = tree.body if top_level else [n for n in ast.walk(tree) if n not in tree.body]
    found = []
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and first_party(node.module):
            names = [f"{node.module}.{a.name}" for a in node.names]
            found += [(node.lineno, node.module)] + [(node.lineno, n) for n in names]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if first_party(a.name)]
    return found


def test_every_module_opens_with_one_line_saying_its_job():
    missing = [str(p.relative_to(ROOT)) for p in MODULES
               if not (ast.get_docstring(ast.parse(p.read_text())) or "").strip().splitlines()]
    assert not missing, f"modules without a docstring: {missing}"


# The command line imports each verb's engine (MLflow, Dask, LightGBM) when the verb runs, so that
# `clv --help`, `clv --version` and a mistyped option answer in well under a second. The model
# imports training.tree_shap (numba: 54 MiB and 0.5 s a process) only when it explains, so the
# scorer's worker processes, which never do, do not carry it (docs/performance.md, Scoring). The id
# sets import features.ingest.id_hashes (numba too) when they hash ids, so that the processes that
# import them only to read sources (features.ingest.partition: the contact list, Dask's readers) do not.
NESTED_IMPORTS_ALLOWED = {"serving/cli.py", "training/model.py", "features/ingest/id_sets.py"}


def test_first_party_imports_are_at_module_top():
    nested = [f"{p.relative_to(ROOT)}:{line} {name}" for p in MODULES
              if str(p.relative_to(ROOT)) not in NESTED_IMPORTS_ALLOWED
              for line, name in imports(ast.parse(p.read_text()), top_level=False)]
    assert not nested, "first-party imports inside functions or classes:\n" + "\n".join(nested)


def test_the_first_party_import_graph_has_no_cycle():
    known = {module_name(p) for p in MODULES}
    graph = {}
    for path in MODULES:
        targets = {name for _, name in imports(ast.parse(path.read_text()), top_level=True)}
        graph[module_name(path)] = {t for t in targets if t in known and t != module_name(path)}
    done, active, cycle = set(), [], []

    def visit(node):
        if node in done or cycle:
            return
        if node in active:
            cycle.extend(active[active.index(node):] + [node])
            return
        active.append(node)
        for target in sorted(graph[node]):
            visit(target)
        active.pop()
        done.add(node)

    for node in sorted(graph):
        visit(node)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


def test_modules_stay_small_enough_to_read_in_one_sitting():
    long = {str(p.relative_to(ROOT)): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def syntax_tree(text: str, name: str):
    """astroid's tree of a module, without the inference pylint runs after building it: the duplicate
    check needs only where the imports and signatures are, and inferring costs 30 s of its 33."""
    from astroid.manager import AstroidManager
    from astroid.rebuilder import TreeRebuilder

    return TreeRebuilder(AstroidManager(), data=text).visit_module(ast.parse(text), name, name, False)


def duplicate_report(modules: dict[str, str], capsys) -> str:
    """pylint's duplicate-code report (its Symilar engine) over {name: source text}."""
    from pylint.checkers.symilar import Symilar

    symilar = Symilar(min_lines=6, ignore_comments=True, ignore_docstrings=True, ignore_imports=True,
                      ignore_signatures=True)
    for name, text in modules.items():
        symilar.append_stream(name, io.StringIO(text), tree=syntax_tree(text, name))
    capsys.readouterr()
    symilar.run()
    return capsys.readouterr().out


def test_no_block_of_logic_appears_twice(capsys):
    report = duplicate_report({str(p.relative_to(ROOT)): p.read_text() for p in MODULES}, capsys)
    assert "duplicates=0 " in report, report[-4000:]


def test_the_duplicate_check_finds_a_copied_block_but_not_shared_imports_or_signatures(capsys):
    block = "".join(f"    total = total + {i} * value\n" for i in range(8))
    header = "import os\nimport sys\nfrom pathlib import Path\nimport json\nimport time\nimport math\n"
    signature = "def f(\n    a,\n    b,\n    c,\n    d,\n    e,\n):\n    return a\n"
    first = f"{header}{signature}\ndef g(value):\n    total = 0\n{block}    return total\n"
    second = f"{header}{signature}\ndef h(value):\n    total = 1\n{block}    return -total\n"
    assert "duplicates=0 " in duplicate_report({"a.py": header + signature, "b.py": header + signature}, capsys)
    report = duplicate_report({"a.py": first, "b.py": second}, capsys)
    assert "similar lines in 2 files" in report and "duplicates=8 " in report, report
