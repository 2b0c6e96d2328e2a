"""The one training engine (loop.py) with its optimizer (optim.py), run folder and resume contract (state.py),
torchrun start-up (distributed.py) and curves (plot.py)."""

from .loop import RESUME_MAY_CHANGE, Result, Settings, check_stop_after, fills_a_batch, freezable, settings_from, train

__all__ = ["RESUME_MAY_CHANGE", "Result", "Settings", "check_stop_after", "fills_a_batch", "freezable", "settings_from",
           "train"]
