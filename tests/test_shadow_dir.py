"""A shadow set kept in step with a directory (``serve --shadow-dir NAME=DIR``): a GitOps user edits the
files, the set follows without a restart; a bad commit keeps the last good set and says why in one line.

The directory is laid out as the kubelet mounts a ConfigMap (files that are symlinks into ``..data``,
which is swapped at once), so the same test stands in for a checkout and for a mounted ConfigMap. The
store is SQLite and PostgreSQL; traffic is the bundled example's, imported as ``import`` does.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from netpol_gen.service.synced_sets import DirectoryWatch
from netpol_gen.store.db import open_store
from tests.cli import run_cli
from tests.serving import TOKEN, free_port, wait_ready
from tests.test_cli_check import installed_command
from tests.test_in_force import POSTGRES
from tests.test_shadow import CLUSTER, OMITTED, _edge, _flows, _is_omitted, _watch, _write

WAIT = 30.0  # a deadline, not a delay


def _np(spec: dict[str, object]) -> str:
    import yaml
    return yaml.safe_dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **spec})


class ConfigMapVolume:
    """A directory as the kubelet writes a ConfigMap volume: ``..data`` -> a timestamped dir, swapped at once."""

    def __init__(self, root: Path) -> None:
        self.root, self._n = root, 0
        root.mkdir()

    def publish(self, files: dict[str, str]) -> None:
        self._n += 1
        version = self.root / f"..2026_12_07_{self._n:04d}"
        version.mkdir()
        for name, text in files.items():
            (version / name).write_text(text)
        (self.root / "..data_tmp").symlink_to(version.name)
        os.replace(self.root / "..data_tmp", self.root / "..data")
        for name in files:
            if not (self.root / name).is_symlink():
                (self.root / name).symlink_to(f"..data/{name}")
        for name in os.listdir(self.root):
            if (self.root / name).is_symlink() and name not in files and not name.startswith(".."):
                (self.root / name).unlink()
        for old in self.root.glob("..2026_*"):
            if old != version:
                shutil.rmtree(old)


def test_the_set_follows_the_directory_and_a_bad_commit_keeps_the_last_good(store_url: str, tmp_path: Path) -> None:
    volume = ConfigMapVolume(tmp_path / "proposed")
    volume.publish({"postgres.yaml": _np(POSTGRES)})
    store = open_store(store_url)
    try:
        watch = DirectoryWatch(store, "proposed", str(volume.root))
        assert watch.look() is True and watch.problem is None
        assert watch.look() is False  # nothing changed, nothing written
        flows = _write(tmp_path / "all.jsonl", _flows())
        assert run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows", flows).exit_code == 0
        assert [_edge(r) for r in _watch("--db", store_url, "--set", "proposed")] == [OMITTED]

        # a commit with a broken file: refused whole, the set stays as it was, the reason names the file
        volume.publish({"postgres.yaml": _np(POSTGRES), "bad.yaml": "kind: NetworkPolicy\nspec: [\n"})
        assert watch.look() is False
        assert watch.problem is not None and "bad.yaml" in watch.problem and "\n" not in watch.problem
        assert run_cli("shadow", "list", "--db", store_url).stdout.split("\t")[1] == "1 policies"

        # the fix lets the job in: the set follows, keeps what it denied, and denies nothing new
        allowed = {**POSTGRES, "spec": {**POSTGRES["spec"], "ingress": [{}]}}  # type: ignore[dict-item]
        volume.publish({"postgres.yaml": _np(allowed)})
        assert watch.look() is True and watch.problem is None
        later = [replace(f, ts=(f.ts or 0.0) + 60) for f in _flows() if _is_omitted(f)]
        assert run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows",
                       _write(tmp_path / "later.jsonl", later)).exit_code == 0
        assert [r["connections"] for r in _watch("--db", store_url, "--set", "proposed")] == [1]
    finally:
        store.close()


def test_serve_shadow_dir_picks_up_an_edit_without_a_restart(tmp_path: Path) -> None:
    """The command's wiring: ``serve --shadow-dir`` (a real process) reads the directory again by itself."""
    volume = ConfigMapVolume(tmp_path / "proposed")
    volume.publish({"postgres.yaml": _np(POSTGRES)})
    token = tmp_path / "token"
    token.write_text(TOKEN)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([installed_command(), "serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--listen",
                              f"127.0.0.1:{port}", "--token-file", str(token), "--shadow-dir",
                              f"proposed={volume.root}", "--shadow-every", "0.1"], stderr=subprocess.PIPE, text=True)
    try:
        wait_ready(url)
        assert _listed(url).startswith("proposed\t1 policies")
        redis = {"metadata": {"name": "redis", "namespace": "booking"}, "spec": {"podSelector": {}}}
        volume.publish({"postgres.yaml": _np(POSTGRES), "redis.yaml": _np(redis)})
        deadline = time.monotonic() + WAIT
        while not _listed(url).startswith("proposed\t2 policies"):
            assert time.monotonic() < deadline, _listed(url)
            time.sleep(0.05)  # polling interval, not synchronisation
    finally:
        serve.terminate()
        serve.wait(10)


def _listed(url: str) -> str:
    return run_cli("shadow", "list", "--server", url, "--token", TOKEN).stdout


@pytest.mark.parametrize("value, message", [("proposed", "NAME=DIR"), ("Bad_Name=.", "shadow set"),
                                            ("p=/nonexistent", "not a directory"), ("p={bad}", "bad.yaml")])
def test_serve_refuses_a_bad_shadow_dir_in_one_line(value: str, message: str, tmp_path: Path) -> None:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "bad.yaml").write_text("kind: NetworkPolicy\nspec: [\n")
    (tmp_path / "token").write_text(TOKEN)
    code, out, err = run_cli("serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--token-file",
                             str(tmp_path / "token"), "--shadow-dir", value.format(bad=tmp_path / "bad"))
    assert code == 2 and out == "" and message in err and "Traceback" not in err and len(err.splitlines()) == 1, err
