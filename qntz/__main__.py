from qntz.cli import entry

entry()
