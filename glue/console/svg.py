"""Small server-rendered charts (SVG) for the overview: no script, no external file.

Every text that reaches the markup goes through ``markupsafe.escape``; the numbers are ours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from markupsafe import Markup, escape

__all__ = ["OUTCOME_ORDER", "outcome_bars"]

#: Outcomes stacked bottom up, each with the stylesheet class that colours it.
OUTCOME_ORDER = ("done", "planned", "retry", "dropped", "cancelled", "dead")

_WIDTH, _HEIGHT, _GAP = 240, 48, 2


def outcome_bars(title: str, buckets: Sequence[Mapping[str, int]], *, bucket_minutes: int) -> Markup:
    """Stacked bars of attempts' outcomes per time bucket (oldest left), scaled to the fullest bucket;
    the title and a ``<title>`` per bar say the figures for screen readers and tooltips."""
    tallest = max((sum(bucket.values()) for bucket in buckets), default=0) or 1
    width = _WIDTH / max(len(buckets), 1)
    parts = [
        f'<svg class="chart" viewBox="0 0 {_WIDTH} {_HEIGHT}" width="{_WIDTH}" height="{_HEIGHT}"'
        f' role="img" aria-label="{escape(title)}">'
    ]
    for index, bucket in enumerate(buckets):
        x = index * width
        y = float(_HEIGHT)
        ago = (len(buckets) - index) * bucket_minutes
        said = ", ".join(f"{n} {outcome}" for outcome, n in bucket.items() if n) or "none"
        parts.append(f"<g><title>{escape(f'{ago} to {ago - bucket_minutes} min ago: {said}')}</title>")
        for outcome in OUTCOME_ORDER:
            count = bucket.get(outcome, 0)
            if not count:
                continue
            height = count / tallest * _HEIGHT
            y -= height
            parts.append(
                f'<rect class="o-{outcome}" x="{x:.1f}" y="{y:.1f}"'
                f' width="{max(width - _GAP, 1):.1f}" height="{height:.1f}"/>'
            )
        parts.append("</g>")
    parts.append("</svg>")
    return Markup("".join(parts))
