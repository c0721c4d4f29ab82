"""A request the scheduler turns down, with the status the API answers it with."""

from __future__ import annotations

from corral_libs.contracts.messages import Failure


def failure(status: int, message: str) -> Failure:
    return Failure(status=status, message=message)


class Refused(Exception):
    """A request that cannot be done, with the status the API answers it with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.failure = failure(status, message)
