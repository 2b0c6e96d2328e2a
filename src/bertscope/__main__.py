"""`python -m bertscope`: the bertscope command (also `python -m bertscope.cli`, as torchrun takes it)."""

from .cli import main

main()
