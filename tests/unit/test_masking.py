"""What a message may show of its input: ``masking.mask_url``, ``masking.mask_secrets``, ``masking.excerpt``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from spendpred.masking import MASK, excerpt, mask_secrets, mask_url

SECRET = "s3cret"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://bob:{SECRET}@db:5432/w",
        f"postgresql+psycopg2://bob:{SECRET}@db/w?sslmode=require",
        f"postgresql://bob@db/w?password={SECRET}",
        f"s3://key:{SECRET}@bucket/path",
    ],
)
def test_mask_url_hides_the_password_wherever_it_sits(url: str) -> None:
    shown = mask_url(url)
    assert SECRET not in shown and MASK in shown


def test_mask_url_takes_an_engine_url_and_renders_it_as_sqlalchemy_does() -> None:
    url = sa.engine.make_url(f"postgresql+psycopg2://bob:{SECRET}@db:5432/w")
    assert mask_url(url) == url.render_as_string(hide_password=True) == "postgresql+psycopg2://bob:***@db:5432/w"
    assert mask_url("sqlite:////tmp/w.db") == "sqlite:////tmp/w.db"


def test_mask_url_masks_an_unparsable_url_by_pattern() -> None:
    shown = mask_url(f"not a url://bob:{SECRET}@host and more")
    assert SECRET not in shown and shown.startswith("not a url://bob:***@host")


def test_mask_secrets_masks_urls_and_libpq_passwords_inside_text() -> None:
    text = f"cannot connect to postgresql://bob:{SECRET}@db/w (host=db password='{SECRET}')"
    assert SECRET not in mask_secrets(text)
    assert mask_secrets("postgresql://bob:***@db/w") == "postgresql://bob:***@db/w"  # already masked: unchanged
    assert mask_secrets("no secret here") == "no secret here"


def test_excerpt_cuts_long_input_and_keeps_short_input_whole() -> None:
    assert excerpt("12x") == "'12x'"
    long = "x" * 500
    shown = excerpt(long, 20)
    assert shown == f"{'x' * 20!r}... (500 characters)" and len(shown) < 50
