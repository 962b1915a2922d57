"""How the CLI fails: one line on stderr and an exit code, never a traceback."""

from __future__ import annotations

from typing import Final

from rollout.redaction import masked

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_BAD_INPUT: Final = 2


class CliError(Exception):
    """A failure to report in one line, without a traceback. The message is masked here
    (rollout.redaction): a URL it quotes never shows its credentials."""

    def __init__(self, message: str, code: int = EXIT_FAILED) -> None:
        message = masked(message)
        super().__init__(message)
        self.message = message
        self.code = code
