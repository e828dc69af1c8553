"""Write a set of output files whole or not at all.

A reader (kubectl, a GitOps controller) must never see half a file nor a policy set mixing the old
and the new export: a set where one namespace's policies are new and its peers' are old can deny
traffic that either set allows. So every file is staged under a temporary name in the target
directory (the same filesystem, so the swap is a rename), and only when all are written are they
swapped in; the file each swap replaces is kept as a hard link until the last swap succeeded, so a
failure midway puts every replaced file back. Files get the mode the umask gives (0644 by default),
as any file the user writes would, not the 0600 of :func:`tempfile.mkstemp`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path

from netpol_gen.errors import InputError


def _stage(path: Path, text: str) -> None:
    """Write ``text`` to the new file ``path`` (mode 0666 less the umask) and sync it to disk."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())


def _is_file(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


class _Swap:
    """The staged files of one set, swapped in together or, on failure, not at all."""

    def __init__(self, directory: Path, names: list[str]) -> None:
        tag = secrets.token_hex(4)
        self.targets = [directory / name for name in names]
        self.staged = [directory / f".{name}.{tag}.tmp" for name in names]
        self.kept = [directory / f".{name}.{tag}.old" for name in names]
        self.current = directory  # the file being written or swapped: the one an error names
        self.swapped = 0  # targets already replaced, in order

    def stage(self, texts: list[str]) -> None:
        for target, staged, text in zip(self.targets, self.staged, texts, strict=True):
            self.current = target
            _stage(staged, text)

    def swap_in(self) -> None:
        for target, staged, kept in zip(self.targets, self.staged, self.kept, strict=True):
            self.current = target
            if _is_file(target):
                os.link(target, kept, follow_symlinks=False)
            os.replace(staged, target)
            self.swapped += 1

    def roll_back(self) -> list[Path]:
        """Put back what each swap replaced (or remove what it created); the targets that could not be."""
        stuck = []
        for target, kept in reversed(list(zip(self.targets, self.kept, strict=True))[:self.swapped]):
            try:
                if os.path.lexists(kept):
                    os.replace(kept, target)
                else:
                    target.unlink()
            except OSError:
                stuck.append(target)
        return stuck

    def clean(self) -> None:
        for path in (*self.staged, *self.kept):
            # e.g. the directory became read-only: the error already raised says what failed
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)


def write_files(directory: Path, files: Mapping[str, str]) -> None:
    """Write ``files`` (name -> text) into ``directory`` as one set; on failure, InputError naming the
    file, with the directory as it was before."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the directory: {exc.strerror}", where=str(directory)) from None
    swap = _Swap(directory, list(files))
    try:
        swap.stage(list(files.values()))
        swap.swap_in()
    except OSError as exc:
        stuck = swap.roll_back()
        state = (f"could not restore {', '.join(map(str, stuck))}" if stuck
                 else "nothing written, the directory is as it was")
        raise InputError(f"cannot write: {exc.strerror}; {state}", where=str(swap.current)) from None
    finally:
        swap.clean()
