"""The one training engine (loop.py) with its optimizer (optim.py), run folder and resume contract (state.py),
torchrun start-up (distributed.py) and curves (plot.py)."""

from .loop import RESUME_MAY_CHANGE, Result, Settings, fills_a_batch, freezable, train

__all__ = ["RESUME_MAY_CHANGE", "Result", "Settings", "freezable", "train"]
