"""The command line: the only part of accelsim that prints or exits."""

from accelsim.cli.main import main

__all__ = ["main"]
