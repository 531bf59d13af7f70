"""User-facing errors: the CLI prints them as one line and exits with status 2."""


class BenchError(Exception):
    """Bad input (unknown name, malformed config, corrupt file): the message says what and where."""
