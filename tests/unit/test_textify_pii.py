"""Scrubbing personal data out of free text (``spendpred.textify.pii.scrub``): what is removed whole, and
the ordinary look-alikes that must survive. Rendered texts are scrubbed too: ``test_textify.py``."""

from __future__ import annotations

import pytest

from spendpred.textify import scrub


def test_scrub_keeps_ordinary_text_and_prices() -> None:
    assert scrub("  Good value\nfor 45.00, size 42 ") == "Good value for 45.00, size 42"
    assert scrub("I am happy with it. This is great") == "I am happy with it. This is great"
    assert scrub(None) == ""


# each case: (adversarial text, scrubbed text) with an ordinary look-alike beside it that must survive
NAME_CASES = [
    ("Mr. John Smith was helpful", "[name] was helpful"),
    ("mr. john smith was helpful", "[name] was helpful"),
    ("Ask Dr John Ronald Tolkien today", "Ask [name] today"),
    ("Ms. J. R. Smith replied", "[name] replied"),
    ("Mrs. smith delivered it", "[name] delivered it"),
    ("my name is maria garcia", "my name is [name]"),
    ("My Name Is Maria Garcia Lopez and i love shoes", "My Name Is [name] and i love shoes"),
    ("MY NAME IS JOHN SMITH.", "MY NAME IS [name]."),
    ("This is John Smith speaking", "This is [name] speaking"),
    ("i'm Anna Lee, a regular buyer", "i'm [name], a regular buyer"),
    ("I’m Anna Lee.", "I’m [name]."),
    ("thanks john", "thanks [name]"),
    ("Great seller. thanks maria garcia!", "Great seller. thanks [name]!"),
    ("THANKS, JOHN", "THANKS, [name]"),
    ("Best regards, Maria van der Berg", "Best regards, [name]"),
    ("regards,\njane doe", "regards, [name]"),
    ("signed: bob", "signed: [name]"),
    ("Signed Jean-Luc O'Brien", "Signed [name]"),
]
NAME_NEGATIVES = [
    "I am happy with 2 items",
    "I AM HAPPY WITH 2 ITEMS",
    "i am not sure it fits",
    "I'm sure it works",
    "this is great",
    "This is my third order",
    "thanks for the fast delivery",
    "thanks so much, great seller",
    "Thanks again!",
    "signed up last week",
    "came with a signed copy of the book",
    "kind regards to the team",
    "ms office works fine",
    "I miss the old design",
    "my name is on the box",
    "Dear seller, the van was late",
]


@pytest.mark.parametrize(("text", "expected"), NAME_CASES)
def test_names_after_recognised_phrases_are_removed_whole(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text", NAME_NEGATIVES)
def test_ordinary_words_after_the_phrases_survive(text: str) -> None:
    assert scrub(text) == " ".join(text.split())


EMAIL_CASES = [
    ("contact john at example dot com please", "contact [email] please"),
    ("contact John.Doe AT gmail DOT co DOT uk now", "contact [email] now"),
    ("john [at] example [dot] com", "[email]"),
    ("john (at) example (dot) com", "[email]"),
    ("write to john(at)example.com.", "write to [email]."),
    ("jane{at}mail.example.org", "[email]"),
    ("john@example dot com", "[email]"),
]
EMAIL_NEGATIVES = [
    "I bought it at walmart.com",
    "I arrived at home at 5 and the dot is red",
    "look at me. Great",
    "great at the price, dot pattern is nice",
    "polka dot dress at 20.00",
]


@pytest.mark.parametrize(("text", "expected"), EMAIL_CASES)
def test_obfuscated_emails_are_removed(text: str, expected: str) -> None:
    assert scrub(text) == expected
    assert "example" not in scrub(text).lower()


@pytest.mark.parametrize("text", EMAIL_NEGATIVES)
def test_ordinary_at_and_dot_survive(text: str) -> None:
    assert scrub(text) == text


ADDRESS_CASES = [
    ("221B Baker Street, London", "[address], London"),
    ("12 Main St. is my place", "[address] is my place"),
    ("1600 Pennsylvania Avenue NW, Washington", "[address], Washington"),
    ("ship to 42 elm street please", "ship to [address] please"),
    ("350 5th Avenue", "[address]"),
    ("12-14 Old Kent Road.", "[address]."),
    ("send it to 7 Privet Drive.", "send it to [address]."),
    ("10 Downing St. London", "[address] London"),
]
ADDRESS_NEGATIVES = [
    "took 3 days by road",
    "2 items on the way",
    "I am happy with 2 items",
    "Ordered 2 pairs and 3 Nike Air shoes",
    "size 42 fits, 5 stars",
    "the 2 main roads were closed",
    "Rated 5 On The Road",
    "arrived in 2 days, street price 45.00",
]


@pytest.mark.parametrize(("text", "expected"), ADDRESS_CASES)
def test_street_addresses_are_removed(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize("text", ADDRESS_NEGATIVES)
def test_numbers_and_roads_in_ordinary_text_survive(text: str) -> None:
    assert scrub(text) == text
