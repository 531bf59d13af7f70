"""User-facing errors: the CLI prints them as one line and exits with status 2 (BenchError) or 128 + the
signal's number (Interrupted)."""

import signal


class BenchError(Exception):
    """Bad input (unknown name, malformed config, corrupt file): the message says what and where."""


class Interrupted(KeyboardInterrupt):
    """A sweep (or a command) stopped by a signal: SIGINT, SIGTERM or SIGHUP. Cells in flight were abandoned and
    finished cells are saved; ``detail`` says how many and where. A KeyboardInterrupt, so that code written for
    Ctrl-C handles it too."""

    def __init__(self, signum: int, detail: str = ""):
        super().__init__(signum, detail)
        self.signum, self.detail = signum, detail

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it: 130, 143, 129."""
        return 128 + self.signum

    def __str__(self) -> str:
        name = signal.Signals(self.signum).name
        return f"interrupted by {name}" + (f": {self.detail}" if self.detail else "")
