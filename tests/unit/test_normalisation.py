"""The cache's normalisation never changes meaning: a corpus of pairs that must stay apart
and pairs that must merge (rules in `app.cache.keys.normalise`)."""
# ruff: noqa: RUF001  (the corpus is made of confusable characters on purpose)

from __future__ import annotations

import unicodedata
import uuid

import pytest

from app.cache.keys import L1_SCHEMA, L2_SCHEMA, KeyBuilder, normalise

WS = uuid.UUID("44444444-4444-4444-8444-444444444444")

# (a, b, why): different questions, or texts a model may read differently. NFKC or case
# folding would merge every one of them.
MUST_STAY_APART = [
    ("anxiety²", "anxiety2", "superscript"),
    ("10⁻³ mol", "10-3 mol", "superscript minus and digit"),
    ("m²", "m2", "superscript unit"),
    ("H₂O", "H2O", "subscript"),
    ("SpO₂ below 90?", "SpO2 below 90?", "subscript"),
    ("½ tablet", "1/2 tablet", "vulgar fraction vs slash"),
    ("½ tablet", "1⁄2 tablet", "vulgar fraction vs fraction slash (its NFKC form)"),
    ("¼", "1/4", "vulgar fraction"),
    ("dose ①", "dose 1", "circled digit"),
    ("⑴", "(1)", "parenthesised digit"),
    ("𝟏𝟎 mg", "10 mg", "mathematical bold digits"),
    ("１０ mg", "10 mg", "full-width digits"),
    ("Ⅳ", "IV", "roman numeral sign"),
    ("Maße", "Masse", "ß vs ss: measurements vs mass"),
    ("Straße", "STRASSE", "ß vs upper-case SS"),
    ("ß", "ss", "casefold maps ß to ss"),
    ("ẞ", "ß", "capital sharp s"),
    ("sınır", "sinir", "dotless vs dotted i: Turkish 'limit' vs 'nerve'"),
    ("ı", "i", "dotless i"),
    ("İ", "i", "dotted capital I"),
    ("İ", "I", "dotted vs plain capital I"),
    ("I", "ı", "Turkish lower case of I"),
    ("ＡＤＨＤ", "ADHD", "full-width letters"),
    ("ｍｇ", "mg", "full-width letters"),
    ("ﬁne", "fine", "ligature"),
    ("SAD", "sad", "seasonal affective disorder vs an adjective"),
    ("History of MS?", "History of ms?", "multiple sclerosis vs milliseconds"),
    ("Does the client have ADD?", "Does the client have add?", "acronym vs verb"),
    ("What is the plan?", "what is the plan?", "case is kept: one more miss, never wrong"),
    ("1 000", "1000", "whitespace is collapsed, never removed"),
    ("5 mg", "5mg", "whitespace is collapsed, never removed"),
    ("a\u200bb", "ab", "zero-width space is not whitespace"),
    ("co\u00adoperate", "cooperate", "soft hyphen is kept"),
]

# (a, b, why): the same text — canonically equivalent, or differing only in spacing.
MUST_MERGE = [
    ("What  is the plan?", "What is the plan?", "extra spaces"),
    ("  What is the plan?  ", "What is the plan?", "leading and trailing spaces"),
    ("What\tis\r\nthe\nplan?", "What is the plan?", "tabs and line breaks"),
    ("What\u00a0is\u2003the\u3000plan?", "What is the plan?", "no-break, em, ideographic"),
    ("caf\u00e9", "cafe\u0301", "NFC vs NFD accent"),
    ("na\u00efve", "nai\u0308ve", "NFC vs NFD diaeresis"),
    ("\u00c5ngstr\u00f6m", "A\u030angstro\u0308m", "NFC vs NFD ring and diaeresis"),
    ("\u0130", "I\u0307", "dotted capital I, precomposed vs combining dot"),
    ("a\u0323\u0307", "a\u0307\u0323", "combining marks in either canonical order"),
    ("\uac00", "\u1100\u1161", "Hangul syllable vs conjoining jamo"),
    ("37 \u212a", "37 K", "KELVIN SIGN is canonically K"),
    ("5 \u212b", "5 \u00c5", "ANGSTROM SIGN is canonically Å"),
    ("10 \u2126", "10 \u03a9", "OHM SIGN is canonically omega"),
]


def _ids(pairs: list[tuple[str, str, str]]) -> list[str]:
    return [why for _a, _b, why in pairs]


@pytest.mark.parametrize(("a", "b", "why"), MUST_STAY_APART, ids=_ids(MUST_STAY_APART))
def test_different_questions_stay_apart(a: str, b: str, why: str) -> None:
    keys = KeyBuilder(b"secret")
    assert normalise(a) != normalise(b), why
    assert keys.digest(a) != keys.digest(b), why
    assert keys.l1(WS, None, a).entry != keys.l1(WS, None, b).entry


@pytest.mark.parametrize(("a", "b", "why"), MUST_MERGE, ids=_ids(MUST_MERGE))
def test_the_same_question_merges(a: str, b: str, why: str) -> None:
    keys = KeyBuilder(b"secret")
    assert normalise(a) == normalise(b), why
    assert keys.digest(a) == keys.digest(b), why


def test_the_old_rules_merged_the_pairs_that_must_stay_apart() -> None:
    """The corpus tests something: NFKC + casefold (the a1 rules) merged most of it."""
    def old(text: str) -> str:
        return " ".join(unicodedata.normalize("NFKC", text).casefold().split())

    merged = [why for a, b, why in MUST_STAY_APART if old(a) == old(b)]
    # The reported incident; the Turkish i pairs and the spacing pairs were apart already.
    assert old("anxiety²") == old("anxiety2") and old("Maße") == old("Masse")
    assert len(merged) == 21, merged


@pytest.mark.parametrize("text", [a for a, _b, _w in MUST_STAY_APART + MUST_MERGE]
                         + [b for _a, b, _w in MUST_STAY_APART + MUST_MERGE])
def test_normalise_is_idempotent_and_in_nfc(text: str) -> None:
    once = normalise(text)
    assert normalise(once) == once
    assert unicodedata.is_normalized("NFC", once)
    assert once == once.strip() and "  " not in once


def test_the_key_format_is_versioned_so_old_entries_are_misses() -> None:
    """a1 keys were filled under NFKC + casefold: `anxiety2` must not find `anxiety²`'s."""
    keys = KeyBuilder(b"secret")
    ws, client = uuid.uuid4(), uuid.uuid4()
    assert f":l1:{L1_SCHEMA}:" in keys.l1(ws, client, "q").entry and L1_SCHEMA != "a1"
    assert f":l1:{L1_SCHEMA}:" in keys.l1(ws, None, "q").entry
    assert keys.l2(ws, "m", 8, "q").startswith(f"ai-cache:l2:{L2_SCHEMA}:{{{ws}}}:m:8:")
    assert keys.l2(None, "m", 8, "q").startswith(f"ai-cache:l2:{L2_SCHEMA}:global:")
