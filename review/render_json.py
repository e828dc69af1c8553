"""``diff --format json``: the report as one document."""

from __future__ import annotations

import json

from netpol_gen.review.diff import DiffReport


def render(report: DiffReport) -> str:
    return json.dumps(report.to_dict(), indent=2) + "\n"
