"""The heuristic policy's text builders: minimal pairs must differ in one word."""

from __future__ import annotations

import numpy as np

from sagex.agent import probetexts
from sagex.agent.profile import char_class, word_at
from sagex.remote.traces import Trace


def test_substitute_swaps_the_whole_word_holding_a_subword_token() -> None:
    assert probetexts.substitute("the heaven and the earth", "aven", "lowercase word", 0) == "the table and the earth"
    assert probetexts.substitute("in the beginning God", " God", "capitalized word", 0) == "in the beginning Paris"
    assert probetexts.substitute("no match here", " LORD", "capitalized word", 0) == "no match here"


def test_neutral_controls_avoid_the_word_but_never_run_dry() -> None:
    assert all("coffee" not in t for t in probetexts.neutral(3, 0, avoid="coffee"))
    assert len(probetexts.neutral(4, 2, avoid="n")) == 4  # a one-letter token does not empty the pool
    assert probetexts.neutral(2, 0) != probetexts.neutral(2, 1)  # a new round meets new sentences


def test_frames_rotate_and_keep_the_word() -> None:
    first, second = probetexts.in_frames("LORD", 2, 0), probetexts.in_frames(" LORD", 2, 1)
    assert all(" LORD" in t for t in first + second) and set(first).isdisjoint(second)


def test_word_at_joins_bpe_pieces_and_classes() -> None:
    trace = Trace("x", (0, 1, 2, 3), ("<s>", " he", "aven", " and"), frozenset({0}), np.zeros(4, np.float32))
    assert word_at(trace, 2) == " heaven" and word_at(trace, 3) == " and"
    assert [char_class(t) for t in (" 42", ";", " Paris", " river", "\n")] == [
        "number", "punctuation", "capitalized word", "lowercase word", "newline"]
