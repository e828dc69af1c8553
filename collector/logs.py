"""Collector logs: one line per event, as text for people or JSON for a log pipeline.

Events carry their values in ``extra={"fields": {...}}``; the text form appends them as
``key=value``, the JSON form as keys of the object, so both say the same thing.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Any


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname.lower(),
                                 "msg": record.getMessage(), **getattr(record, "fields", {})}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class _TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        fields = getattr(record, "fields", {})
        line = super().format(record)
        return " ".join([line, *(f"{k}={v}" for k, v in fields.items())])


def configure(fmt: str, level: int = logging.INFO) -> None:
    """Send the ``netpol_gen`` loggers to stderr in ``fmt`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else _TextFormatter())
    logger = logging.getLogger("netpol_gen")
    logger.handlers[:] = [handler]
    logger.setLevel(level)
    logger.propagate = False
