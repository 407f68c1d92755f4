"""Errors whose message is meant for the user: command-line tools print them as one line."""
import argparse


class UserError(Exception):
    """Bad input from the user. The message names the problem and what to do."""


class ModelError(UserError):
    """The MJCF file is missing, malformed, or not a usable Go2."""


class ConfigError(UserError):
    """A configuration value is out of its sane range."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can span many lines)."""
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def command_name(script: str) -> str:
    """The name a command goes by in its messages: the installed go2-* name it was started as, else
    its script's file name (python train.py)."""
    import os
    import sys
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name.startswith("go2-") else script


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage block), like every other error of the tools."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def run(prog: str, fn) -> int:
    """The commands' tail: fn() returns the exit code; a UserError becomes one line on stderr and exit 2."""
    import sys
    try:
        return fn()
    except UserError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
