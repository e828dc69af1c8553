"""Shadow sets kept in a ConfigMap (``serve --shadow-configmap NAMESPACE/NAME``), watched through the
Kubernetes API: one set per key, following edits without a restart.

The API server is ``tests/kube_emulator.py`` (real HTTP, list+watch with resourceVersions, the official
``kubernetes`` client), which serves ConfigMaps only per namespace and filtered by a ``metadata.name``
field selector, as RBAC ``resourceNames`` (deploy/base/rbac.yaml) allows; a second ConfigMap of the same
name elsewhere and another one beside it must never be read. The store is SQLite and PostgreSQL; traffic
is the bundled example's, imported. Stands in for a GitOps user keeping proposed sets in a ConfigMap.
Tests wait on the watch's condition (states handed over), never sleep.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from netpol_gen.collector.kube import api_client
from netpol_gen.collector.kube_configmap import ConfigMapWatch
from netpol_gen.service.synced_sets import ConfigMapSets
from netpol_gen.store.db import open_store
from netpol_gen.store.shadow import list_sets
from tests.cli import run_cli
from tests.kube_emulator import KubeEmulator
from tests.serving import TOKEN, free_port
from tests.test_cli_check import installed_command
from tests.test_in_force import POSTGRES, SETTINGS, WAIT, wait_listed
from tests.test_shadow import CLUSTER, OMITTED, _edge, _flows, _watch, _write

NAMESPACE, NAME = "netpol-gen", "shadow-sets"
NP = yaml.safe_dump({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", **POSTGRES})


def _configmap(data: dict[str, str], namespace: str = NAMESPACE, name: str = NAME) -> dict[str, object]:
    return {"metadata": {"name": name, "namespace": namespace}, "data": data}


def test_each_key_is_a_set_that_follows_the_configmap(kube_api: tuple[KubeEmulator, Path], store_url: str,
                                                      tmp_path: Path) -> None:
    emulator, kubeconfig = kube_api
    emulator.create("configmaps", _configmap({"postgres.yaml": NP}))
    emulator.create("configmaps", _configmap({"elsewhere": NP}, namespace="other"))
    emulator.create("configmaps", _configmap({"beside": NP}, name="other-sets"))
    store = open_store(store_url, create=True)
    sets = ConfigMapSets(store, NAMESPACE, NAME)
    watch = ConfigMapWatch(api_client(str(kubeconfig)), NAMESPACE, NAME, sets.take, SETTINGS)

    def stored() -> dict[str, str]:
        with store.reading() as conn:
            return {s.name: s.source for s in list_sets(conn)}
    try:
        watch.start()
        assert watch.wait_for(1, WAIT)
        assert stored() == {"postgres": "configmap netpol-gen/shadow-sets key postgres.yaml"}

        # the set judges what is ingested after it was taken: postgres's policy leaves the nightly job out
        assert run_cli("import", "--db", store_url, "--cluster", CLUSTER, "--flows",
                       _write(tmp_path / "flows.jsonl", _flows())).exit_code == 0
        assert [_edge(r) | {"set": "proposed"} for r in _watch("--db", store_url, "--set", "postgres")] == [OMITTED]

        # a bad value keeps that set's last state (here: none yet) and the others are taken
        emulator.update("configmaps", NAME, lambda cm: cm["data"].update({"strict": "kind: [unclosed"}),
                        namespace=NAMESPACE)
        assert watch.wait_for(2, WAIT)
        assert set(stored()) == {"postgres"} and "invalid YAML" in sets.problems["strict"]
        emulator.update("configmaps", NAME, lambda cm: cm["data"].update({"strict": NP}), namespace=NAMESPACE)
        assert watch.wait_for(3, WAIT)
        assert set(stored()) == {"postgres", "strict"} and not sets.problems

        # a key removed removes its set; the ConfigMap deleted removes them all
        emulator.update("configmaps", NAME, lambda cm: cm["data"].pop("postgres.yaml"), namespace=NAMESPACE)
        assert watch.wait_for(4, WAIT)
        assert set(stored()) == {"strict"}
        emulator.delete("configmaps", NAME, namespace=NAMESPACE)
        assert watch.wait_for(5, WAIT)
        assert stored() == {}
    finally:
        watch.stop()
        store.close()
    asked = [r for r in emulator.requests if r.resource == "configmaps"]
    assert asked and {(r.namespace, r.field_selector) for r in asked} == {(NAMESPACE, f"metadata.name={NAME}")}


def test_serve_shadow_configmap_with_a_kubeconfig_keeps_the_sets(kube_api: tuple[KubeEmulator, Path],
                                                                tmp_path: Path) -> None:
    """The command's wiring: ``serve --shadow-configmap NS/NAME --kubeconfig F`` (a real process)."""
    emulator, kubeconfig = kube_api
    emulator.create("configmaps", _configmap({"postgres.yaml": NP}))
    token = tmp_path / "token"
    token.write_text(TOKEN)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen([installed_command(), "serve", "--db", f"sqlite:///{tmp_path / 's.db'}",
                              "--listen", f"127.0.0.1:{port}", "--token-file", str(token),
                              "--shadow-configmap", f"{NAMESPACE}/{NAME}", "--kubeconfig", str(kubeconfig)],
                             stderr=subprocess.PIPE, text=True)
    try:
        assert "configmap netpol-gen/shadow-sets key postgres.yaml" in wait_listed(url, "postgres\t1 policies")
    finally:
        serve.terminate()
        serve.wait(WAIT)


@pytest.mark.parametrize("value", ["shadow-sets", "netpol-gen/", "a/b/c", "Bad/name"])
def test_serve_refuses_a_bad_configmap_name_in_one_line(value: str, tmp_path: Path) -> None:
    (tmp_path / "t").write_text(TOKEN)
    outcome = run_cli("serve", "--db", f"sqlite:///{tmp_path / 's.db'}", "--token-file", str(tmp_path / "t"),
                      "--shadow-configmap", value)
    assert outcome.exit_code == 2, outcome.output
    assert outcome.stderr.strip().splitlines() == [
        f"netpol-gen: error: --shadow-configmap {value}: expected NAMESPACE/NAME of a ConfigMap"]
