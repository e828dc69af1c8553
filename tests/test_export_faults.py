"""`export --output-dir` under real faults: a set is written whole or not at all, files get the umask's
mode, and the exit status says when output was lost.

The faults are real, not mocks: a target name taken by a directory, a read-only and a full
filesystem (tmpfs mounts, as root; skipped where mounting is not allowed), pipes whose reader has
gone (the read end closed before the command runs, which is what `2>&1 | true` leaves behind once
`true` exited), and /dev/full. The installed console script runs as a user's shell would run it."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli import run_cli
from tests.test_cli_check import installed_command

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "ticket-booking"
FILES = ["booking.yaml", "ingress-nginx.yaml", "monitoring.yaml"]


@pytest.fixture(scope="module")
def learned(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('store') / 'netpol-gen.db'}"
    code, _, err = run_cli("import", "--db", url, "--cluster", str(EXAMPLE / "cluster.yaml"),
                           "--pcap", str(EXAMPLE / "capture.pcap"))
    assert code == 0, err
    return url


def _tree(directory: Path) -> dict[str, tuple[int, bytes | None]]:
    """Every entry of ``directory``: name -> (mode, content; None for a directory)."""
    return {p.name: (p.stat().st_mode, None if p.is_dir() else p.read_bytes()) for p in directory.iterdir()}


@pytest.fixture
def old_set(learned: str, tmp_path: Path) -> Path:
    """A directory holding a previous export (ingress only, so every file differs from a full export)."""
    out = tmp_path / "policies"
    assert run_cli("export", "--db", learned, "--ingress-only", "--output-dir", str(out)).exit_code == 0
    assert sorted(p.name for p in out.iterdir()) == FILES
    return out


@pytest.mark.parametrize("taken", FILES)
def test_a_target_that_cannot_be_replaced_leaves_the_old_set_whole(learned: str, old_set: Path, taken: str) -> None:
    # a directory where a policy file should go: os.replace fails on that one file, whichever place it
    # has in the swap order; the files swapped before it must be put back
    (old_set / taken).unlink()
    (old_set / taken).mkdir()
    before = _tree(old_set)
    code, out, err = run_cli("export", "--db", learned, "--output-dir", str(old_set))
    assert code == 2 and out == ""
    assert err.splitlines() == [f"netpol-gen: error: {old_set / taken}: cannot write: Is a directory; "
                                "nothing written, the directory is as it was"]
    assert _tree(old_set) == before  # same names, modes and bytes: no mixed set, no temporary file left


def _mount_tmpfs(where: Path, options: str) -> None:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True,
                          text=True, check=False)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")


@pytest.fixture
def mount_point(tmp_path: Path) -> Iterator[Path]:
    where = tmp_path / "mnt"
    where.mkdir()
    yield where
    subprocess.run(["umount", str(where)], capture_output=True, check=False)


def test_a_read_only_filesystem_is_refused_naming_the_first_file(learned: str, old_set: Path,
                                                                  mount_point: Path) -> None:
    _mount_tmpfs(mount_point, "size=1m")
    for name in FILES:
        (mount_point / name).write_bytes((old_set / name).read_bytes())
    subprocess.run(["mount", "-o", "remount,ro", str(mount_point)], check=True)
    before = _tree(mount_point)
    code, _, err = run_cli("export", "--db", learned, "--output-dir", str(mount_point))
    assert code == 2
    assert len(err.splitlines()) == 1 and "Read-only file system; nothing written" in err
    assert err.startswith(f"netpol-gen: error: {mount_point}/") and any(name in err for name in FILES)
    assert _tree(mount_point) == before


def test_a_full_filesystem_stops_before_anything_is_replaced(learned: str, mount_point: Path) -> None:
    # 12 KiB: room for the first file or two of the ~13 KB set, never for all of them
    _mount_tmpfs(mount_point, "size=12k")
    (mount_point / "README").write_text("kept\n")
    code, _, err = run_cli("export", "--db", learned, "--output-dir", str(mount_point))
    assert code == 2
    assert len(err.splitlines()) == 1 and "No space left on device; nothing written" in err
    assert any(f"{mount_point / name}:" in err for name in FILES)
    assert sorted(os.listdir(mount_point)) == ["README"]  # staged files removed


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_exported_files_get_the_umasks_mode(learned: str, tmp_path: Path, umask: int, mode: int) -> None:
    previous = os.umask(umask)
    try:
        code, _, err = run_cli("export", "--db", learned, "--output-dir", str(tmp_path / "out"))
    finally:
        os.umask(previous)
    assert code == 0, err
    assert {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "out").iterdir()} == dict.fromkeys(FILES, mode)


def _closed_pipe() -> int:
    """The write end of a pipe whose reader is gone."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def test_stderr_reader_gone_still_writes_the_files_and_exits_non_zero(learned: str, tmp_path: Path) -> None:
    # `export --output-dir D 2>&1 | true`: the report cannot be delivered, the files must be written anyway
    pipe = _closed_pipe()
    try:
        done = subprocess.run([installed_command(), "export", "--db", learned, "--output-dir", str(tmp_path / "out")],
                              stdout=pipe, stderr=pipe, timeout=60, check=False)
    finally:
        os.close(pipe)
    assert done.returncode == 141
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == FILES


def test_stdout_reader_gone_is_non_zero_and_said_once(learned: str) -> None:
    # `export | head -1` once head has exited: the policies were not delivered
    pipe = _closed_pipe()
    try:
        done = subprocess.run([installed_command(), "export", "--db", learned], stdout=pipe, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False)
    finally:
        os.close(pipe)
    assert done.returncode == 141
    assert done.stderr.splitlines() == ["netpol-gen: error: output not delivered: its reader closed the pipe"]


def test_stdout_on_a_full_device_is_one_line_and_exit_2(learned: str) -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([installed_command(), "export", "--db", learned], stdout=full, stderr=subprocess.PIPE,
                              text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["netpol-gen: error: cannot write the output: No space left on device"]
