"""The module graph of docs/architecture.md, checked on the source: imports go down the layers only, there is no
cycle, nobody imports another module's private names, no module outside the registry compares family names, and
the CLI stays a thin shell."""

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "bertscope"

# docs/architecture.md, bottom up. A package counts as one unit; its modules may import each other.
LAYERS = [["errors"], ["arguments"], ["io", "families", "scoring", "speed", "machine"], ["config", "kernels", "packing"], ["inputs", "data"],
          ["model", "tokenize"], ["checkpoint", "masking", "answers", "starts"], ["infer", "export"], ["explain", "quantize"], ["tasks"],
          ["train"], ["api"], ["cli"], ["__main__"]]
LAYER = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """'bertscope.tasks.classification' -> 'tasks'; 'bertscope.model' -> 'model'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def modules():
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports(module: str, path: Path, is_package: bool):
    """(imported module, names) for every import of bertscope modules in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                target = base[:len(base) - node.level + 1] + (node.module.split(".") if node.module else [])
            elif node.module and node.module.startswith("bertscope"):
                target = node.module.split(".")
            else:
                continue
            target = ".".join(target)
            for alias in node.names:
                sub = f"{target}.{alias.name}"          # `from . import infer` imports a module
                if (SRC.parent / Path(*sub.split("."))).with_suffix(".py").exists() or \
                        (SRC.parent / Path(*sub.split(".")) / "__init__.py").exists():
                    yield sub, []
                else:
                    yield target, [alias.name]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("bertscope"):
                    yield alias.name, []


def graph():
    edges = []
    for module, path in modules():
        for target, names in imports(module, path, path.name == "__init__.py"):
            edges.append((module, target, names))
    return edges


def test_imports_go_down_the_layers():
    assert set(LAYER) == {unit_of(m) for m, _ in modules() if unit_of(m)}, "a module is missing from LAYERS"
    upward = []
    for source, target, _ in graph():
        a, b = unit_of(source), unit_of(target)
        if a and b and a != b and LAYER[b] >= LAYER[a]:
            upward.append(f"{source} -> {target} (layer {LAYER[a]} -> {LAYER[b]})")
    assert not upward, "imports that go up or sideways:\n" + "\n".join(upward)


def test_no_import_cycle_inside_a_package():
    edges = {}
    for source, target, _ in graph():
        if unit_of(source) == unit_of(target) and source != target and "." in source[len("bertscope."):]:
            edges.setdefault(source, set()).add(target)
    seen, stack = set(), []

    def visit(m):
        if m in stack:
            pytest.fail("import cycle: " + " -> ".join(stack[stack.index(m):] + [m]))
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in edges.get(m, ()):
            if t != m.rsplit(".", 1)[0]:              # a package's __init__ re-exporting its modules is fine
                visit(t)
        stack.pop()

    for m in list(edges):
        visit(m)


def test_no_module_imports_another_modules_private_names():
    private = [f"{s} imports {n} from {t}" for s, t, names in graph() for n in names
               if n.startswith("_") and unit_of(s) != unit_of(t)]
    assert not private, "\n".join(private)


def test_family_names_are_compared_only_in_the_registry():
    pattern = re.compile(r"""(==|!=|\bin)\s*\(?\s*["'](bert|roberta|albert)["']""")
    found = []
    for module, path in modules():
        if module == "bertscope.families":
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if pattern.search(line):
                found.append(f"{path.name}:{n}: {line.strip()}")
    assert not found, "family names compared outside families.py:\n" + "\n".join(found)


def test_cli_holds_no_long_functions_and_no_training_logic():
    longest = []
    for path in sorted((SRC / "cli").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef):
                body = node.body[1:] if ast.get_docstring(node) else node.body   # the docstring is help text
                lines = body[-1].end_lineno - body[0].lineno + 1
                longest.append((lines, f"{path.name}:{node.name}"))
        text = path.read_text(encoding="utf-8")
        for word in ("torch.optim", "backward(", "state_dict", "name_table", "from_pretrained(", "save_pretrained("):
            assert word not in text, f"{path.name} holds {word!r}: that belongs below the CLI"
    assert max(longest)[0] < 60, f"the longest CLI function is {max(longest)}"


def test_import_bertscope_and_the_cli_load_no_torch():
    import subprocess
    import sys
    code = "import sys, bertscope, bertscope.cli; print('torch' in sys.modules)"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "False", r.stderr


def test_every_module_is_an_attribute_of_a_bare_import_bertscope():
    """`import bertscope` then bertscope.api.finetune(...), as the docstrings say, with nothing loaded before."""
    import subprocess
    import sys
    names = sorted(p.stem for p in SRC.iterdir() if p.name != "__init__.py" and
                   (p.suffix == ".py" or (p / "__init__.py").exists()) and not p.name.startswith("__"))
    code = ("import sys, bertscope; print('torch' in sys.modules); "
            f"print(all(getattr(bertscope, n).__name__ == 'bertscope.' + n for n in {names!r}))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.split() == ["False", "True"], r.stdout + r.stderr
