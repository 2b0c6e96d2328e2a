"""Start-up time and memory of the commands as a user runs them: `bertscope --help`, `predict` on one line, and
the peak RSS of `embed` at 5,000 and 50,000 lines (streamed in chunks, so it should not grow with the input).

    python bench/startup_memory.py            # writes the "startup-memory-<cpu>" section of BENCHMARKS.md
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, MINILM, commit, cpu_label, machine, vendor, write_section  # noqa: E402


def bertscope(*args) -> list[str]:
    return [sys.executable, "-m", "bertscope.cli", *map(str, args)]


def peak_rss(cmd, stdin=None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one run of cmd, measured by /usr/bin/time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
        start = time.perf_counter()
        r = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", f.name, *cmd], input=stdin, capture_output=True,
                           text=True)
        wall = time.perf_counter() - start
        if r.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr[-2000:]}")
        return wall, int(f.read().split()[-1]) / 1024


def best(cmd, repeats=3, stdin=None) -> float:
    return min(peak_rss(cmd, stdin)[0] for _ in range(repeats))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--sizes", default="5000,50000")
    a = p.parse_args()
    sizes = [int(x) for x in a.sizes.split(",")]
    lines = [line.split("\t")[0].strip() for line in
             (DATA / "sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]]
    help_s = best(bertscope("--help"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        one = best(bertscope("predict", MINILM_CLS(tmp), "-"), stdin="a gripping film\n")
        rows = []
        for n in sizes:
            f = tmp / f"{n}.txt"
            f.write_text("\n".join((lines * (n // len(lines) + 1))[:n]) + "\n", encoding="utf-8")
            wall, rss = peak_rss(bertscope("embed", MINILM, f, "--out", tmp / f"{n}.npy"))
            rows.append((n, wall, rss))
            print(n, round(wall, 1), round(rss), flush=True)
    growth = rows[-1][2] / rows[0][2] - 1 if len(rows) > 1 else None
    text = [f"#### {cpu_label()}", "", f"`python bench/startup_memory.py {' '.join(sys.argv[1:])}` · {machine()} · "
            f"commit {commit()}", "",
            "| what | wall time | peak RSS |", "|---|---|---|",
            f"| `bertscope --help` | {help_s:.2f} s (best of 3) | |",
            f"| `bertscope predict` on one line from standard input (a MiniLM classifier) | {one:.2f} s (best of 3) | |"]
    text += [f"| `bertscope embed` MiniLM, {n:,} SST-2 lines | {wall:.1f} s | {rss:,.0f} MB |" for n, wall, rss in rows]
    if growth is not None:
        text += ["", f"From {rows[0][0]:,} to {rows[-1][0]:,} lines the peak RSS grows by {100 * growth:.0f}%: "
                 "`embed`, `predict` and `evaluate` read, tokenize, run and write 2,048 texts at a time (`--chunk`)."]
    write_section(f"startup-memory-{vendor()}", "\n".join(text))
    print("\n".join(text))


def MINILM_CLS(tmp: Path) -> Path:
    """MiniLM with a fresh two-class head, saved once (predict needs a classifier; its weights do not matter)."""
    import bertscope
    folder = tmp / "minilm-cls"
    model = bertscope.from_pretrained(MINILM, head="classification", num_labels=2, reinit_head=True)
    bertscope.save_pretrained(model, folder)
    bertscope.load_tokenizer(MINILM).save(folder)
    return folder


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    main()
