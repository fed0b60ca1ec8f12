"""Scrubbing personal data out of free text (search queries, review bodies, categories) before rendering.

:func:`scrub` replaces e-mail addresses (also obfuscated ones: ``jane [at] example [dot] com``),
phone and other long numbers, street addresses, URLs, @handles, whole names after an honorific
or an introduction / sign-off phrase, and the user's own id. Deterministic: a change that
alters its output for the same input is a change of the rendered text, so it needs a new
template version (:mod:`spendpred.textify`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

_URL = re.compile(r"(?i)\b(?:https?://|ftp://|www\.)\S*[^\s.,;:!?)\]\"']")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_HANDLE = re.compile(r"(?<![\w@])@\w{2,}")
_LONG_NUMBER = re.compile(r"(?<![\w])\+?\d(?:[\s().\-/]{0,2}\d){6,}(?![\w])")
_SPACE = re.compile(r"\s+")

# obfuscated e-mail addresses: "john at example dot com", "john [at] example [dot] com",
# "john(at)example.com", "john @ example dot com". A plain " at " needs at least one spelled-out
# or bracketed "dot" (so "bought it at walmart.com" stays); a bracketed "at" or "@" does not.
_LOCAL = r"[\w+\-]+(?:\.[\w+\-]+)*"
_LABEL = r"[\w\-]+"
_TLD = r"[A-Za-z]{2,12}\b"
_BRACKET_AT = r"\s*(?:@|[\[({<]\s*at\s*[\])}>])\s*"
_WORD_DOT = r"(?:\s*[\[({<]\s*dot\s*[\])}>]\s*|\s+dot\s+)"
_ANY_DOT = rf"(?:\.(?=\w)|{_WORD_DOT})"
_OBFUSCATED_EMAIL = re.compile(
    rf"(?i)(?<![\w.+\-]){_LOCAL}(?:"
    rf"{_BRACKET_AT}{_LABEL}(?:{_ANY_DOT}{_LABEL})*{_ANY_DOT}{_TLD}"
    rf"|\s+at\s+{_LABEL}(?:{_ANY_DOT}{_LABEL})*{_WORD_DOT}{_LABEL}(?:{_ANY_DOT}{_LABEL})*"
    r")(?<=[A-Za-z])\b"
)
_MAYBE_OBFUSCATED = re.compile(r"(?i)@|[\[({<]\s*at\s*[\])}>]|\sat\s")

# street addresses: a house number (221B, 12, 12-14) then up to 3 name words and a street
# type, optionally a compass direction ("1600 Pennsylvania Avenue NW"). Lower-case name words
# are accepted only before an unambiguous street type and when they are not ordinary words
# ("3 days by road" stays).
_STREET_TYPES = (
    "street|st|avenue|ave|av|road|rd|boulevard|blvd|lane|ln|drive|dr|court|ct|place|pl|square|sq|"
    "terrace|terr|way|close|crescent|cres|highway|hwy|parkway|pkwy|alley|circle|cir|row|strasse|straße"
)
_STRONG_STREET_TYPES = frozenset(
    "street st avenue ave road rd boulevard blvd lane ln drive highway hwy parkway pkwy strasse straße".split()
)
_STREET_ABBREVIATIONS = frozenset("st ave av rd blvd ln dr ct pl sq terr cres hwy pkwy cir".split())
_NOT_STREET_NAMES = frozenset("The A An And Or Of On In At By For To With".split())
_ADDRESS = re.compile(
    r"(?<![\w.,])(?P<number>\d{1,5}[A-Za-z]?(?:[-/]\d{1,5}[A-Za-z]?)?)"
    r"(?P<names>(?:\s+(?:\d{1,3}(?:st|nd|rd|th)|[^\W\d_][\w'’\-]*)){1,3}?)"
    rf"\s+(?P<kind>(?i:{_STREET_TYPES}))\b\.?"
    r"(?P<direction>\s+(?:NW|NE|SW|SE|N|S|E|W)\b\.?)?"
)

# names: after an honorific or an introduction / sign-off phrase (any case)
_NAME_PHRASE = re.compile(
    r"(?i)\b(?:(?P<honorific>mr|mrs|ms|miss|mx|dr|prof|sir|madam)\b(?P<dot>\.)?"
    r"|(?P<intro>my\s+name\s+is|i\s+am|i['’]m|this\s+is)\b"
    r"|(?P<signoff>signed|regards|thanks)\b)(?P<comma>[,:])?(?=\s)"
)
_NAME_WORD = re.compile(r"\s+(?P<word>[^\W\d_]\.(?!\w)|[^\W\d_][\w'’\-]*)")
_PARTICLES = frozenset("van von der den de la le du da di del bin al".split())
# ordinary words that end (or stop) a name: function words, common verbs and adjectives of
# reviews, so "I am happy", "this is great", "thanks for ...", "signed up" keep their text
_NOT_NAMES = frozenset(
    """
    a about after again all also always am an and any are as at away back be because been before being
    best both but by can cannot could did do does done each either else enough even ever every for from
    further had has have having he her here hers him his how however i if in into is it its just least
    less like lot lots many may me might mine more most much must my myself neither never no nor not now
    of off often on once only or other our ours out over own please quite rather really same she should
    since so some still such than that the their them then there these they this those though through
    thus to too under until up upon us very was we well were what when where whether which while who
    whom whose why will with within without would yet you your yours
    happy glad sure sorry satisfied pleased disappointed unhappy great good bad fine nice ok okay
    excellent perfect terrible awful amazing love loving like liking hate hating new old big small fast
    slow late early cheap expensive free busy ready able unable going getting trying looking waiting
    writing buying ordering returning using still again already afraid impressed confused done
    everyone everybody anyone guys team folks man mate buddy dear all y'all ya
    product item items order orders delivery shipping seller store shop service support price quality
    size colour color shoes phone copy receipt
    said says told tells asked asks helped helps sent sends delivered delivers called calls came comes
    gave gives got gets made makes took takes went goes replied replies answered answers wrote writes
    yes yeah yep nope hi hello hey
    """.split()
)
_MAX_LOWER_NAME = {"honorific": 2, "intro": 3, "signoff": 3}


def _is_capitalised(word: str) -> bool:
    return word[0].isupper()


def _particle_then_name(words: Sequence[tuple[int, str]]) -> bool:
    """Whether ``words`` are name particles ("van der") followed by a capitalised word."""
    for _, word in words:
        if word.lower() not in _PARTICLES:
            return _is_capitalised(word) and word.lower() not in _NOT_NAMES
    return False


def _take_name(text: str, pos: int, kind: str, lower_ok: bool) -> int:
    """Return the end of the name that starts after ``pos`` (``pos`` when there is none)."""
    end = pos
    words: list[tuple[int, str]] = []
    cursor = pos
    while len(words) < 6:
        m = _NAME_WORD.match(text, cursor)
        if not m:
            break
        words.append((m.end(), m.group("word")))
        cursor = m.end()
    if not words:
        return pos
    first = words[0][1]
    if _is_capitalised(first):
        # every following capitalised word (initials, particles between capitalised words)
        for i, (stop, word) in enumerate(words):
            if word.lower() in _NOT_NAMES:
                break
            if _is_capitalised(word):
                end = stop
            elif word.lower() in _PARTICLES and _particle_then_name(words[i:]):
                continue
            else:
                break
        return end
    if not lower_ok:
        return pos
    count = 0
    for stop, word in words:
        if count >= _MAX_LOWER_NAME[kind] or _is_capitalised(word) or word.lower() in _NOT_NAMES or "." in word:
            break
        end = stop
        count += 1
    return end


def _replace_names(text: str) -> str:
    out: list[str] = []
    last = 0
    for m in _NAME_PHRASE.finditer(text):
        if m.start() < last:
            continue
        kind = "honorific" if m.group("honorific") else "intro" if m.group("intro") else "signoff"
        phrase = m.group(0)
        if kind == "honorific":
            # a lower-case honorific without its dot ("ms office") only takes capitalised names
            lower_ok = bool(m.group("dot")) or _is_capitalised(phrase)
        elif kind == "intro":
            # "i am happy", "this is great": only "my name is" takes lower-case names
            lower_ok = m.group("intro").lower().startswith("my")
        else:
            # a sign-off ("thanks john", "regards, maria garcia") starts the text, a sentence or
            # a clause, and its lower-case name ends the text or a clause
            before = text[: m.start()].rstrip()
            lower_ok = not before or before[-1] in ".!?,;:-\n"
        end = _take_name(text, m.end(), kind, lower_ok)
        if kind == "signoff" and end > m.end() and not _is_capitalised(_NAME_WORD.match(text, m.end()).group("word")):
            rest = text[end:].lstrip(" \t")
            if rest and rest[0] not in ".!?,;:)\n":
                end = m.end()
        if end == m.end():
            continue
        if kind == "honorific":
            out.append(text[last : m.start()] + "[name]")
        else:
            out.append(text[last : m.end()] + " [name]")
        last = end
    out.append(text[last:])
    return "".join(out)


def _replace_addresses(text: str) -> str:
    def replace(m: re.Match[str]) -> str:
        names = m.group("names").split()
        kind = m.group("kind").lower()
        capitalised = all(w[0].isupper() or w[0].isdigit() for w in names)
        if not capitalised:
            lower = [w for w in names if not (w[0].isupper() or w[0].isdigit())]
            if kind not in _STRONG_STREET_TYPES or any(w.lower() in _NOT_NAMES for w in lower):
                return m.group(0)
        if any(w in _NOT_STREET_NAMES for w in names):
            return m.group(0)
        # the dot after a full street type ("Street.") ends the sentence: keep it
        keep_dot = m.group(0).endswith(".") and kind not in _STREET_ABBREVIATIONS and not m.group("direction")
        return "[address]." if keep_dot else "[address]"

    return _ADDRESS.sub(replace, text)


def scrub(text: str | None, forbidden: Sequence[str] = ()) -> str:
    """Return ``text`` with personal data replaced by placeholders, whitespace collapsed.

    Replaces URLs (``[url]``), e-mail addresses, also obfuscated ones ("john at example dot
    com", "john [at] example [dot] com", "john(at)example.com") (``[email]``), @handles
    (``[handle]``), each string in ``forbidden`` (e.g. the user's own id, matched
    case-insensitively) by ``[user]``, phone numbers and other numbers of 7+ digits
    (``[number]``), street addresses ("221B Baker Street", "12 Main St.", "1600 Pennsylvania
    Avenue NW") (``[address]``) and names (``[name]``): an honorific (Mr, Mrs, Ms, Miss, Mx,
    Dr, Prof, Sir, Madam) with the whole name after it, and the whole name after "my name
    is", "I am", "I'm", "this is", "signed", "regards", "thanks", in any case. A name is every
    following capitalised word (initials and particles such as "van der" included); a
    lower-case name (up to 3 words, 2 after an honorific) is taken only after "my name is", an
    honorific written with its dot or capitalised, or a sign-off that starts a sentence or
    clause and whose name ends one; ordinary words ("I am happy", "this is great", "thanks for
    ...") are never taken. ``None`` gives ``""``. Never raises.
    """
    if not text:
        return ""
    out = _scrub_links(str(text))
    for secret in forbidden:
        if secret and len(secret) >= 3 and secret.lower() in out.lower():
            out = re.sub(re.escape(secret), "[user]", out, flags=re.IGNORECASE)
    return _scrub_numbers_names(out)


@lru_cache(maxsize=4_096)
def _scrub_links(text: str) -> str:
    if "://" in text or "www." in text.lower():
        text = _URL.sub("[url]", text)
    if "@" in text:
        text = _EMAIL.sub("[email]", text)
    if _MAYBE_OBFUSCATED.search(text):
        text = _OBFUSCATED_EMAIL.sub("[email]", text)
    if "@" in text:
        text = _HANDLE.sub("[handle]", text)
    return text


@lru_cache(maxsize=4_096)
def _scrub_numbers_names(text: str) -> str:
    text = _LONG_NUMBER.sub("[number]", text)
    text = _replace_addresses(text)
    text = _replace_names(text)
    return _SPACE.sub(" ", text).strip()
