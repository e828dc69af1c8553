"""Who may talk to ``netpol-gen serve``: bearer tokens, checked against a shared secret or, in a
cluster, with the Kubernetes TokenReview API.

Writing flows widens the policies that will be exported, so it is a privilege of its own: with
TokenReview, the users allowed to write (the collectors' ServiceAccount) and to read (the CLI's) are
listed separately, and a valid token of any other ServiceAccount in the cluster is refused. A shared
secret grants both; it is for a single-tenant setup or a test bed.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from netpol_gen.errors import InputError

TOKEN_CACHE_SIZE = 4096


class Access(Enum):
    READ = "read"
    WRITE = "write"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a user name for logs and what it may do."""

    user: str
    may: frozenset[Access]


class Authenticator(Protocol):
    # whether authenticate may wait on the network (the server then calls it from a worker thread)
    blocking: bool

    def authenticate(self, token: str) -> Principal | None: ...


def read_token_file(path: str) -> str:
    """The secret in ``path`` (surrounding whitespace ignored); a missing or empty file is bad input."""
    try:
        with open(path, encoding="utf-8") as stream:
            token = stream.read().strip()
    except OSError as exc:
        raise InputError(f"cannot read token file: {exc.strerror}", where=path) from None
    if not token:
        raise InputError("token file is empty", where=path)
    return token


@dataclass(frozen=True)
class SharedSecret:
    """One secret for every collector and the CLI, compared in constant time."""

    secret: str
    blocking = False  # a comparison: answered in the event loop

    def authenticate(self, token: str) -> Principal | None:
        if hmac.compare_digest(token.encode(), self.secret.encode()):
            return Principal("shared-secret", frozenset(Access))
        return None


@dataclass(frozen=True)
class Review:
    """A TokenReview's answer: the user when authenticated, else None."""

    user: str | None


Reviewer = Callable[[str], Review]


def kubernetes_reviewer(audiences: tuple[str, ...]) -> Reviewer:
    """TokenReview through the API server of the cluster we run in (the store's ServiceAccount needs
    ``create`` on ``tokenreviews``); tokens minted for another audience are rejected by the API server."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_incluster_config(client_configuration=configuration)
    api = client.AuthenticationV1Api(client.ApiClient(configuration))

    def review(token: str) -> Review:
        spec = client.V1TokenReviewSpec(token=token, audiences=list(audiences) or None)
        status: Any = api.create_token_review(client.V1TokenReview(spec=spec)).status
        return Review(status.user.username if status and status.authenticated and status.user else None)

    return review


class TokenReview:
    """Tokens checked by the API server, answers cached for ``ttl`` seconds (``negative_ttl`` for
    refusals) so that a collector posting every few seconds costs one review a minute, not one a post.

    The cache is keyed by the token's SHA-256 (no token is kept in memory) and bounded; a failing
    API server is not cached, so the next request asks again.
    """

    blocking = True  # a token not in the cache waits for the API server's review

    def __init__(self, reviewer: Reviewer, writers: frozenset[str], readers: frozenset[str],
                 ttl: float = 60.0, negative_ttl: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._review, self._writers, self._readers = reviewer, writers, readers
        self._ttl, self._negative_ttl, self._clock = ttl, negative_ttl, clock
        self._cache: dict[bytes, tuple[float, Principal | None]] = {}
        self._lock = threading.Lock()

    def authenticate(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).digest()
        now = self._clock()
        with self._lock:
            cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        principal = self._principal(self._review(token).user)
        with self._lock:
            if len(self._cache) >= TOKEN_CACHE_SIZE:
                self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
                if len(self._cache) >= TOKEN_CACHE_SIZE:
                    self._cache.clear()
            self._cache[key] = (now + (self._ttl if principal else self._negative_ttl), principal)
        return principal

    def _principal(self, user: str | None) -> Principal | None:
        if user is None:
            return None
        may = frozenset(access for access, users in ((Access.WRITE, self._writers), (Access.READ, self._readers))
                        if user in users)
        return Principal(user, may) if may else None
