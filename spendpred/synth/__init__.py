"""Synthetic warehouse: a realistic e-commerce population for demos, tests and benchmarks.

Every user gets latent traits drawn once:

- **purchasing power** ``z ~ N(0, 1)``, used on a log scale (lognormal, heavy-tailed spend):
  it drives order frequency (Poisson rate ``∝ exp(0.55 z)``), basket size, item prices,
  the favourite categories (rich users lean to expensive ones), the segment, and the
  vocabulary of searches and reviews (premium words for high ``z``, budget words for low);
- **engagement** (correlated with power) drives browsing volume;
- **satisfaction** drives review ratings and the churn probability.

Timestamps follow weekly and yearly seasonality (a December peak and a Black-Friday spike
for orders, weekend browsing) and a daily rhythm. Signups are spread over the window (a
large share in its first weeks, standing in for long-time customers). Churners stop at a
churn date and their activity declines over the 90 days before it; reviews written shortly
before churning are worse and say so. About a third of users never buy, a few orders are
cancelled or refunded, about 20% of completed or refunded orders get a review, and about
1% of review bodies contain an e-mail address or phone number (fictitious: example.com,
555-01xx) for the scrubbing step to find.

Realistic nights: on a given day only a small share of the users does anything. The
**daily-active share** ``daily_active`` (default ``DEFAULT_DAILY_ACTIVE`` = 5%) is the share
of the users signed up by the end of a day who have any order, event or review on that day;
it follows the weekly rhythm (weekends about 15% above the mean, early weekdays about 10%
below) and is the same in every week of the window, whatever the churn and signups. Orders
and reviews come first (their own rates); browsing happens on *visit days*, drawn per day so
that the expected count of active users is exactly the share (engaged users visit more
often, churners less and less, then never), and a user's browsing volume is spread over
their visit days; the purchase funnel (search, views, add_to_cart) happens in the two hours
before each order. Measured (``tests/unit/test_synth.py``, 20,000 users over a year, the
last 60 days): 5.04% of the signed-up users act on an average day for the default (4.35% to
6.17% by day), 2.00% for 0.02, 10.0% for 0.10; 100,000 users over two years: 5.00%.
:func:`append_day` adds one more day of activity at the same share to an existing warehouse.

Every timestamp, ``signup_at`` included, lies inside the requested window
``[end_date - days + 1 00:00:00, end_date 23:59:59]`` and is a whole second.

Reproducibility: chunk ``k`` draws from ``SeedSequence(seed, spawn_key=(k,))``, so the same
``(users, days, end_date, seed, chunk_users, daily_active)`` always gives the same rows. The
data does depend on ``chunk_users`` (users are drawn chunk by chunk), which is why it has a
fixed default; keep it fixed when comparing runs.

Seeding writes everything in **one transaction** (empty the four source tables, then bulk
insert chunk by chunk): readers see the old contents until the new ones are complete, and
a failure leaves the warehouse as it was.

Modules: :mod:`~spendpred.synth.vocabulary` (what is drawn from: schemas, categories and
prices, words and phrases, rhythms and rates), :mod:`~spendpred.synth.population`
(:func:`generate`, chunk by chunk, no database), :mod:`~spendpred.synth.seeding`
(:func:`seed_warehouse`) and :mod:`~spendpred.synth.days` (:func:`append_day`). Every public
name is importable from ``spendpred.synth``.
"""

from __future__ import annotations

from spendpred.synth.days import SHIFT_KINDS, Shift, append_day, parse_shift
from spendpred.synth.population import DEFAULT_CHUNK_USERS, MAX_DAYS, MAX_USERS, generate
from spendpred.synth.seeding import seed_warehouse
from spendpred.synth.vocabulary import (
    BUDGET_WORDS,
    CATEGORIES,
    DECLINE_DAYS,
    DEFAULT_DAILY_ACTIVE,
    EVENT_TYPES,
    MAX_DAILY_ACTIVE,
    ORDER_STATUSES,
    PREMIUM_WORDS,
    SCHEMAS,
    SECONDS_PER_DAY,
    SEGMENTS,
)
from spendpred.warehouse import SOURCE_TABLES

__all__ = [
    "BUDGET_WORDS",
    "CATEGORIES",
    "DECLINE_DAYS",
    "DEFAULT_CHUNK_USERS",
    "DEFAULT_DAILY_ACTIVE",
    "EVENT_TYPES",
    "MAX_DAILY_ACTIVE",
    "MAX_DAYS",
    "MAX_USERS",
    "ORDER_STATUSES",
    "PREMIUM_WORDS",
    "SCHEMAS",
    "SECONDS_PER_DAY",
    "SEGMENTS",
    "SHIFT_KINDS",
    "SOURCE_TABLES",
    "Shift",
    "append_day",
    "generate",
    "parse_shift",
    "seed_warehouse",
]
