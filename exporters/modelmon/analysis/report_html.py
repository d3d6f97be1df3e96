"""The drift report as one self-contained HTML page: inline CSS and SVG, no scripts,
no external assets. One plot per column: reference vs live share per reference bin."""
from __future__ import annotations

from html import escape
from typing import Any, Mapping, Sequence

BAR, GAP, LEFT, TOP, PLOT_HEIGHT, LABEL_ROOM = 14, 8, 84, 28, 200, 120
STEPS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.25)

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0; }
th, td { padding: .25em .7em; text-align: left; border-bottom: 1px solid #ddd; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.badge { display: inline-block; padding: 0 .5em; border-radius: .8em; font-size: .85em; }
.drift { background: #fde2e1; color: #a4161a; } .ok { background: #e3f4e1; color: #216e1f; }
.undecided { background: #fff3cd; color: #7a5b00; }
.note { color: #7a5b00; } figure { margin: .5em 0; } figcaption { color: #555; font-size: .9em; }
svg .ref { fill: #9aa5b1; } svg .live { fill: #2f6fdb; } svg .live.drifting { fill: #d1495b; }
svg text { font: 11px system-ui, sans-serif; fill: #333; } svg .grid { stroke: #e5e5e5; } svg .axis { stroke: #888; }
"""


def fmt(value: Any, spec: str = ".4g") -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format(value, spec)
    return escape(str(value))


def badge(drifting: bool, yes: str = "drift", no: str = "no drift") -> str:
    return f'<span class="badge {"drift" if drifting else "ok"}">{yes if drifting else no}</span>'


def verdict_badge(column: Mapping[str, Any]) -> str:
    """drift / no drift, or too few rows to call (reports from before the verdict: drift or not)."""
    if column.get("verdict") == "too few rows to call":
        return '<span class="badge undecided">too few rows to call</span>'
    return badge(column["drift"])


def interval(t: Mapping[str, Any]) -> str:
    lower, upper = t.get("effect_lower"), t.get("effect_upper")
    if lower is None and upper is None:
        return "–"
    return f"{fmt(lower)} – {fmt(upper) if upper is not None else '?'}"


def plot(column: Mapping[str, Any]) -> str:
    """Grouped bars, reference and live share for each reference bin, as inline SVG."""
    bins = column["bins"]
    step = 2 * BAR + GAP
    width = LEFT + step * len(bins) + 20
    height = TOP + PLOT_HEIGHT + LABEL_ROOM
    highest = max((max(b["reference"], b["live"]) for b in bins), default=0.0)
    tick_step = next((s for s in STEPS if 4 * s >= highest), 0.25)
    top = 4 * tick_step
    y = lambda share: TOP + PLOT_HEIGHT * (1 - share / top)  # noqa: E731
    live_class = "live drifting" if column.get("drift") else "live"
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'role="img" aria-label="reference and live shares of {escape(column["name"])}">',
        f'<rect class="ref" x="{LEFT}" y="6" width="10" height="10"/><text x="{LEFT + 14}" y="15">reference</text>'
        f'<rect class="{live_class}" x="{LEFT + 90}" y="6" width="10" height="10"/>'
        f'<text x="{LEFT + 104}" y="15">live (n={column["n"]})</text>',
    ]
    for i in range(5):
        share = top * i / 4
        tick = f"{share:.{1 if tick_step < 0.01 else 0}%}"
        parts.append(f'<line class="grid" x1="{LEFT}" x2="{width - 10}" y1="{y(share):.1f}" y2="{y(share):.1f}"/>'
                     f'<text x="{LEFT - 6}" y="{y(share) + 4:.1f}" text-anchor="end">{tick}</text>')
    base = TOP + PLOT_HEIGHT
    for i, b in enumerate(bins):
        x = LEFT + GAP / 2 + i * step
        label = escape(b["label"])
        for offset, cls, share, who in ((0, "ref", b["reference"], "reference"), (BAR, live_class, b["live"], "live")):
            parts.append(f'<rect class="bar {cls}" x="{x + offset:.1f}" y="{y(share):.1f}" width="{BAR}" '
                         f'height="{base - y(share):.1f}"><title>{label}: {who} {share:.2%}</title></rect>')
        short = label if len(b["label"]) <= 22 else escape(b["label"][:21]) + "…"
        parts.append(f'<text transform="translate({x + BAR:.1f},{base + 10}) rotate(-50)" text-anchor="end">{short}'
                     f"<title>{label}</title></text>")
    parts.append(f'<line class="axis" x1="{LEFT}" x2="{width - 10}" y1="{base}" y2="{base}"/></svg>')
    return "".join(parts)


def tests_table(tests: Sequence[Mapping[str, Any]]) -> str:
    rows = "".join(
        f"<tr><td>{fmt(t['test'])}</td><td class=num>{fmt(t['statistic'])}</td>"
        f"<td class=num>{fmt(t['p_value'], '.3g')}</td>"
        f"<td class=num>{fmt(t['p_adjusted'], '.3g')}</td><td>{fmt(t['effect'])}</td>"
        f"<td class=num>{fmt(t['effect_value'])}</td><td class=num>{interval(t)}</td>"
        f"<td class=num>{fmt(t['threshold'])}</td>"
        f"<td>{badge(t['exceeded'], 'over', 'under') if t['threshold'] is not None else '–'}</td></tr>"
        for t in tests
    )
    return ("<table><tr><th>test</th><th>statistic</th><th>p</th><th>p adjusted</th><th>effect size</th>"
            f"<th>value</th><th>interval</th><th>threshold</th><th></th></tr>{rows}</table>")


def groups_section(groups: Mapping[str, Any] | None) -> str:
    if not groups:
        return ""
    sizes = ", ".join(f"{escape(g)}: {n}" for g, n in groups["sizes"].items()) or "none"
    head = f"<p>Groups by <code>{escape(groups['field'])}</code> ({sizes}). "
    if groups["test"] is None:
        return head + "Not compared: fewer than two groups with enough values.</p>"
    return head + f"{badge(groups['differs'], 'groups differ', 'groups agree')}</p>" + tests_table([groups["test"]])


def column_section(column: Mapping[str, Any]) -> str:
    name = escape(column["name"])
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in column["notes"])
    return (
        f'<section class="column" id="column-{name}"><h2>{name} <small>({column["role"]}, {column["kind"]})</small> '
        f'{verdict_badge(column)}</h2>{notes}'
        f'<figure class="plot" data-column="{name}">{plot(column)}'
        f"<figcaption>Share of values per reference bin: training reference vs live "
        f"({column['n']} values; compared on {escape(column['comparison'])}).</figcaption></figure>"
        f"{tests_table(column['tests']) if column['tests'] else ''}{groups_section(column['groups'])}</section>"
    )


def summary(columns: Sequence[Mapping[str, Any]]) -> str:
    rows = []
    for c in columns:
        psi = next((t["statistic"] for t in c["tests"] if t["test"] == "psi"), None)
        over = [t["effect"] for t in c["tests"] if t["exceeded"]]
        rows.append(
            f'<tr><td><a href="#column-{escape(c["name"])}">{escape(c["name"])}</a></td><td>{c["role"]}</td>'
            f'<td>{c["kind"]}</td><td class=num>{c["n"]}</td><td class=num>{fmt(psi)}</td>'
            f'<td>{escape(", ".join(over)) or "–"}</td><td>{verdict_badge(c)}</td></tr>'
        )
    return ("<table><tr><th>column</th><th>role</th><th>kind</th><th>live values</th><th>PSI</th>"
            f"<th>effects over threshold</th><th></th></tr>{''.join(rows)}</table>")


def sampling(report: Mapping[str, Any]) -> str:
    """What the raw-value tests were run on, and what the source could not give."""
    parts = []
    sample = report.get("sample")
    if sample:
        parts.append(f"Raw-value tests (Kolmogorov-Smirnov, Wasserstein, Kruskal-Wallis) on a uniform sample of "
                     f"{sample['rows']} of {sample['of_rows']} rows (at most {sample['size']}, seed {sample['seed']}); "
                     "bin counts over every row.")
    segments = report.get("segments")
    if segments and segments.get("lumped_rows"):
        parts.append(f"Segments past the first {segments['max']}: {segments['lumped_rows']} rows counted together "
                     f"as {escape(segments['other'])}.")
    for note in report.get("notes", []):
        parts.append(escape(note))
    return f'<p class="note">{" ".join(parts)}</p>' if parts else ""


def render(report: Mapping[str, Any]) -> str:
    """The whole page."""
    ref, events, method = report["reference"], report["events"], report["method"]
    thresholds = ", ".join(f"{escape(k)} ≥ {v:g}" for k, v in method["thresholds"].items())
    versions = ", ".join(f"{escape(v)}: {n}" for v, n in events["versions"].items())
    drifting = report["drifting"]
    title = f"Drift report: {escape(report['model'])}"
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{STYLE}</style></head><body>'
        f"<h1>{title}</h1>"
        f"<p>Reference version {escape(ref['version'])} (hash {escape(ref['hash'])}, {ref['rows']} training rows). "
        f"{events['read']} prediction events (versions {versions}; {events['failed_left_out']} failed predictions "
        f"left out); generated {escape(report['generated_at'])}.</p>{sampling(report)}"
        f"<p><strong>{len(drifting)} of {len(report['columns'])} columns drift"
        f"{': ' + escape(', '.join(drifting)) if drifting else ''}.</strong></p>"
        f"<p>Rule: {escape(method['rule'])}. Thresholds: {thresholds}. Shares floored at {method['share_floor']:g} "
        f"for PSI, Jensen-Shannon and chi-square; columns with fewer than {method['min_sample']} values "
        "are not tested.</p>"
        f"{summary(report['columns'])}{''.join(column_section(c) for c in report['columns'])}</body></html>\n"
    )
