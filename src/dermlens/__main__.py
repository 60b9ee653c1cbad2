from dermlens.cli import app

app(prog_name="dermlens")
