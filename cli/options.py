"""Options shared by several commands, declared once."""

from __future__ import annotations

import click

from netpol_gen.store.db import ENV_URL

db_option = click.option(
    "--db", "db_url", default=None, metavar="URL",
    help=f"Store: sqlite:///PATH or postgresql+psycopg://... [default: ${ENV_URL} or sqlite:///netpol-gen.db]",
)
