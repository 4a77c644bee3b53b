"""`cell`: the command line of Cell (SPEC §6), the one layer that knows typer.

main.py        the `cell` app: every command group mounted, CellError as one line
options.py     the options and consoles every command group shares
localcell.py   up, down, status, kubeconfig, build
students.py    cell students add/list/remove
experience.py  cell experience apply/list
grade.py       cell grade
why.py, top.py cell why, cell top
cloud.py       cell cloud check
sim.py         cell sim (the Fauxmaster)
"""

from cell.cli.main import app, main

__all__ = ["app", "main"]
