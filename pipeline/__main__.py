"""`python -m pipeline` runs the convbench CLI (torchrun and tests use this form)."""

from pipeline.cli import main

main()
