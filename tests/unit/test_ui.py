"""The Spend tiers page (``spendpred.ui``): rendering only, from the dict ``report.page_data`` returns."""

from __future__ import annotations

import math
import re

import numpy as np

from spendpred import report, ui
from spendpred.tiers import assign_tiers

CHAMPION = {
    "name": "spendpred-regressor", "version": "7", "tags": {"loss": "ziln"},
    "metrics": {"normalised_gini": 0.71, "top10_capture": 0.52, "rmse": 40.0, "decile_mape": 0.2, "total_ratio": 1.04,
                "total_predicted": 10400.0, "total_actual": 10000.0, "finetune_lift_normalised_gini": 0.012},
    "baselines": {"past_spend": {"normalised_gini": 0.55, "top10_capture": 0.45, "rmse": 60.0},
                  "gbt_numeric": {"normalised_gini": 0.66, "top10_capture": 0.50, "rmse": 45.0},
                  "before_finetuning": {"normalised_gini": 0.698, "top10_capture": 0.51, "rmse": 41.0}},
}  # fmt: skip


def _bars(svg: str) -> list[str]:
    return re.findall(r'<rect [^>]*data-tier="([a-z]+)"', svg)


def test_histogram_bars_take_the_tier_the_published_thresholds_give_their_midpoint() -> None:
    """Each bar is coloured by ``tiers.tier_of`` over the published rows: half-open intervals, as assigned."""
    scores = np.array([1.0, 5.0, 20.0, 60.0, 150.0, 400.0, 900.0, 2500.0, 7000.0, 20000.0])
    _, thresholds = assign_tiers(scores)
    rows = [{"as_of": "2024-06-01", **t.as_dict()} for t in thresholds]  # as the warehouse returns them
    edges = [0.0, *np.expm1(np.linspace(0.0, math.log1p(1_000_000.0), 12))[1:].tolist()]
    histogram = {"edges": edges, "counts": [1] * (len(edges) - 1), "scale": "log1p"}
    svg = ui.histogram_svg(histogram, rows)
    tiers = _bars(svg)
    assert len(tiers) == len(edges) - 1
    high_min = next(t.lower_bound for t in thresholds if t.tier == "high")
    medium_min = next(t.lower_bound for t in thresholds if t.tier == "medium")
    for (lo, hi), tier in zip(zip(edges, edges[1:]), tiers):
        mid = math.expm1((math.log1p(lo) + math.log1p(hi)) / 2)
        assert tier == ("high" if mid >= high_min else "medium" if mid >= medium_min else "low"), (lo, hi, tier)
    assert tiers[0] == "low" and tiers[-1] == "high" and "medium" in tiers
    assert f'fill="{ui.TIER_COLOURS["high"]}" data-tier="high"' in svg


def test_a_bar_outside_every_published_interval_is_low_and_an_empty_histogram_says_so() -> None:
    only_high = [{"tier": "high", "lower_bound": 100.0, "upper_bound": None}]
    svg = ui.histogram_svg({"edges": [0.0, 10.0, 1000.0], "counts": [4, 2]}, only_high)
    assert _bars(svg) == ["low", "high"]  # the first bar's midpoint lies in no interval: drawn as low
    assert "4 users (low)" in svg and "2 users (high)" in svg
    for empty in ({}, {"edges": [0.0, 1.0], "counts": [0]}, {"edges": [0.0, 1.0, 2.0], "counts": [3]}):
        assert ui.histogram_svg(empty, only_high) == '<p class="muted">No scores to chart.</p>'


def test_money_and_bounds_are_formatted_for_reading() -> None:
    assert ui.format_money(None) == "—" and ui.format_money(float("nan")) == "—" and ui.format_money(float("inf")) == "—"
    assert ui.format_money(1234.5) == "1,234" and ui.format_money(100.0) == "100"
    assert ui.format_money(12.5) == "12.50" and ui.format_money(0.4) == "0.40"
    assert ui.format_bound(1234.5) == "1,234.50" and ui.format_bound(float("nan")) == "—"


def test_the_empty_page_says_what_to_run_and_escapes_everything_it_shows() -> None:
    hostile = '<script>alert("x")</script>'
    page = ui.render_page({"warehouse": f"sqlite:///{hostile}", "generated_at": "2024-06-02 03:00:00", "summary": None,
                           "champion": None, "comparison": None, "errors": [hostile], "notes": ["a & b"]})  # fmt: skip
    assert 'id="empty-state"' in page and "spendpred_nightly_scoring" in page
    assert "<script>" not in page
    assert '<div class="error">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;</div>' in page
    assert '<div class="note">a &amp; b</div>' in page
    assert page.startswith("<!DOCTYPE html>") and page.endswith("</body></html>")
    assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")  # nothing external is loaded


def test_the_page_shows_exact_thresholds_and_labels_not_metric_keys() -> None:
    """Issue 22: the page rounded thresholds to whole units (144.48 showed as 144), showed raw metric keys
    (``finetune_lift_normalised_gini``) and left a blank gap beside the short tier table."""
    summary = {
        "as_of": "2024-06-01", "previous_as_of": None, "user_count": 20, "model_name": "spendpred-regressor",
        "model_version": "7", "scored_at": "2024-06-02 02:00:00",
        "tier_sizes": {"high": 2, "medium": 6, "low": 12},
        "tier_spend": {"high": {"min": 1444.8, "mean": 2000.125, "max": 2555.5}},
        "thresholds": [{"tier": "high", "lower_bound": 1444.8, "upper_bound": None},
                       {"tier": "medium", "lower_bound": 144.48, "upper_bound": 1444.8},
                       {"tier": "low", "lower_bound": None, "upper_bound": 144.48}],
        "histogram": {"edges": [0.0, 10.0, 100.0], "counts": [3, 4], "scale": "log1p"},
    }  # fmt: skip
    page = ui.render_page({"warehouse": "sqlite://", "summary": summary, "champion": CHAMPION,
                           "comparison": report.champion_comparison(CHAMPION), "errors": [], "notes": []})  # fmt: skip
    tiers = page[page.index('<table id="tiers">'):page.index("</table>", page.index('<table id="tiers">'))]
    assert '<tr id="tier-medium">' in tiers
    medium = tiers[tiers.index('<tr id="tier-medium">'):tiers.index("</tr>", tiers.index('<tr id="tier-medium">'))]
    assert "<td>144.48</td><td>1,444.80</td>" in medium  # to the cent, never 144
    high = tiers[tiers.index('<tr id="tier-high">'):]
    assert "<td>1,444.80</td><td>—</td>" in high
    assert "finetune_lift" not in page and "normalised_gini" not in page
    assert "<td>Fine-tuning lift: Normalised Gini</td>" in page
    assert "<td>Total predicted</td>" in page
    assert "fine-tuning lift over the frozen encoder: Normalised Gini +0.0120" in page
    # one column: no side-by-side layout whose short left side leaves a gap; sections in reading order
    assert "grid2" not in page and "display:flex;gap:48px" not in page
    order = [page.index(h) for h in ("<h2>Tiers and thresholds</h2>", "<h2>Score distribution</h2>",
                                     "<h2>Tier movement</h2>", "<h2>Champion model</h2>")]  # fmt: skip
    assert order == sorted(order)
    assert ui.format_bound(None) == "—" and ui.format_bound(144.48) == "144.48" and ui.format_bound(0.0) == "0.00"


def test_the_drift_table_shows_population_rows_as_labelled_shares() -> None:
    """A population row (share of users or orders; no PSI, no KS) reads as words and a percentage in
    its own column; a feature row keeps its PSI and KS and has no share."""
    health = {
        "drift_as_of": "2024-06-30",
        "drift": [
            {"feature": "monetary_90d", "psi": 0.31, "statistic": 0.2, "status": "alert", "model_version": "3"},
            {"feature": "_unseen_categories", "psi": None, "statistic": 0.062, "status": "alert", "model_version": "3"},
            {"feature": "_text_changed_share", "psi": None, "statistic": 0.02, "status": "ok", "model_version": "3"},
        ],
    }
    html = ui._health(health)
    table = html[html.index('id="health-drift"'):]
    assert "<th>share</th>" in table
    cells = {m.group(1): re.findall(r"<td>(.*?)</td>", m.group(2))
             for m in re.finditer(r'<tr data-feature="([^"]+)"[^>]*>(.*?)</tr>', table)}  # fmt: skip
    assert cells["monetary_90d"][:4] == ["monetary_90d", "0.310", "0.200", "—"]
    assert cells["_unseen_categories"][:4] == ["orders in categories unseen in training", "—", "—", "6.2%"]
    assert cells["_text_changed_share"][:4] == ["users whose text changed since the last night", "—", "—", "2.0%"]
    assert "_unseen_categories</td>" not in table  # the raw key is never shown
    assert 'id="health-clock"' not in html  # no clock feature drifted
    clock = ui._health({"drift_as_of": "2024-06-30", "drift": [
        {"feature": "tenure_days", "psi": 0.9, "statistic": 0.4, "status": "alert", "model_version": "3"}]})  # fmt: skip
    assert re.search(r'id="health-clock">tenure_days grow with the date .*never requests a retrain', clock)
