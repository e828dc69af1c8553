"""Policy-by-policy diff on hand-written policies of public apps (../shared/reference-policies).

sock-shop.fixed.yaml is sock-shop.yaml plus one policy, session-db-access; every file compared with
itself is unchanged, and the canonical form is a fixed point (canonicalising it again changes nothing).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from netpol_gen.evaluator.policy_diff import Change, diff_policy_sets, load_policy_documents, policy_documents
from netpol_gen.model.documents import Document

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference-policies"


@pytest.fixture(scope="module")
def reference() -> Path:
    if not REFERENCE.is_dir():
        reason = f"reference policies not found at {REFERENCE} (../shared is missing)"
        print(reason)
        pytest.skip(reason)
    return REFERENCE


def test_the_fixed_sock_shop_adds_exactly_session_db_access(reference: Path) -> None:
    before = load_policy_documents([str(reference / "sock-shop.yaml")])
    after = load_policy_documents([str(reference / "sock-shop.fixed.yaml")])
    result = diff_policy_sets(before, after)
    assert result.counts() == {"added": 1, "removed": 0, "changed": 0, "unchanged": len(before)}
    [added] = result.of(Change.ADDED)
    assert added.key == "sock-shop/session-db-access"
    header = ["--- /dev/null", "+++ b/sock-shop/session-db-access", "@@ -0,0 +1,19 @@"]  # 19 canonical lines
    assert added.diff.splitlines()[:3] == header
    assert "+          name: front-end" in added.diff.splitlines()
    reverse = diff_policy_sets(after, before)
    assert [c.key for c in reverse.of(Change.REMOVED)] == ["sock-shop/session-db-access"]


@pytest.mark.parametrize("name", ["argocd", "calico-stars", "cilium-starwars", "kube-prometheus",
                                  "online-boutique", "sock-shop"])
def test_each_reference_set_against_itself_is_unchanged_and_canonical_is_a_fixed_point(
    reference: Path, name: str
) -> None:
    documents = load_policy_documents([str(reference / f"{name}.yaml")])
    assert documents
    result = diff_policy_sets(documents, documents)
    assert not result.has_changes and len(result.of(Change.UNCHANGED)) == len(documents)
    again = policy_documents(Document(f"canonical {d.key}", yaml.safe_load(d.to_yaml())) for d in documents)
    assert [d.obj for d in again] == [d.obj for d in documents]
