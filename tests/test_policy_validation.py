"""``parse_policy`` accepts exactly what the API server accepts (``ValidateNetworkPolicy``).

A policy we accept but ``kubectl apply`` rejects would be a generated policy that never lands; one we
reject but the API server accepts would make ``check``/``diff`` refuse real clusters' policies. Each
invalid case says what the API server rejects and the words our message must contain.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from netpol_gen.errors import PolicyError
from netpol_gen.evaluator import load_policies, parse_policy

REFERENCE_POLICIES = Path(__file__).resolve().parents[2] / "shared" / "reference-policies"


def policy(spec: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    """A NetworkPolicy object named x/np unless ``metadata`` says otherwise."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": "np", "namespace": "x", **metadata},
        "spec": {"podSelector": {}, **(spec or {})},
    }


def ingress_from(*peers: dict[str, Any]) -> dict[str, Any]:
    return {"ingress": [{"from": list(peers)}]}


def ingress_ports(*ports: dict[str, Any]) -> dict[str, Any]:
    return {"ingress": [{"ports": list(ports)}]}


def pod_selector_expression(expression: dict[str, Any]) -> dict[str, Any]:
    return ingress_from({"podSelector": {"matchExpressions": [expression]}})


INVALID: list[tuple[str, dict[str, Any], str]] = [
    ("cidr-prefix-too-long", policy(ingress_from({"ipBlock": {"cidr": "10.0.0.0/33"}})), "not a valid CIDR"),
    ("cidr-not-an-address", policy(ingress_from({"ipBlock": {"cidr": "10.0.0.300/24"}})), "not a valid CIDR"),
    ("cidr-without-prefix", policy(ingress_from({"ipBlock": {"cidr": "10.0.0.1"}})), "not a CIDR"),
    ("ipblock-without-cidr", policy(ingress_from({"ipBlock": {"except": ["10.0.0.0/24"]}})), "cidr is required"),
    (
        "except-outside-cidr",
        policy(ingress_from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}})),
        "strictly within cidr",
    ),
    (
        "except-equal-to-cidr",
        policy(ingress_from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}})),
        "strictly within cidr",
    ),
    (
        "except-other-family",
        policy(ingress_from({"ipBlock": {"cidr": "10.0.0.0/16", "except": ["fd00::/64"]}})),
        "strictly within cidr",
    ),
    ("end-port-below-port", policy(ingress_ports({"port": 81, "endPort": 80})), "greater than or equal"),
    ("end-port-with-named-port", policy(ingress_ports({"port": "web", "endPort": 90})), "named port"),
    ("end-port-without-port", policy(ingress_ports({"endPort": 90})), "without port"),
    ("end-port-out-of-range", policy(ingress_ports({"port": 80, "endPort": 65536})), "between 1 and 65535"),
    ("port-zero", policy(ingress_ports({"port": 0})), "between 1 and 65535"),
    ("port-too-large", policy(ingress_ports({"port": 65536})), "between 1 and 65535"),
    ("protocol-unknown", policy(ingress_ports({"protocol": "ICMP", "port": 80})), "is not one of TCP, UDP, SCTP"),
    ("protocol-lowercase", policy(ingress_ports({"protocol": "tcp", "port": 80})), "is not one of TCP, UDP, SCTP"),
    ("port-name-uppercase", policy(ingress_ports({"port": "Web"})), "not a valid port name"),
    ("port-name-too-long", policy(ingress_ports({"port": "abcdefghijklmnop"})), "not a valid port name"),
    ("port-name-double-hyphen", policy(ingress_ports({"port": "web--a"})), "not a valid port name"),
    (
        "operator-unknown",
        policy(pod_selector_expression({"key": "app", "operator": "Equals", "values": ["a"]})),
        "is not one of In, NotIn, Exists, DoesNotExist",
    ),
    (
        "in-without-values",
        policy(pod_selector_expression({"key": "app", "operator": "In", "values": []})),
        "needs at least one value",
    ),
    (
        "not-in-without-values",
        policy(pod_selector_expression({"key": "app", "operator": "NotIn"})),
        "needs at least one value",
    ),
    (
        "exists-with-values",
        policy(pod_selector_expression({"key": "app", "operator": "Exists", "values": ["a"]})),
        "takes no values",
    ),
    (
        "does-not-exist-with-values",
        policy(pod_selector_expression({"key": "app", "operator": "DoesNotExist", "values": ["a"]})),
        "takes no values",
    ),
    ("label-key-leading-hyphen", policy({"podSelector": {"matchLabels": {"-app": "a"}}}), "label key '-app'"),
    ("label-key-two-slashes", policy({"podSelector": {"matchLabels": {"a/b/c": "a"}}}), "more than one '/'"),
    ("label-key-empty-prefix", policy({"podSelector": {"matchLabels": {"/app": "a"}}}), "invalid prefix"),
    (
        "label-key-uppercase-prefix",
        policy({"podSelector": {"matchLabels": {"Example.com/app": "a"}}}),
        "invalid prefix",
    ),
    ("label-key-name-too-long", policy({"podSelector": {"matchLabels": {"a" * 64: "a"}}}), "name part"),
    (
        "label-key-in-expression",
        policy(pod_selector_expression({"key": "bad key", "operator": "Exists"})),
        "label key 'bad key'",
    ),
    ("label-value-space", policy({"podSelector": {"matchLabels": {"app": "has space"}}}), "label value"),
    ("label-value-too-long", policy({"podSelector": {"matchLabels": {"app": "a" * 64}}}), "label value"),
    (
        "label-value-trailing-dot",
        policy(pod_selector_expression({"key": "app", "operator": "In", "values": ["a."]})),
        "label value 'a.'",
    ),
    ("label-value-not-a-string", policy({"podSelector": {"matchLabels": {"app": 1}}}), "must be a string"),
    ("name-missing", policy(name=None), "metadata.name is required"),
    ("name-uppercase", policy(name="Bad_Name"), "not a valid DNS subdomain"),
    ("name-too-long", policy(name="a" * 254), "not a valid DNS subdomain"),
    ("namespace-invalid", policy(namespace="Bad.Namespace"), "not a valid DNS label"),
    (
        "peer-ipblock-and-pod-selector",
        policy(ingress_from({"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}})),
        "both ipBlock and another peer",
    ),
    (
        "peer-ipblock-and-namespace-selector",
        policy({"egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "namespaceSelector": {}}]}]}),
        "both ipBlock and another peer",
    ),
    ("peer-empty", policy(ingress_from({})), "must specify a peer"),
    ("policy-type-unknown", policy({"policyTypes": ["Ingres"]}), "'Ingres' is not one of Ingress, Egress"),
    ("policy-types-three", policy({"policyTypes": ["Ingress", "Egress", "Ingress"]}), "more than two policyTypes"),
    ("policy-types-not-a-list", policy({"policyTypes": "Ingress"}), "must be a list"),
    ("spec-unknown-field", policy({"ingres": []}), "unknown field(s) ingres"),
    ("spec-missing", {**policy(), "spec": None}, "spec is required"),
    ("kind-wrong", {**policy(), "kind": "Service"}, "not a networking.k8s.io/v1 NetworkPolicy"),
]


@pytest.mark.parametrize(("obj", "fragment"), [case[1:] for case in INVALID], ids=[case[0] for case in INVALID])
def test_policy_the_api_server_rejects_is_rejected_with_a_clear_message(obj: dict[str, Any], fragment: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(obj, where="case.yaml:doc 1")
    assert fragment in str(raised.value)
    assert str(raised.value).startswith("case.yaml:doc 1: policy "), "the message names where and which policy"


def test_quoted_numeric_port_is_rejected_as_a_port_name_like_the_api_server() -> None:
    # IntOrString keeps "80" a string, and a port name needs at least one letter
    with pytest.raises(PolicyError, match="not a valid port name"):
        parse_policy(policy(ingress_ports({"port": "80"})))


def test_non_canonical_cidr_is_accepted_as_its_network() -> None:
    parsed = parse_policy(policy(ingress_from({"ipBlock": {"cidr": "10.0.0.1/24", "except": ["10.0.0.128/25"]}})))
    block = parsed.ingress[0].peers[0].ip_block
    assert block is not None and block.cidr == ipaddress.ip_network("10.0.0.0/24")


def test_ipv6_ip_block_with_except_is_accepted() -> None:
    parsed = parse_policy(policy(ingress_from({"ipBlock": {"cidr": "fd00::/48", "except": ["fd00:0:0:1::/64"]}})))
    block = parsed.ingress[0].peers[0].ip_block
    assert block is not None and block.excepts == (ipaddress.ip_network("fd00:0:0:1::/64"),)


def test_repeated_policy_type_is_accepted_as_the_api_server_counts_entries() -> None:
    assert parse_policy(policy({"policyTypes": ["Ingress", "Ingress"]})).policy_types == {"Ingress"}


@pytest.mark.parametrize(
    "spec",
    [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "web", "tier": ""}}},
        ingress_ports({"port": 80, "endPort": 80}, {"port": 65535, "protocol": "SCTP"}, {"port": "http-alt"}),
        ingress_ports({}),
        pod_selector_expression({"key": "env", "operator": "NotIn", "values": ["prod", "staging"]}),
        {"ingress": [{}], "egress": [{"to": [{"namespaceSelector": {}, "podSelector": {}}]}]},
        {"policyTypes": []},
    ],
    ids=["prefixed-key-empty-value", "port-edges", "empty-port", "not-in", "allow-all-both", "empty-policy-types"],
)
def test_valid_edge_case_is_accepted(spec: dict[str, Any]) -> None:
    parse_policy(policy(spec))


def test_namespace_defaults_when_metadata_has_none() -> None:
    obj = policy()
    del obj["metadata"]["namespace"]
    assert parse_policy(obj, default_namespace="team-a").key == "team-a/np"


def reference_files() -> list[Path]:
    return sorted(REFERENCE_POLICIES.glob("*.yaml")) if REFERENCE_POLICIES.is_dir() else []


@pytest.mark.parametrize("path", reference_files(), ids=lambda path: path.name)
def test_hand_written_reference_policies_parse(path: Path) -> None:
    assert load_policies([str(path)]), f"{path} holds no NetworkPolicy"


def test_reference_policies_are_present() -> None:
    """CI clones have ../shared beside the repo; elsewhere say why the reference files were not checked."""
    if not reference_files():
        reason = f"no reference policies at {REFERENCE_POLICIES}: hand-written policies not checked"
        print(reason)
        pytest.skip(reason)
