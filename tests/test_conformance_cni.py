"""The evaluator on Cilium, Calico and ClusterNetworkPolicy objects: truth tables in
``tests/conformance_cni/`` written from the upstream references (Cilium: docs.cilium.io security/policy
language; Calico: docs.tigera.io NetworkPolicy / GlobalNetworkPolicy reference; ClusterNetworkPolicy:
the v1alpha2 API text and the scenarios of network-policy-api's conformance tests; the v1alpha1
AdminNetworkPolicy/BaselineAdminNetworkPolicy tables are the v1alpha2 ones written in v1alpha1), in the format
and on the model cluster of ``tests/conformance/`` (see its README; ``dns`` lists answers naming
external addresses). The semantics the front-ends promise are in the docstrings of
evaluator/cilium.py, evaluator/calico.py and evaluator/cluster_network_policy.py."""

from __future__ import annotations

from pathlib import Path

import pytest

from netpol_gen.errors import PolicyError
from netpol_gen.evaluator import Evaluator, load_policies, parse_any, policy_notes
from netpol_gen.model import Cluster, Flow, Namespace, Pod, Workload
from netpol_gen.model.dns import DnsAnswerSeen
from tests.test_conformance import check_scenario

SCENARIO_FILES = sorted((Path(__file__).parent / "conformance_cni").glob("*.yaml"))


@pytest.mark.parametrize("path", SCENARIO_FILES, ids=lambda path: path.stem)
def test_evaluator_agrees_with_cni_truth_table(path: Path) -> None:
    check_scenario(path)


def test_suite_covers_both_cnis() -> None:
    names = [p.stem for p in SCENARIO_FILES]
    assert sum(n.startswith("cilium-") for n in names) >= 10 and sum(n.startswith("calico-") for n in names) >= 6
    assert sum(n.startswith("cnp-") for n in names) >= 8
    assert sum(n.startswith(("anp-", "banp-")) for n in names) >= 8  # v1alpha1 twins of the cnp- tables


def test_v1alpha1_and_v1alpha2_policies_sit_side_by_side() -> None:
    """An AdminNetworkPolicy and a ClusterNetworkPolicy of one name are two policies (as two
    resources of the API server), not a duplicate."""
    spec = {"priority": 1, "subject": {"namespaces": {}}}
    anp = parse_any({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy",
                     "metadata": {"name": "p"}, "spec": spec})
    cnp = parse_any({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy",
                     "metadata": {"name": "p"}, "spec": {**spec, "tier": "Admin"}})
    assert (anp.key, cnp.key) == ("anp:p", "cnp:p")


def _fqdn_policy() -> dict[str, object]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "fqdn", "namespace": "x"},
            "spec": {"endpointSelector": {}, "egress": [{"toFQDNs": [{"matchName": "api.example.com"}]}]}}


def test_to_fqdns_is_judged_with_the_answers_valid_at_the_flow_time() -> None:
    """An address stands for a name from the first answer to TTL plus the grace after the last one
    (as the ingest names destinations); a flow after that, or before, is not admitted by the name."""
    pod = Pod("x", "a", "u", {"pod": "a"}, ("10.244.1.1",), Workload("Pod", "a"), node_name="node-1")
    answer = DnsAnswerSeen("API.example.com.", "203.0.113.5", 60, 1000.0, 2000.0)  # case and root dot as seen
    cluster = Cluster.build(namespaces=[Namespace("x", {})], pods=[pod], dns=[answer])
    evaluator = Evaluator(cluster, [parse_any(_fqdn_policy())])
    _, end = answer.window
    verdicts = {ts: evaluator.judge_flow(Flow("10.244.1.1", "203.0.113.5", 443, "TCP", ts=ts)).allowed
                for ts in (990.0, 1500.0, end - 1, end + 1)}
    assert verdicts == {990.0: False, 1500.0: True, end - 1: True, end + 1: False}


def test_unjudged_rule_kinds_are_reported_once(tmp_path: Path) -> None:
    """Two rules with L7 HTTP in one policy, read from a file: one note, naming the policy."""
    path = tmp_path / "l7.yaml"
    path.write_text("""
apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata: {name: l7, namespace: x}
spec:
  endpointSelector: {}
  ingress:
  - toPorts: [{ports: [{port: "80", protocol: TCP}], rules: {http: [{method: GET}]}}]
  - toPorts: [{ports: [{port: "81", protocol: TCP}], rules: {http: [{method: POST}]}}]
""")
    notes = policy_notes(load_policies([str(path)]))
    assert notes == ["CiliumNetworkPolicy x/l7: L7 rules.http judged at L4 only (the port is allowed, requests are "
                     "not checked)"]


@pytest.mark.parametrize(("obj", "message"), [
    ({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "s", "namespace": "x"},
      "spec": {"endpointSelector": {}, "egress": [{"toServices": [{"k8sService": {"serviceName": "a"}}]}]}},
     "toServices not supported"),
    ({"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy", "metadata": {"name": "e", "namespace": "x"},
      "spec": {"endpointSelector": {}, "egress": [{"toEntities": ["everything"]}]}},
     "unknown entity everything"),
    ({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "t", "namespace": "x"},
      "spec": {"tier": "security", "selector": "all()"}}, "only the default tier"),
    ({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "p", "namespace": "x"},
      "spec": {"selector": "app == 'a", "ingress": [{"action": "Allow"}]}}, "cannot parse selector"),
    ({"apiVersion": "projectcalico.org/v3", "kind": "NetworkPolicy", "metadata": {"name": "q", "namespace": "x"},
      "spec": {"selector": "all()", "ingress": [{"action": "Allow", "destination": {"ports": [80]}}]}},
     "ports need protocol"),
    ({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
      "metadata": {"name": "mine"}, "spec": {"subject": {"namespaces": {}}}},
     "BaselineAdminNetworkPolicy mine: metadata.name must be 'default'"),
    ({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "BaselineAdminNetworkPolicy",
      "metadata": {"name": "default"},
      "spec": {"subject": {"namespaces": {}}, "ingress": [{"action": "Pass", "from": [{"namespaces": {}}]}]}},
     "spec.ingress[0].action: 'Pass' is not one of Allow, Deny"),
    ({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": "a"},
      "spec": {"priority": 1, "subject": {"namespaces": {}},
               "egress": [{"action": "Allow", "to": [{"namespaces": {}}],
                           "ports": [{"portNumber": {"protocol": "ICMP", "port": 1}}]}]}},
     "AdminNetworkPolicy a: spec.egress[0].ports[0].portNumber.protocol: 'ICMP' is not one of TCP, UDP, SCTP"),
    ({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": "a"},
      "spec": {"priority": 1, "subject": {"namespaces": {}},
               "ingress": [{"action": "Allow", "from": [{"namespaces": {}}],
                            "ports": [{"portRange": {"start": 80}}]}]}},
     "spec.ingress[0].ports[0].portRange.end: None is not a port number 1-65535"),
    ({"apiVersion": "policy.networking.k8s.io/v1alpha1", "kind": "AdminNetworkPolicy", "metadata": {"name": "a"},
      "spec": {"priority": 1001, "subject": {"namespaces": {}}}}, "spec.priority: 1001 must be an integer 0-1000"),
    ({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy", "metadata": {"name": "d"},
      "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
               "egress": [{"action": "Deny", "to": [{"domainNames": ["a.example"]}]}]}},
     "domainNames is only supported in Accept rules"),
    ({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy", "metadata": {"name": "n"},
      "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
               "ingress": [{"action": "Deny", "from": [{"namespaces": {}}],
                            "protocols": [{"tcp": {"destinationPort": {"number": "abc"}}}]}]}},
     "spec.ingress[0].protocols[0].tcp.destinationPort.number: 'abc' must be between 1 and 65535"),
    ({"apiVersion": "policy.networking.k8s.io/v1alpha2", "kind": "ClusterNetworkPolicy", "metadata": {"name": "r"},
      "spec": {"tier": "Admin", "priority": 1, "subject": {"namespaces": {}},
               "ingress": [{"action": "Deny", "from": [{"namespaces": {}}],
                            "protocols": [{"udp": {"destinationPort": 53}}]}]}},
     "spec.ingress[0].protocols[0].udp.destinationPort: expected an object with number or range, got 53"),
])
def test_what_cannot_be_judged_is_refused_with_the_policy_named(obj: dict[str, object], message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_any(obj, where="p.yaml:doc 1")
    assert message in str(caught.value) and "p.yaml:doc 1" in str(caught.value)
