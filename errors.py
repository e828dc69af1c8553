"""Errors for bad input: each says where (file, document or line, object) and what is wrong, once.

The CLI prints ``netpol-gen: error: <message>`` and exits 2; a traceback means a bug, never bad input.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad user input, located as precisely as we can (``file:doc N`` / ``file:line N``, object)."""

    def __init__(self, what: str, *, where: str | None = None, obj: str | None = None) -> None:
        self.what = what
        self.where = where
        self.obj = obj
        super().__init__(self.message)

    @property
    def message(self) -> str:
        parts = [p for p in (self.where, self.obj) if p]
        return ": ".join([*parts, self.what])

    def located(self, where: str) -> InputError:
        """Return a copy that names ``where`` (e.g. the file) when the raiser did not know it."""
        return type(self)(self.what, where=self.where or where, obj=self.obj)


class PolicyError(InputError):
    """A NetworkPolicy the API server would reject, or a policy file we cannot read."""


class SnapshotError(InputError):
    """A cluster snapshot (kubectl get -o yaml/json) that is malformed or incomplete."""


class FlowError(InputError):
    """A flow record (JSONL) that is malformed."""


class CaptureError(InputError):
    """A packet capture (pcap/pcapng) that is truncated, not a capture, or of an unsupported link type."""
