"""The trial order: arms interleaved, each arm its trials, an order naming a missing arm refused."""

from __future__ import annotations

import pytest

from supervisor import ConfigError
from supervisor._experiment.order import trial_order
from supervisor._experiment.report import report_data


def test_abba_is_forward_then_backward_repeated_to_the_trials() -> None:
    assert trial_order(2, 2, "ABBA") == [0, 1, 1, 0]
    assert trial_order(3, 2, "ABBA") == [0, 1, 2, 2, 1, 0]
    assert trial_order(2, 3, "ABBA") == [0, 1, 1, 0, 0, 1]


def test_abab_is_forward_each_time_and_random_is_seeded() -> None:
    assert trial_order(2, 2, "ABAB") == [0, 1, 0, 1]
    shuffled = trial_order(3, 4, "random", seed=7)
    assert shuffled == trial_order(3, 4, "random", seed=7)
    assert sorted(shuffled) == [0] * 4 + [1] * 4 + [2] * 4


def test_a_pattern_of_letters_repeats_and_skips_an_arm_that_has_run_its_trials() -> None:
    assert trial_order(2, 3, "AAB") == [0, 0, 1, 0, 1, 1]


def test_an_order_naming_an_arm_that_does_not_exist_or_leaving_one_out_is_refused() -> None:
    with pytest.raises(ConfigError, match="names arm C, and there are 2 arms"):
        trial_order(2, 1, "ABC")
    with pytest.raises(ConfigError, match="arm C never runs"):
        trial_order(3, 1, "ABBA".replace("BA", "B"))  # ABB
    with pytest.raises(ConfigError, match="expected ABBA, ABAB, random"):
        trial_order(2, 1, "A-B")


def test_the_report_gives_medians_ratios_to_the_first_arm_and_flags_overlapping_ranges() -> None:
    rows = [
        {"arm": "a", "trial": 1, "status": "ok", "x": 1.0, "y": 10},
        {"arm": "b", "trial": 2, "status": "ok", "x": 2.0, "y": 11},
        {"arm": "b", "trial": 3, "status": "ok", "x": 2.2, "y": 30},
        {"arm": "a", "trial": 4, "status": "ok", "x": 1.2, "y": 20},
        {"arm": "a", "trial": 5, "status": "failed", "x": 99.0, "y": 99},
    ]
    data = report_data(["a", "b"], rows)
    a, b = data["figures"]["x"]
    assert (a["median"], a["min"], a["max"], a["ratio"]) == (1.1, 1.0, 1.2, 1.0)  # the failed row is left out
    assert b["median"] == pytest.approx(2.1) and b["ratio"] == pytest.approx(2.1 / 1.1)
    assert not b["overlaps"]  # 2.0-2.2 against 1.0-1.2
    assert data["figures"]["y"][1]["overlaps"]  # 11-30 against 10-20
    assert "trial" not in data["figures"]
    assert data["arms"] == [{"arm": "a", "trials": 3, "ok": 2}, {"arm": "b", "trials": 2, "ok": 2}]
