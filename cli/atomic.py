"""Write output files atomically: a reader (kubectl, a GitOps controller) sees the old file or the
new one, never half of one, and a failure leaves nothing half-written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

from netpol_gen.errors import InputError


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Write every file to a temporary name first, then rename each into place."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        staged: list[tuple[str, Path]] = []
        try:
            for name, text in files.items():
                fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
                with os.fdopen(fd, "w", encoding="utf-8") as handle:
                    handle.write(text)
                    handle.flush()
                    os.fsync(handle.fileno())
                staged.append((tmp, directory / name))
            for tmp, final in staged:
                os.replace(tmp, final)
        finally:
            for tmp, _ in staged:
                Path(tmp).unlink(missing_ok=True)
    except OSError as exc:
        raise InputError(f"cannot write: {exc.strerror}", where=str(directory)) from None
