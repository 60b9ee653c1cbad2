"""``python -m dermlens.cli``: the ``dermlens`` command."""
from dermlens.cli import app

app(prog_name="dermlens")
