"""Errors that mean "the user asked for something invalid" (bad config, unknown env, unreadable file).

The CLI prints these as one line and exits with code 2; anything else is a bug and keeps its traceback.
"""


class ConfigError(ValueError):
    """Invalid user input: a value out of range, an unknown name, a missing or corrupt file."""


def check(condition: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
