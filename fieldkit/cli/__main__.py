from fieldkit.cli import app

app()
