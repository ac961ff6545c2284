"""The one exception type genlab raises for problems a user can fix.

The CLI turns a GenlabError into a single line on stderr and exit status 2, so every message
here should say what is wrong and what to do, in one sentence, without a traceback.
"""


class GenlabError(Exception):
    """A user-facing error: bad input data, a bad option, an unusable run folder."""

    exit_status = 2  # the CLI's exit status for it


class Interrupted(GenlabError):
    """Training stopped by Ctrl-C or SIGTERM after saving its checkpoint. The CLI exits with
    128 + the signal's number, as shells expect (130 for Ctrl-C), not the usage error's 2."""

    def __init__(self, message: str, exit_status: int = 130):
        super().__init__(message)
        self.exit_status = exit_status

    def __reduce__(self):  # a lab worker's error crosses to the lab process pickled
        return type(self), (str(self), self.exit_status)


class DataError(GenlabError):
    """A dataset file is missing, truncated or malformed."""


class RunFolderError(GenlabError):
    """A run folder (config, checkpoint, weights) is missing, corrupt or incompatible."""


class TrainingDiverged(GenlabError):
    """A loss or gradient became non-finite; the last good checkpoint is kept."""


def one_line(text: str) -> str:
    """`text` with its control characters escaped (a newline in a file name or in a library's
    message would otherwise split the one-line error)."""
    return "".join(repr(c)[1:-1] if c.isascii() and not c.isprintable() else c for c in str(text))
