"""T2PO's turn-level dynamical sampling: turn entropy from renormalised top-k log-probs, and when to regenerate."""

from __future__ import annotations

import math

import pytest

from fieldkit.rl.tds import should_regenerate, token_entropy, turn_entropy


def test_entropy_of_renormalised_top_k() -> None:
    # two equal log-probs renormalise to 1/2 each, whatever their absolute value: entropy ln 2
    assert token_entropy([math.log(0.1), math.log(0.1)]) == pytest.approx(math.log(2))
    assert token_entropy([0.0]) == 0.0
    assert turn_entropy([[math.log(0.3)] * 4, [0.0]]) == pytest.approx((math.log(4) + 0) / 2)
    assert turn_entropy([]) == 0.0


@pytest.mark.parametrize(
    ("entropy", "previous", "tries", "expected"),
    [
        (1.0, None, 0, False),  # the first turn has nothing to compare with
        (1.0, 1.2, 0, True),  # moved by 0.2 < eta 0.3
        (1.0, 1.0, 0, False),  # did not move at all
        (1.0, 1.5, 0, False),  # moved by more than eta
        (1.0, 1.2, 2, False),  # retries used up
    ],
)
def test_regenerate_only_when_entropy_barely_moved(entropy, previous, tries, expected) -> None:
    assert should_regenerate(entropy, previous, eta=0.3, tries_so_far=tries, max_tries=2) is expected
