"""The "Spend tiers" page: what the latest scoring run published and which model made it.

Rendering only: ``spendpred.report.page_data`` gathers the facts (the latest run's summary
and the champion) into a JSON-able dict; ``render_page`` turns that dict into one
self-contained HTML page: inline CSS and a server-side SVG histogram, no JavaScript, no
external resources (the Airflow UI embeds it in a sandboxed iframe). Nothing here queries
or imports Airflow; the Airflow plugin (``plugins/spendpred_ui.py``) only wires
``report.page_data`` and ``render_page`` to a FastAPI route.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from spendpred.embeddings import describe_cost
from spendpred.metrics import METRIC_LABELS, metric_label  # champion's test metrics in this order, others follow sorted
from spendpred.monitoring import POPULATION_LABELS, clock_drift
from spendpred.tiers import TIERS, tier_of

TIER_COLOURS: dict[str, str] = {"high": "#1a7f37", "medium": "#bf8700", "low": "#8c959f"}


# -- formatting ------------------------------------------------------------------------------


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def format_money(value: float | None) -> str:
    """Return a spend amount for display: ``1,234``, ``12.50``, ``0.40``; ``—`` for None."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def format_bound(value: float | None) -> str:
    """Return a tier threshold exactly, to the cent: ``1,234.50``, ``144.48``; ``—`` for an open end (None)."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    return f"{value:,.2f}"


def _short_money(value: float) -> str:
    if value >= 1_000_000:
        return f"{value / 1_000_000:.1f}M"
    if value >= 10_000:
        return f"{value / 1000:.0f}k"
    if value >= 1000:
        return f"{value / 1000:.1f}k"
    return f"{value:.0f}" if value >= 10 else f"{value:.1f}"


def _metric(value: float) -> str:
    return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.4f}" if abs(value) < 10 else f"{value:,.2f}"


def histogram_svg(histogram: Mapping[str, Any], thresholds: Sequence[Mapping[str, Any]], width: int = 760, height: int = 280) -> str:
    """Return an inline SVG bar chart of predicted spend, bars coloured by tier.

    ``histogram`` is ``{"edges": [...], "counts": [...], "scale": "log1p"}`` (bins evenly
    spaced on log1p(spend)); each bar takes the tier of its bin's midpoint. Returns an
    empty-state ``<p>`` when there are no counts.
    """
    edges = [float(e) for e in histogram.get("edges") or []]
    counts = [int(c) for c in histogram.get("counts") or []]
    if not counts or len(edges) != len(counts) + 1 or max(counts) == 0:
        return '<p class="muted">No scores to chart.</p>'
    left, right, top, bottom = 56, 12, 12, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(counts)
    bar_w = plot_w / len(counts)
    parts = [
        f'<svg class="chart" role="img" aria-label="Distribution of predicted spend" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">'
    ]
    for frac in (0.0, 0.5, 1.0):
        y = top + plot_h * (1 - frac)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" class="grid"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="axis">{round(peak * frac):,}</text>')
    for i, count in enumerate(counts):
        lo, hi = edges[i], edges[i + 1]
        mid = math.expm1((math.log1p(max(lo, 0.0)) + math.log1p(max(hi, 0.0))) / 2)
        tier = tier_of(mid, thresholds) or "low"  # the published intervals, read with the rule that made them
        bar_h = plot_h * count / peak
        x, y = left + i * bar_w, top + plot_h - bar_h
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{y:.1f}" width="{max(bar_w - 2, 1):.1f}" height="{bar_h:.1f}" '
            f'fill="{TIER_COLOURS.get(tier, "#57606a")}" data-tier="{_e(tier)}">'
            f"<title>{format_money(lo)} – {format_money(hi)}: {count:,} users ({_e(tier)})</title></rect>"
        )
    step = max(1, len(counts) // 5)
    for i in range(0, len(edges), step):
        x = left + i * bar_w
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="axis">{_short_money(edges[i])}</text>')
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 4}" text-anchor="middle" class="axis">'
        "predicted spend over the horizon (log scale)</text>"
    )
    parts.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" class="baseline"/>')
    parts.append("</svg>")
    return "".join(parts)


# -- page --------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;font-size:14px;margin:0;padding:20px 28px;color:#1f2328;background:#fff}
h1{font-size:22px;margin:0 0 4px} h2{font-size:16px;margin:28px 0 10px;border-bottom:1px solid #d0d7de;padding-bottom:4px}
.muted{color:#656d76} .meta{font-size:13px;color:#656d76;margin-bottom:16px}
.cards{display:flex;gap:12px;flex-wrap:wrap}
.card{border:1px solid #d0d7de;border-radius:8px;padding:10px 14px;min-width:150px}
.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:#656d76}
.card .value{font-size:24px;font-weight:600} .card .sub{font-size:12px;color:#656d76}
.swatch{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:6px;vertical-align:baseline}
table{border-collapse:collapse;font-size:14px} th,td{padding:5px 12px;border-bottom:1px solid #eaeef2;text-align:right}
th:first-child,td:first-child{text-align:left} th{color:#656d76;font-weight:600;font-size:12px}
.chart .grid{stroke:#eaeef2} .chart .baseline{stroke:#8c959f} .chart .axis{font-size:11px;fill:#656d76}
.empty{border:1px dashed #d0d7de;border-radius:8px;padding:24px;background:#f6f8fa}
.error{border:1px solid #ff8182;background:#ffebe9;border-radius:6px;padding:8px 12px;margin:8px 0}
.note{border:1px solid #d0d7de;background:#f6f8fa;border-radius:6px;padding:8px 12px;margin:8px 0}
.warn{border:1px solid #d4a72c;background:#fff8c5;border-radius:6px;padding:8px 12px;margin:8px 0}
.legend{margin-right:14px;font-size:13px}
code{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px;background:#f6f8fa;padding:1px 4px;border-radius:4px}
"""


def _tier_label(tier: str) -> str:
    return f'<span class="swatch" style="background:{TIER_COLOURS.get(tier, "#57606a")}"></span>{_e(tier)}'


def _cards(summary: Mapping[str, Any]) -> str:
    total = int(summary.get("user_count") or 0)
    sizes = summary.get("tier_sizes") or {}
    cards = [f'<div class="card" id="card-total"><div class="label">users scored</div><div class="value">{total:,}</div>'
             f'<div class="sub">as of {_e(summary.get("as_of"))}</div></div>']  # fmt: skip
    for tier in TIERS:
        users = int(sizes.get(tier) or 0)
        share = 100.0 * users / total if total else 0.0
        cards.append(
            f'<div class="card" id="card-{tier}"><div class="label">{_tier_label(tier)}</div>'
            f'<div class="value" data-tier-size="{tier}">{users:,}</div><div class="sub">{share:.1f}% of users</div></div>'
        )
    return '<div class="cards">' + "".join(cards) + "</div>"


def _tier_table(summary: Mapping[str, Any]) -> str:
    sizes = summary.get("tier_sizes") or {}
    spend = summary.get("tier_spend") or {}
    bounds = {t.get("tier"): t for t in summary.get("thresholds") or []}
    rows = []
    for tier in TIERS:
        bound = bounds.get(tier, {})
        stats = spend.get(tier) or {}
        rows.append(
            f'<tr id="tier-{tier}"><td>{_tier_label(tier)}</td><td>{int(sizes.get(tier) or 0):,}</td>'
            f"<td>{format_bound(bound.get('lower_bound'))}</td><td>{format_bound(bound.get('upper_bound'))}</td>"
            f"<td>{format_money(stats.get('min'))}</td><td>{format_money(stats.get('mean'))}</td><td>{format_money(stats.get('max'))}</td></tr>"
        )
    return (
        '<table id="tiers"><thead><tr><th>tier</th><th>users</th><th>lower bound</th><th>upper bound</th>'
        "<th>min</th><th>mean</th><th>max</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        '<p class="muted">Predicted spend over the horizon; a tier holds scores in [lower, upper), — is an open end.</p>'
    )


def _movement(summary: Mapping[str, Any]) -> str:
    previous = summary.get("previous_as_of")
    if not previous:
        return '<p class="muted" id="movement">Only one run so far: tier movement appears after the next run.</p>'
    move = summary.get("movement") or {}
    transitions = summary.get("transitions") or {}
    chips = "".join(
        f'<div class="card"><div class="label">{label}</div><div class="value" data-move="{key}">{int(move.get(key) or 0):,}</div></div>'
        for key, label in (("up", "moved up"), ("down", "moved down"), ("same", "same tier"),
                           ("churn_warning", "churn warnings"), ("new", "new users"), ("gone", "no longer scored"))
    )  # fmt: skip
    head = "".join(f"<th>now {_tier_label(t)}</th>" for t in TIERS)
    body = "".join(
        f"<tr><td>was {_tier_label(p)}</td>"
        + "".join(f'<td data-from="{p}" data-to="{c}">{int((transitions.get(p) or {}).get(c) or 0):,}</td>' for c in TIERS)
        + "</tr>"
        for p in TIERS
    )
    return (
        f'<p class="meta">From {_e(previous)} to {_e(summary.get("as_of"))} (users scored in both runs). '
        "A churn warning is a drop of at least one tier or of more than half the predicted spend.</p>"
        f'<div class="cards" id="movement">{chips}</div>'
        f'<table id="transitions" style="margin-top:12px"><thead><tr><th></th>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _comparison(comparison: Mapping[str, Any] | None) -> str:
    """The champion beside its peers on the same held-out users, the fine-tuning lift and the calibration."""
    if not comparison or not comparison.get("rows"):
        return ""
    columns = comparison.get("columns") or []
    head = "".join(f"<th>{_e(metric_label(c))}</th>" for c in columns)
    body = "".join(
        f'<tr data-model="{_e(r["model"])}"><td>{_e(r["label"])}</td>'
        + "".join(f"<td>{'—' if r.get(c) is None else _metric(float(r[c]))}</td>" for c in columns)
        + "</tr>"
        for r in comparison["rows"]
    )
    notes = comparison.get("notes") or []
    note = "".join(f'<p class="meta">{_e(n)}</p>' for n in notes)
    return (
        '<p class="meta">On the held-out users of its training run, beside the rules a team would otherwise use:</p>'
        f'<table id="champion-vs-peers"><thead><tr><th>model</th>{head}</tr></thead><tbody>{body}</tbody></table>{note}'
    )


def _forced(forced: Mapping[str, Any] | None) -> str:
    """The notice of a champion forced past the promotion gate (``report.forced_promotion``): who, and the gate condition skipped."""
    if not forced:
        return ""
    when = f" on {str(forced['at']).replace('T', ' ')}" if forced.get("at") else ""
    text = f"Version {forced.get('version')} is champion because {forced.get('by')} forced it{when} (promote=force), past the promotion gate."
    if forced.get("skipped_gate"):
        detail = f'Gate condition skipped: <span id="forced-gate">{_e(forced["skipped_gate"])}</span>'
    else:
        detail = f"Recorded decision: {_e(forced.get('reason') or 'none')}"
    return f'<div class="warn" id="forced-champion"><strong>Forced champion.</strong> {_e(text)} {detail}</div>'


def _champion(
    champion: Mapping[str, Any] | None,
    summary: Mapping[str, Any] | None,
    comparison: Mapping[str, Any] | None = None,
    forced: Mapping[str, Any] | None = None,
) -> str:
    if not champion:
        return '<p class="muted" id="champion">No champion model yet: run the <code>spendpred_weekly_retrain</code> DAG.</p>'
    metrics: Mapping[str, float] = champion.get("metrics") or {}
    ordered = [k for k in METRIC_LABELS if k in metrics] + sorted(k for k in metrics if k not in METRIC_LABELS)
    rows = "".join(f"<tr><td>{_e(metric_label(k))}</td><td>{_metric(float(metrics[k]))}</td></tr>" for k in ordered)
    used = summary.get("model_version") if summary else None
    stale = ""
    if used is not None and str(used) != str(champion.get("version")):
        stale = f'<div class="note">The latest published run used version {_e(used)}, not the current champion.</div>'
    aliases = ", ".join(str(a) for a in champion.get("aliases") or [])
    comparison = _comparison(comparison)
    table = (
        f'<table id="champion-metrics"><thead><tr><th>test metric</th><th>value</th></tr></thead><tbody>{rows}</tbody></table>'
        if rows
        else '<p class="muted">No test metrics recorded on this version.</p>'
    )
    details = [f"aliases: {aliases}" if aliases else "", f"registered {champion.get('created_at') or ''}".replace("T", " ")]
    if champion.get("run_id"):
        details.append(f"MLflow run {champion['run_id']}")
    return (
        f'<div id="champion"><p><strong>{_e(champion.get("name"))}</strong> version '
        f'<strong id="champion-version">{_e(champion.get("version"))}</strong></p>'
        f'<p class="meta">{_e(" · ".join(d for d in details if d))}</p>{_forced(forced)}{stale}{comparison}{table}</div>'
    )


def _scoring_cost(cost: Mapping[str, Any] | None) -> str:
    """What the latest run's scoring cost: users encoded, embedding-cache hits and the encoder's seconds."""
    if not cost:
        return ""
    return f'<p class="meta" id="scoring-cost">{_e(describe_cost(dict(cost)))}</p>'


# -- model health (issue 24: what the nightly monitoring stored) --------------------------------

_HEALTH_SCORERS: tuple[tuple[str, str, str], ...] = (
    ("model", "champion (published scores)", "#0969da"),
    ("past_spend", "past spend", "#8c959f"),
    ("bgnbd_gamma_gamma", "BG/NBD × Gamma-Gamma", "#bf8700"),
)
_STATUS_COLOURS = {"ok": "#1a7f37", "warn": "#bf8700", "alert": "#cf222e"}


def _share(value: Any) -> str:
    return "—" if value is None else f"{100 * float(value):.1f}%"


def _figure(values: Sequence[Any] | None, digits: int = 3) -> str:
    if not values or values[0] is None:
        return "—"
    text = f"{float(values[0]):.{digits}f}"
    if len(values) > 2 and values[1] is not None and values[2] is not None:
        text += f' <span class="muted">[{float(values[1]):.{digits}f}, {float(values[2]):.{digits}f}]</span>'
    return text


def gini_plot_svg(realized: Sequence[Mapping[str, Any]], width: int = 760, height: int = 220) -> str:
    """Return an inline SVG line chart of the realized normalised Gini per matured as_of, one line per scorer
    (points labelled with the model version). Empty string with fewer than one partition."""
    if not realized:
        return ""
    left, right, top, bottom = 48, 12, 12, 36
    plot_w, plot_h = width - left - right, height - top - bottom
    values = [float(v[0]) for p in realized for s in p["scorers"].values() if (v := s.get("normalised_gini")) and v[0] is not None]
    low, high = min([0.0, *values]), max([1.0, *values])
    step = plot_w / len(realized)  # each partition centred in its slot: the labels stay inside

    def y(value: float) -> float:
        return top + plot_h * (1 - (value - low) / (high - low or 1.0))

    parts = [f'<svg class="chart" id="health-plot" role="img" aria-label="Realized normalised Gini per matured partition" '
             f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" xmlns="http://www.w3.org/2000/svg">']  # fmt: skip
    for mark in (low, (low + high) / 2, high):
        parts.append(f'<line x1="{left}" y1="{y(mark):.1f}" x2="{left + plot_w}" y2="{y(mark):.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y(mark) + 4:.1f}" text-anchor="end" class="axis">{mark:.2f}</text>')  # fmt: skip
    for scorer, label, colour in _HEALTH_SCORERS:
        points = [(left + (i + 0.5) * step, y(float(v[0])), p) for i, p in enumerate(realized)
                  if (v := (p["scorers"].get(scorer) or {}).get("normalised_gini")) and v[0] is not None]  # fmt: skip
        if not points:
            continue
        if len(points) > 1:
            path = " ".join(f"{x:.1f},{yy:.1f}" for x, yy, _ in points)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2" data-scorer="{_e(scorer)}"/>')
        for x, yy, p in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{yy:.1f}" r="3.5" fill="{colour}"><title>{_e(label)}, {_e(p["as_of"])} '
                         f'(version {_e(p["model_version"])})</title></circle>')  # fmt: skip
    for i, p in enumerate(realized):
        parts.append(f'<text x="{left + (i + 0.5) * step:.1f}" y="{top + plot_h + 16}" text-anchor="middle" class="axis">'
                     f'{_e(p["as_of"])} v{_e(p["model_version"])}</text>')  # fmt: skip
    parts.append("</svg>")
    legend = " ".join(f'<span class="legend"><span class="swatch" style="background:{c}"></span>{_e(label)}</span>'
                      for _, label, c in _HEALTH_SCORERS)  # fmt: skip
    return f"<div>{legend}</div>" + "".join(parts)


def _health(health: Mapping[str, Any] | None) -> str:
    """The model-health section: realized metrics per matured as_of (champion and baselines, with a plot),
    the latest night's drift with its status, the estimate-vs-realized record and the last retrain's trigger."""
    if health is None:
        return ""
    out = ['<section id="model-health"><h2>Model health</h2>']
    out += [f'<div class="note">{_e(n)}</div>' for n in health.get("notes") or []]
    realized = health.get("realized") or []
    if realized:
        rows = []
        for part in reversed(realized):
            for scorer, label, _ in _HEALTH_SCORERS:
                values = part["scorers"].get(scorer)
                if not values:
                    continue
                rows.append(
                    f'<tr data-as-of="{_e(part["as_of"])}" data-scorer="{_e(scorer)}"><td>{_e(part["as_of"])}</td>'
                    f'<td>{_e(part["model_version"])}</td><td>{_e(label)}</td>'
                    f'<td>{_figure(values.get("normalised_gini"))}</td><td>{_figure(values.get("top10_capture"))}</td>'
                    f'<td>{_figure(values.get("total_ratio"))}</td></tr>'
                )
        out.append(
            '<p class="meta">Realized performance of each matured partition (labels in (as_of, as_of + H]), '
            "the published scores beside the baselines as of the same date for the same users; 95% bootstrap intervals.</p>"
            + gini_plot_svg(realized)
            + '<table id="health-realized"><thead><tr><th>as_of</th><th>version</th><th>scorer</th><th>normalised Gini</th>'
            "<th>top-10% capture</th><th>predicted / actual</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>"
        )
    else:
        out.append('<p class="muted" id="health-realized">No partition has matured yet: realized performance appears '
                   "once as_of + H has passed.</p>")  # fmt: skip
    drift = health.get("drift") or []
    if drift:
        rows = "".join(
            f'<tr data-feature="{_e(r["feature"])}" data-status="{_e(r["status"])}">'
            + (  # a population row (share of users or orders) has no PSI or KS: its share gets its own column
                f'<td>{_e(POPULATION_LABELS[r["feature"]])}</td><td>—</td><td>—</td><td>{_share(r.get("statistic"))}</td>'
                if r["feature"] in POPULATION_LABELS
                else f'<td>{_e(r["feature"])}</td><td>{_figure([r.get("psi")])}</td><td>{_figure([r.get("statistic")])}</td><td>—</td>'
            )
            + f'<td><strong style="color:{_STATUS_COLOURS.get(str(r["status"]), "#57606a")}">{_e(r["status"])}</strong></td></tr>'
            for r in drift
        )
        out.append(f'<p class="meta">Drift on {_e(health.get("drift_as_of"))} against the training data of version '
                   f'{_e(drift[0].get("model_version"))} (population stability index, Kolmogorov–Smirnov statistic).</p>'
                   '<table id="health-drift"><thead><tr><th>feature</th><th>PSI</th><th>KS</th><th>share</th><th>status</th></tr></thead>'
                   f"<tbody>{rows}</tbody></table>")  # fmt: skip
        clock = clock_drift(drift)
        if clock:
            out.append(f'<p class="muted" id="health-clock">{_e(", ".join(clock))} grow with the date (a user is older '
                       "tonight than in the training snapshot): their drift is expected and never requests a retrain.</p>")
    else:
        out.append(f'<p class="muted" id="health-drift">No drift computed for {_e(health.get("drift_as_of") or "the latest run")}.</p>')
    estimates = health.get("estimates") or []
    if estimates:
        rows = "".join(
            f'<tr data-as-of="{_e(e["as_of"])}" data-metric="{_e(e["metric"])}"><td>{_e(e["as_of"])}</td><td>{_e(e["model_version"])}</td>'
            f'<td>{_e(str(e["metric"]).upper())}</td><td>{format_money(e.get("estimated"))}</td>'
            f'<td>{"pending" if e.get("realized") is None else format_money(e["realized"])}</td></tr>'
            for e in reversed(estimates)
        )
        out.append('<p class="meta">Estimated before labels exist (direct loss estimation from the champion\'s held-out errors), '
                   "beside the realized value once the partition matures.</p>"
                   '<table id="health-estimates"><thead><tr><th>as_of</th><th>version</th><th>metric</th><th>estimated</th>'
                   f"<th>realized</th></tr></thead><tbody>{rows}</tbody></table>")  # fmt: skip
    requests = health.get("requests") or []
    asked = next((r for r in requests if r.get("decision") == "requested"), None)
    last = health.get("last_retrain")
    lines = []
    if asked:
        lines.append(f'Last retrain requested by the monitoring of <strong id="health-request">{_e(asked["as_of"])}</strong>: '
                     f'{_e(asked["reasons"])} (cool-down until {_e(asked.get("cooldown_until"))}).')  # fmt: skip
    if last:
        reason = f" ({_e(last['trigger_reason'])})" if last.get("trigger_reason") else ""
        lines.append(f'Last retrain run started {_e(str(last["started"]).replace("T", " "))}, trigger '
                     f'<strong id="health-trigger">{_e(last.get("trigger") or "unrecorded")}</strong>{reason}.')  # fmt: skip
    if not lines:
        lines.append("No retrain has run or been requested yet.")
    out.append('<p class="meta" id="health-retrain">' + " ".join(lines) + "</p></section>")
    return "".join(out)


def _importance(rows: Sequence[Mapping[str, Any]] | None) -> str:
    """The champion's global importance (mean |attribution| per feature and per behaviour kind, from its retrain)."""
    if not rows:
        return ('<section id="importance"><h2>What drives the champion\'s scores</h2><p class="muted">No global importance '
                "logged for the champion (it is logged by retrains from issue 25 on).</p></section>")  # fmt: skip
    out = ['<section id="importance"><h2>What drives the champion\'s scores</h2>',
           '<p class="meta">Mean absolute attribution per held-out user of the champion\'s retrain (currency; '
           "integrated gradients through the head, the text's part split by behaviour kind approximately).</p>"]  # fmt: skip
    for level, title, limit in (("feature", "features", 12), ("kind", "behaviour kinds of the text", 12)):
        part = [r for r in rows if r.get("level") == level][:limit]
        if not part:
            continue
        peak = max(float(r.get("mean_abs_attribution") or 0.0) for r in part) or 1.0
        body = "".join(
            f'<tr data-importance="{_e(r.get("name"))}"><td>{_e(r.get("name"))}</td>'
            f'<td>{_metric(float(r.get("mean_abs_attribution") or 0.0))}</td>'
            f'<td style="width:240px"><div style="background:#0969da;height:10px;'
            f'width:{100.0 * float(r.get("mean_abs_attribution") or 0.0) / peak:.0f}%"></div></td></tr>'
            for r in part
        )
        out.append(f'<table class="importance" id="importance-{level}"><thead><tr><th>{_e(title)}</th><th>mean |attribution|</th>'
                   f"<th></th></tr></thead><tbody>{body}</tbody></table>")  # fmt: skip
    out.append("</section>")
    return "".join(out)


def _lookup(lookup: Mapping[str, Any] | None) -> str:
    """The one-user form and, after a lookup, its prediction, tier, reasons and attribution table (or its error)."""
    value = _e((lookup or {}).get("user_id") or "")
    out = ['<section id="lookup"><h2>Look up a user</h2><form method="get" action="">'
           f'<label for="user">user id</label> <input id="user" name="user" value="{value}" maxlength="64"> '
           '<button type="submit">Explain</button></form>']  # fmt: skip
    if lookup and lookup.get("error"):
        out.append(f'<div class="error" id="lookup-error">{_e(lookup["error"])}</div>')
    elif lookup:
        published = lookup.get("published_spend")
        out.append(
            f'<p id="lookup-result">User <strong>{_e(lookup.get("user_id"))}</strong> as of {_e(lookup.get("as_of"))}: tier '
            f'<strong id="lookup-tier">{_e(lookup.get("tier") or "?")}</strong>, published spend '
            f'<strong id="lookup-spend">{format_money(None if published is None else float(published))}</strong> '
            f'(model version {_e(lookup.get("scored_with"))}; explained with version {_e(lookup.get("model_version"))}: prediction '
            f'{format_money(float(lookup.get("prediction") or 0.0))}, baseline {format_money(float(lookup.get("baseline") or 0.0))}, '
            f'completeness gap {float(lookup.get("gap") or 0.0):+.4f})</p>'
        )  # fmt: skip
        reasons = "".join(f'<li>{_e(r.get("reason"))}</li>' for r in lookup.get("reasons") or [])
        out.append(f'<p class="meta">Reasons (template {_e(lookup.get("template_version"))}):</p><ol id="lookup-reasons">{reasons}</ol>')
        rows = "".join(f'<tr><td>{_e(r.get("feature"))}</td><td>{float(r.get("contribution") or 0.0):+,.2f}</td>'
                       f'<td style="text-align:left">{_e(r.get("reason"))}</td></tr>' for r in lookup.get("attributions") or [])  # fmt: skip
        out.append('<table id="lookup-attributions"><thead><tr><th>item</th><th>contribution</th><th style="text-align:left">'
                   f"what</th></tr></thead><tbody>{rows}</tbody></table>")  # fmt: skip
    out.append("</section>")
    return "".join(out)


def render_page(data: Mapping[str, Any]) -> str:
    """Return the complete HTML page for ``spendpred.report.page_data``'s result (all values escaped).

    Shows an empty state, with what to run, when no scoring run has been published yet. With scores, the
    one-user lookup form follows the tier cards (``data["lookup"]``, ``pipeline.explain_lookup``'s result: that
    user's explanation or the one-line error) and the champion's global importance (``data["importance"]``) its section.
    """
    summary = data.get("summary")
    messages = "".join(f'<div class="error">{_e(m)}</div>' for m in data.get("errors") or [])
    messages += "".join(f'<div class="note">{_e(m)}</div>' for m in data.get("notes") or [])
    if summary and summary.get("as_of"):
        model = f"{_e(summary.get('model_name'))} v{_e(summary.get('model_version'))}"
        legend = " ".join(f'<span class="legend">{_tier_label(t)}</span>' for t in TIERS)
        body = (
            f'<p class="meta">Latest run <strong id="as-of">{_e(summary["as_of"])}</strong> · scored {_e(summary.get("scored_at"))}'
            f" · model {model}</p>"
            + _scoring_cost(data.get("scoring"))
            + _cards(summary)
            + _lookup(data.get("lookup"))
            # one column: side by side, the short tier table left a blank gap beside the long champion section
            + "<section><h2>Tiers and thresholds</h2>"
            + _tier_table(summary)
            + f"<h2>Score distribution</h2><div>{legend}</div>"
            + histogram_svg(summary.get("histogram") or {}, summary.get("thresholds") or [])
            + "</section><section><h2>Tier movement</h2>"
            + _movement(summary)
            + "</section><section><h2>Champion model</h2>"
            + _champion(data.get("champion"), summary, data.get("comparison"), data.get("forced"))
            + "</section>"
            + _health(data.get("health"))
            + (_importance(data.get("importance")) if data.get("champion") else "")
        )
    else:
        body = (
            '<div class="empty" id="empty-state"><strong>No scores published yet.</strong>'
            '<p class="muted">Run the <code>spendpred_nightly_scoring</code> DAG; this page then shows '
            "the tiers of the latest run.</p></div>"
            "<h2>Champion model</h2>" + _champion(data.get("champion"), summary, data.get("comparison"), data.get("forced"))
        )
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Spend tiers</title><style>{_CSS}</style></head><body>"
        "<h1>Spend tiers</h1>"
        f'<div class="meta">Warehouse {_e(data.get("warehouse"))} · generated {_e(data.get("generated_at"))} UTC · '
        '<a href="summary.json">JSON</a></div>'
        f"{messages}{body}</body></html>"
    )
