"""``netpol-gen serve``: run the central store for collectors and the remote CLI (see store/server.py).

SIGTERM is how Kubernetes stops a pod: requests in flight are drained, then the process exits 0.
(uvicorn re-delivers the signal after draining, to the handler that was there before it; left at
the default, that handler kills the process with status 143 and the pod shows as failed.)
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import ssl
from collections.abc import Callable
from contextlib import ExitStack
from typing import TYPE_CHECKING

import click

from netpol_gen.cli.options import db_option, parse_listen
from netpol_gen.errors import InputError
from netpol_gen.names import IN_FORCE

if TYPE_CHECKING:  # the library is imported where it is used: `netpol-gen --help` lists this command without it
    from netpol_gen.model.documents import Document
    from netpol_gen.service.auth import Authenticator
    from netpol_gen.store.db import Store

DEFAULT_LISTEN = "0.0.0.0:8080"
log = logging.getLogger("netpol_gen.serve")


def _authenticator(token_file: str | None, tokenreview: bool, writers: tuple[str, ...], readers: tuple[str, ...],
                   audiences: tuple[str, ...]) -> Authenticator:
    from netpol_gen.service.auth import SharedSecret, TokenReview, kubernetes_reviewer, read_token_file

    if (token_file is None) == (not tokenreview):
        raise click.UsageError("choose one way to check tokens: --token-file FILE or --tokenreview")
    if token_file is not None:
        if writers or readers:
            raise click.UsageError("--writer/--reader go with --tokenreview (a shared secret may read and write)")
        return SharedSecret(read_token_file(token_file))
    if not writers and not readers:
        raise click.UsageError("--tokenreview needs --writer and/or --reader USER (e.g. "
                               "system:serviceaccount:netpol-gen:netpol-gen-collector)")
    return TokenReview(kubernetes_reviewer(audiences), frozenset(writers), frozenset(readers))


def _check_tls(cert: str | None, key: str | None) -> None:
    """Both or neither, and a pair that loads: a bad file is a one-line error now, not a traceback in uvicorn."""
    if (cert is None) != (key is None):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        return
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except ssl.SSLError as exc:  # before OSError, which it is a kind of
        raise InputError(f"not a certificate and its private key (PEM): {exc.reason or exc}",
                         where=f"{cert}, {key}") from None
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", where=exc.filename or cert) from None


@click.command("serve")
@db_option
@click.option("--listen", default=DEFAULT_LISTEN, show_default=True, metavar="[HOST:]PORT")
@click.option("--token-file", type=click.Path(dir_okay=False), default=None,
              help="Accept the bearer token in this file (shared secret: reads and writes).")
@click.option("--tokenreview", is_flag=True, help="Check bearer tokens with the Kubernetes TokenReview API.")
@click.option("--writer", "writers", multiple=True, metavar="USER",
              help="With --tokenreview: a user allowed to post batches (repeatable).")
@click.option("--reader", "readers", multiple=True, metavar="USER",
              help="With --tokenreview: a user allowed to read what was learnt (repeatable).")
@click.option("--audience", "audiences", multiple=True, default=("netpol-gen",), show_default=True,
              help="With --tokenreview: token audiences accepted (repeatable).")
@click.option("--max-body-mb", type=click.FloatRange(min=0.01), default=16.0, show_default=True,
              help="Largest request body as sent; 8 times this once decompressed.")
@click.option("--tls-cert", type=click.Path(dir_okay=False), default=None,
              help="Serve HTTPS with this certificate (PEM; the chain after it), so tokens never cross in clear.")
@click.option("--tls-key", type=click.Path(dir_okay=False), default=None, help="The private key of --tls-cert (PEM).")
@click.option("--writers", "write_slots", type=click.IntRange(min=1), default=None,
              help="Concurrent write transactions [default: 1; more only on PostgreSQL].")
@click.option("--in-force", is_flag=True,
              help=f"Judge traffic against the policies in force too, watched from the Kubernetes API, as shadow "
                   f"set '{IN_FORCE}' (what the CNI drops shows in `watch --set {IN_FORCE}`).")
@click.option("--kubeconfig", default=None,
              help="With --in-force or --shadow-configmap: the API [default: in-cluster, else $KUBECONFIG or "
                   "~/.kube/config].")
@click.option("--shadow-dir", "shadow_dirs", multiple=True, metavar="NAME=DIR",
              help="Keep shadow set NAME in step with the policy files in DIR (a checkout, a mounted ConfigMap), "
                   "read again every --shadow-every seconds (repeatable).")
@click.option("--shadow-configmap", "shadow_configmaps", multiple=True, metavar="NAMESPACE/NAME",
              help="Keep one shadow set per key of this ConfigMap (the key less .yaml/.yml/.json names it, its "
                   "value holds the policies), watched through the Kubernetes API (repeatable).")
@click.option("--shadow-every", type=click.FloatRange(min=0.05), default=10.0, show_default=True,
              help="Seconds between two reads of each --shadow-dir.")
@click.option("--retain", default=None, metavar="DURATION",
              help="Bound the store's growth (e.g. 30d, at least 1d): batch ids and hourly shadow denials older "
                   "than this are rolled up every 5 min (netpol-gen prune does one pass); older batches are refused.")
def serve_cmd(db_url: str | None, listen: str, token_file: str | None, tokenreview: bool, writers: tuple[str, ...],
              readers: tuple[str, ...], audiences: tuple[str, ...], max_body_mb: float, tls_cert: str | None,
              tls_key: str | None, write_slots: int | None, in_force: bool, kubeconfig: str | None,
              shadow_dirs: tuple[str, ...], shadow_configmaps: tuple[str, ...], shadow_every: float,
              retain: str | None) -> None:
    """Serve the store over HTTP(S): collectors post batches, `--server` commands read what was learnt."""
    import uvicorn

    from netpol_gen.service.retention_timer import Pruning
    from netpol_gen.service.server import Limits, create_app
    from netpol_gen.service.wire import IDLE_TIMEOUT
    from netpol_gen.store.db import open_store
    from netpol_gen.store.retention import parse_duration

    authenticator = _authenticator(token_file, tokenreview, writers, readers, audiences)
    host, port = parse_listen(listen, "--listen")
    _check_tls(tls_cert, tls_key)
    if kubeconfig and not (in_force or shadow_configmaps):
        raise click.UsageError("--kubeconfig goes with --in-force or --shadow-configmap")
    named = [_shadow_dir(value) for value in shadow_dirs]
    configmaps = [_configmap(value) for value in shadow_configmaps]
    retain_seconds = None if retain is None else parse_duration(retain)
    store = open_store(db_url)
    max_body = int(max_body_mb * (1 << 20))
    app = create_app(store, authenticator, limits=Limits(max_body, 8 * max_body), writers=write_slots)
    signal.signal(signal.SIGTERM, lambda *_: None)  # where uvicorn re-delivers SIGTERM once drained
    with ExitStack() as stack:
        stack.callback(store.close)
        if in_force:
            stack.callback(_watch_in_force(store, kubeconfig))
        for name, directory in named:
            stack.callback(_watch_directory(store, name, directory, shadow_every))
        for namespace, name in configmaps:
            stack.callback(_watch_configmap(store, namespace, name, kubeconfig))
        if retain_seconds is not None:
            pruning = Pruning(store, retain_seconds)
            pruning.start()
            stack.callback(pruning.stop)
        click.echo(f"serving {store.url} on {'https' if tls_cert else 'http'}://{host}:{port}", err=True)
        _collect_less()
        uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=10,
                    timeout_keep_alive=IDLE_TIMEOUT, ssl_certfile=tls_cert, ssl_keyfile=tls_key)


def _collect_less() -> None:
    """Python's cycle collector tuned for serve, once everything is started. A batch is thousands of
    objects that live while it waits for its group's commit, so at the default thresholds they were
    scanned again and again: 82 full collections in a 45 s `bench_serve` run, 8.8 of serve's 24 s of
    CPU. What start-up made (modules, schema, app) is frozen out of collections, and the youngest
    generation is collected per 50,000 allocations, not 700: what a request leaves is freed by
    reference counting, and cycles still go, in larger rounds."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def _watch_in_force(store: Store, kubeconfig: str | None) -> Callable[[], None]:
    """Start keeping set in-force in step with the API; returns how to stop."""
    from netpol_gen.collector.kube import api_client  # the kubernetes client is slow to import: only here
    from netpol_gen.collector.kube_policies import PolicyWatch
    from netpol_gen.service.synced_sets import sync_in_force

    api = api_client(kubeconfig)
    source = f"kubernetes {api.configuration.host}"
    watch = PolicyWatch(api, lambda documents: _published(sync_in_force(store, source, documents), documents))
    watch.start()
    click.echo(f"watching the policies in force at {api.configuration.host}", err=True)
    return watch.stop


def _shadow_dir(value: str) -> tuple[str, str]:
    from netpol_gen.service.shadow import check_name

    name, sep, directory = value.partition("=")
    if not sep or not directory:
        raise InputError("expected NAME=DIR", where=f"--shadow-dir {value}")
    check_name(name)
    if name == IN_FORCE:
        raise InputError(f"{IN_FORCE} is the policies in force's (--in-force)", where=f"--shadow-dir {value}")
    if not os.path.isdir(directory):
        raise InputError("not a directory", where=f"--shadow-dir {value}")
    return name, directory


def _watch_directory(store: Store, name: str, directory: str, every: float) -> Callable[[], None]:
    """Take DIR's policies now (a bad one stops serve starting, in one line), then look again every ``every``."""
    from netpol_gen.service.synced_sets import DirectoryWatch

    watch = DirectoryWatch(store, name, directory, every)
    watch.look()
    if watch.problem is not None:
        raise InputError(watch.problem, where=f"--shadow-dir {name}={directory}")
    watch.start()
    return watch.stop


def _configmap(value: str) -> tuple[str, str]:
    from netpol_gen.model.bounds import name_problem

    namespace, sep, name = value.partition("/")
    if not sep or "/" in name or name_problem(namespace, namespace=True) or name_problem(name):
        raise InputError("expected NAMESPACE/NAME of a ConfigMap", where=f"--shadow-configmap {value}")
    return namespace, name


def _watch_configmap(store: Store, namespace: str, name: str, kubeconfig: str | None) -> Callable[[], None]:
    """Start keeping the sets of ConfigMap ``namespace/name`` in step with it; returns how to stop."""
    from netpol_gen.collector.kube import api_client  # the kubernetes client is slow to import: only here
    from netpol_gen.collector.kube_configmap import ConfigMapWatch
    from netpol_gen.service.synced_sets import ConfigMapSets

    api = api_client(kubeconfig)
    watch = ConfigMapWatch(api, namespace, name, ConfigMapSets(store, namespace, name).take)
    watch.start()
    click.echo(f"watching shadow sets in ConfigMap {namespace}/{name} at {api.configuration.host}", err=True)
    return watch.stop


def _published(changed: bool, documents: list[Document]) -> None:
    if changed:
        log.info("policies in force: %d, judged from now on as shadow set %s", len(documents), IN_FORCE)
