from obsv.cli import entry

entry()
