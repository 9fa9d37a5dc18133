"""Run the command line as `python -m conveyor`."""

from .cli import main

main(prog_name="conveyor")
