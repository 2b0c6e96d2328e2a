"""Helpers shared by the benchmark scripts: paths, timing, and writing a section of BENCHMARKS.md."""

import os
import re
import subprocess
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("BERTSCOPE_SHARED", ROOT.parent / "shared"))
MINILM = SHARED / "models" / "minilm-l6-h384"
DATA = SHARED / "data"


def machine() -> str:
    """The CPU, its flags that matter here (as lscpu names them, with any ISA cap), threads and torch."""
    from bertscope.kernels import cpu_name, isa_summary
    return f"{cpu_name()} ({isa_summary()}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def vendor() -> str:
    """A short name for the CPU: its maker and its widest vector ISA ("amd-avx2", "intel-avx512"), to keep each
    machine's tables apart in BENCHMARKS.md (two AMD EPYCs here differ by AVX-512)."""
    from bertscope.kernels import cpu_flags, cpu_name
    name = cpu_name().lower()
    maker = "intel" if "intel" in name else "amd" if "amd" in name else "cpu"
    return f"{maker}-{'avx512' if 'avx512f' in cpu_flags() else 'avx2'}"


def cpu_label() -> str:
    """The CPU as the tables name it: "AMD EPYC (AVX2 only)", "Intel Xeon (AVX-512)"."""
    maker, isa = vendor().split("-")
    return ({"intel": "Intel Xeon", "amd": "AMD EPYC"}.get(maker, "this CPU")
            + (" (AVX-512)" if isa == "avx512" else " (AVX2 only)"))


def commit() -> str:
    if os.environ.get("BERTSCOPE_COMMIT"):      # where the tree was copied without .git (a lent GPU machine)
        return os.environ["BERTSCOPE_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                              text=True).stdout.strip()
    except OSError:
        return "?"


def write_section(name: str, markdown: str):
    """Replace the block between <!-- name --> and <!-- /name --> in BENCHMARKS.md (append it if missing)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"<!-- {name} -->\n{markdown.strip()}\n<!-- /{name} -->"
    pattern = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text, encoding="utf-8")
