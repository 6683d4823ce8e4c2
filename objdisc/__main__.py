from objdisc.cli import app

app(prog_name="objdisc")
