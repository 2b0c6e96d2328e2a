"""Loss and evaluation curves of a run as a picture (needs matplotlib: pip install 'bertscope[plot]')."""

from __future__ import annotations

from pathlib import Path

from ..io import atomic_write


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot_curves(history: list[dict], path: Path, title: str = "training") -> bool:
    """Draw the curves; False (and nothing written) when matplotlib is not installed."""
    if not available():
        return False
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    steps = [r for r in history if "loss" in r]
    evals = [r for r in history if any(k.startswith("eval_") for k in r)]
    loss_key = next((k for k in ("eval_mlm_loss", "eval_loss") if any(k in r for r in evals)), None)
    score_key = next((k for k in ("eval_mlm_accuracy", "eval_accuracy", "eval_f1", "eval_pearson")
                      if any(k in r for r in evals)), None)
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([r["step"] for r in steps], [r["loss"] for r in steps], label="training loss", color="#1f77b4")
    if loss_key:
        ax.plot([r["step"] for r in evals if loss_key in r], [r[loss_key] for r in evals if loss_key in r], "o--",
                label="eval loss", color="#ff7f0e")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if score_key:
        ax2 = ax.twinx()
        ax2.plot([r["step"] for r in evals if score_key in r], [r[score_key] for r in evals if score_key in r],
                 "s-", color="#2ca02c", label="eval " + score_key[5:].replace("_", " "))
        ax2.set_ylabel(score_key[5:].replace("_", " "))
        ax2.set_ylim(0, 1)
        ax2.legend(loc="upper right")
    ax.legend(loc="upper left")
    ax.set_title(title)
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=100))
    plt.close(fig)
    return True
