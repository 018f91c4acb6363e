"""Integer arrays and their probabilities read out of replies."""

from __future__ import annotations

import math

import pytest

from sagex.llm import TokenLogprob
from sagex.scoring.readout import read_array

SCALE = range(11)


def lp(token: str, p: float, *alts: tuple[str, float]) -> TokenLogprob:
    top = ((token, math.log(p)), *((a, math.log(q)) for a, q in alts))
    return TokenLogprob(token, math.log(p), top)


def plain(token: str) -> TokenLogprob:
    return TokenLogprob(token, 0.0, ((token, 0.0),))


def test_written_values_without_logprobs() -> None:
    entries = read_array('Sure: [0, 3, "7", 10, null, 12, x]', None, SCALE)
    assert entries is not None
    assert [e.value for e in entries] == [0, 3, 7, 10, None, None, None]  # out of range or not a number: missing
    assert [e.expected for e in entries][:4] == [0.0, 3.0, 7.0, 10.0]
    assert entries[4].expected is None and entries[0].distribution is None


def test_no_array_and_empty_array() -> None:
    assert read_array("I cannot tell.", None, SCALE) is None
    assert read_array("[]", None, SCALE) == []


def test_the_longest_array_is_the_answer() -> None:
    entries = read_array("Token [1] is odd. Answer: [0, 0, 4]", None, SCALE)
    assert entries is not None and [e.value for e in entries] == [0, 0, 4]


def test_expected_value_over_digit_alternatives() -> None:
    tokens = [plain("["), lp("0", 0.6, ("1", 0.2), ("x", 0.1)), plain(","), lp(" 8", 0.5, (" 6", 0.25), ("6", 0.25)),
              plain("]")]
    text = "".join(t.token for t in tokens)
    entries = read_array(text, tokens, SCALE)
    assert entries is not None and [e.value for e in entries] == [0, 8]
    first, second = entries
    assert first.distribution == pytest.approx({0: 0.75, 1: 0.25})  # "x" is not a digit: renormalised away
    assert first.expected == pytest.approx(0.25)
    # " 6" and "6" are the same answer after the comma.
    assert second.distribution == pytest.approx({8: 0.5, 6: 0.5})
    assert second.expected == pytest.approx(7.0)


def test_ten_split_into_two_tokens_is_separated() -> None:
    tokens = [plain("["), lp("1", 0.8, ("0", 0.2)), lp("0", 0.75, (",", 0.25)), plain("]")]
    entries = read_array("[10]", tokens, SCALE)
    assert entries is not None and entries[0].value == 10
    assert entries[0].distribution == pytest.approx({0: 0.2, 1: 0.8 * 0.25, 10: 0.8 * 0.75})
    assert entries[0].expected == pytest.approx(0.2 + 8 * 0.75)


def test_single_token_ten_and_yes_no_probability() -> None:
    tokens = [plain("["), lp("10", 0.9, ("9", 0.1)), plain("]")]
    entries = read_array("[10]", tokens, SCALE)
    assert entries is not None and entries[0].expected == pytest.approx(9.9)
    yes_no = [plain("["), lp("1", 0.7, ("0", 0.1), ("2", 0.2)), plain(", "), plain("0"), plain("]")]
    entries = read_array("[1, 0]", yes_no, range(2))
    assert entries is not None
    assert entries[0].probability(1) == pytest.approx(0.7 / 0.8)
    assert entries[1].probability(1) == 0.0


def test_logprobs_that_do_not_spell_the_text_are_ignored() -> None:
    tokens = [plain("["), lp("3", 0.5, ("4", 0.5)), plain("]")]
    entries = read_array("[5]", tokens, SCALE)
    assert entries is not None and entries[0].value == 5 and entries[0].distribution is None


def test_non_ascii_digit_alternatives_are_ignored() -> None:
    # "²".isdigit() is true but int("²") fails: such alternatives must not crash the read-out.
    entries = read_array("[3]", [plain("["), lp("3", 0.9, ("²", 0.05), ("4", 0.05)), plain("]")], SCALE)
    assert entries is not None and entries[0].value == 3
    assert entries[0].distribution is not None and set(entries[0].distribution) == {3, 4}
