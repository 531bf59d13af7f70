"""Stopping a sweep on a signal. SIGINT (Ctrl-C), SIGTERM (``kill``, ``timeout``, a batch scheduler's time limit, a
container stop) and SIGHUP (a closed terminal) each stop it within seconds: cells in flight are abandoned (a
resume runs them again), a cell's artifact and rows are written whole or not at all, and no process of the sweep
is left running. A signal that the sweep was started with ignored (``nohup`` ignores SIGHUP, a shell's background
job SIGINT) stays ignored."""

from __future__ import annotations

import contextlib
import signal
import threading

from bench.errors import Interrupted

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def _heeded() -> list[int]:
    """The stop signals this process does not ignore."""
    return [s for s in STOP_SIGNALS if signal.getsignal(s) is not signal.SIG_IGN]


class Stop:
    """The stop signals' handler. It records the first one and, where it is ``interrupting`` (code that may be
    abandoned at any point: a cell computing in this thread, a command's own work), raises ``Interrupted`` at
    once, as Ctrl-C raises KeyboardInterrupt. Elsewhere the code ``check``s: an exception raised from a signal
    handler inside a process pool's or a Dask client's calls can leave one of their locks held by this thread,
    and then their own threads, and with them the clean-up, wait for it for ever. Later signals are ignored, so
    that the clean-up which the first one starts (killing workers, keeping finished cells) runs to its end."""

    def __init__(self):
        self.signum = None
        self.interrupting = True

    def __call__(self, signum, frame):
        if self.signum is None:
            self.signum = signum
            if self.interrupting:
                raise Interrupted(signum)

    def check(self) -> None:
        """Raise ``Interrupted`` if a stop signal has come."""
        if self.signum is not None:
            raise Interrupted(self.signum)

    @contextlib.contextmanager
    def mode(self, interrupting: bool):
        """Within the block the handler raises at once (``interrupting``) or leaves it to ``check``; a signal
        that came while it was left to ``check`` is acted on when the block starts and when it ends."""
        before, self.interrupting = self.interrupting, interrupting
        try:
            if interrupting:
                self.check()
            yield self
        finally:
            self.interrupting = before
        if not interrupting and before:
            self.check()


@contextlib.contextmanager
def stop_on_signals():
    """Within the block, the stop signals that are not ignored are handled by a ``Stop`` (yielded), which raises
    ``Interrupted`` (a KeyboardInterrupt) in the main thread; the previous handlers are restored after it. Nested
    blocks share the outermost one's handler. Outside the main thread (only it can handle signals) nothing is
    installed and the yielded ``Stop`` never fires."""
    current = [h for h in map(signal.getsignal, STOP_SIGNALS) if isinstance(h, Stop)]
    if current:
        yield current[0]
        return
    handler = Stop()
    if threading.current_thread() is not threading.main_thread():
        yield handler
        return
    old = {s: signal.signal(s, handler) for s in _heeded()}
    try:
        yield handler
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextlib.contextmanager
def signals_deferred():
    """Hold the stop signals until the block is done, then deliver the first one to the handler in place (which
    raises Interrupted or records it in a sweep, raises KeyboardInterrupt for a plain SIGINT, ends the process for
    an unhandled SIGTERM): a cell's artifact and its rows are written together or not at all. A no-op outside the
    main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    old = {s: signal.signal(s, lambda signum, _: caught.append(signum)) for s in _heeded()}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if caught:
            signal.raise_signal(caught[0])


@contextlib.contextmanager
def signals_blocked():
    """Block the stop signals in this thread during the block; a signal that arrives meanwhile is delivered at
    its end. Processes and threads started in the block inherit the mask: a sweep's pool workers (and the pool's
    own threads) never see a stop signal, even one sent to the whole process group, so that the sweep alone
    decides, and kills them."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)
