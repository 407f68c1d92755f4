"""Errors whose message is meant for the user: command-line tools print them as one line."""


class UserError(Exception):
    """Bad input from the user. The message names the problem and what to do."""


class ModelError(UserError):
    """The MJCF file is missing, malformed, or not a usable Go2."""


class ConfigError(UserError):
    """A configuration value is out of its sane range."""
