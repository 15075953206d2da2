"""Spikes on synthetic usage with known spikes and known non-spikes: a weekend-heavy week must not alarm, a model
that suddenly spends five times its usual must, and small numbers must not look dramatic."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.spikes import SpikeQuery, find_spikes, spikes_from_params
from tokentrail.processor.schema import UsageRecord

from tests.helpers.reports import rec, write

SATURDAY = date(2025, 3, 15)
AFTER_SATURDAY = datetime(2025, 3, 16, tzinfo=UTC)  # as_of: the latest complete day is that Saturday


def day_records(day: date, model: str, n: int, rng: random.Random, **fields: Any) -> list[UsageRecord]:
    return [
        rec(f"{day}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:00", model=model, total_cost=Decimal("0.1"),
            **fields)
        for _ in range(n)
    ]


@pytest.fixture(scope="module")
def weekly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight weeks of a weekend-heavy product (weekends 3x weekdays, +-10 % noise) ending on Saturday 2025-03-15:

    * ``steady``: follows the weekly pattern, also on the last Saturday (a known non-spike);
    * ``surge``: five times its usual on the last Saturday (a known spike);
    * ``trickle``: one request a day, two on the last Saturday (a known non-spike: counting noise);
    * ``once-hot``: ten times its usual on one earlier Saturday only (an outlier the baseline must shrug off);
    * ``newcomer``: first seen on the last Saturday, $5 of it (a known spike).
    """
    data = tmp_path_factory.mktemp("weekly")
    rng = random.Random(7)
    records: list[UsageRecord] = []
    for back in range(56):
        day = SATURDAY - timedelta(days=back)
        weekend = day.weekday() >= 5
        for model, base in (("steady", 20), ("surge", 10), ("once-hot", 10)):
            n = round(base * (3 if weekend else 1) * rng.uniform(0.9, 1.1))
            if model == "surge" and back == 0:
                n *= 5
            if model == "once-hot" and back == 14:
                n *= 10
            records += day_records(day, model, n, rng)
        records += day_records(day, "trickle", 2 if back == 0 else 1, rng)
    records += day_records(SATURDAY, "newcomer", 50, rng)
    write(data, records)
    return data


def spikes(data: Path, **query: Any) -> dict[Any, dict[str, Any]]:
    result = find_spikes(data, SpikeQuery(as_of=AFTER_SATURDAY, **query))
    return {row["value"]: row for row in result.rows}


def test_known_spikes_are_found_and_known_non_spikes_are_not(weekly: Path) -> None:
    found = spikes(weekly)
    assert set(found) == {"surge", "newcomer"}
    surge = found["surge"]
    assert surge["spike"] and surge["score"] > 10
    assert Decimal("4") < surge["ratio"] < Decimal("6")
    assert Decimal("2.5") < surge["expected"] < Decimal("3.5")  # ~30 Saturday requests at $0.10
    assert found["newcomer"]["expected"] == 0 and found["newcomer"]["ratio"] is None


def test_weekly_seasonality_does_not_alarm_but_comparing_with_the_days_before_would(weekly: Path) -> None:
    """The weekend is three times the week: against the same weekday it is normal, against the days just before
    it would look like a spike; that is why days compare with the same weekday by default."""
    assert "steady" not in spikes(weekly, seasonality="weekly")
    naive = spikes(weekly, seasonality="none")
    assert "steady" in naive and naive["steady"]["score"] > 3.5


def test_an_old_outlier_in_the_baseline_does_not_raise_the_expectation(weekly: Path) -> None:
    everything = spikes(weekly, include_all=True)
    once_hot = everything["once-hot"]
    assert not once_hot["spike"]
    assert Decimal("2.5") < once_hot["expected"] < Decimal("3.5")  # the median ignores the 10x Saturday


def test_small_numbers_are_not_spikes(weekly: Path) -> None:
    trickle = spikes(weekly, include_all=True)["trickle"]
    assert (trickle["observed"], trickle["expected"], trickle["spike"]) == (Decimal("0.2"), Decimal("0.1"), False)


def test_a_newcomer_is_a_spike_only_past_min_increase(weekly: Path) -> None:
    assert "newcomer" in spikes(weekly, min_increase=Decimal(5))
    assert "newcomer" not in spikes(weekly, min_increase=Decimal(6))


def test_include_all_lists_every_value_highest_score_first(weekly: Path) -> None:
    result = find_spikes(weekly, SpikeQuery(as_of=AFTER_SATURDAY, include_all=True))
    scores = [row["score"] for row in result.rows]
    assert scores == sorted(scores, reverse=True)
    assert {row["value"] for row in result.rows} == {"steady", "surge", "trickle", "once-hot", "newcomer"}
    assert len(result.baseline_windows) == 6
    assert [w.date() for w in result.baseline_windows] == [SATURDAY - timedelta(weeks=k) for k in range(1, 7)]


def test_request_count_and_total_dimensions(weekly: Path) -> None:
    found = spikes(weekly, dimension="total", metric="request_count", include_all=True)
    (total,) = found.values()
    assert isinstance(total["observed"], int) and total["observed"] > total["expected"]


def test_partial_compares_the_day_so_far_with_the_same_hours_before(weekly: Path) -> None:
    noon = datetime(2025, 3, 15, 12, tzinfo=UTC)
    result = find_spikes(weekly, SpikeQuery(as_of=noon, partial=True, include_all=True))
    assert (result.window_start, result.window_end) == (datetime(2025, 3, 15, tzinfo=UTC), noon)
    rows = {row["value"]: row for row in result.rows}
    assert rows["surge"]["spike"] and not rows["steady"]["spike"]
    assert Decimal(2) < rows["steady"]["expected"] < Decimal(4)  # half of a ~$6 Saturday: cut like the window


@pytest.fixture(scope="module")
def hourly(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three weeks of a daytime product: 40 requests an hour from 08:00 to 18:00 UTC, 4 at night, per user; on the
    last day, user ``bursty`` makes 200 at 14:00 (a spike) while ``calm`` keeps to the usual."""
    data = tmp_path_factory.mktemp("hourly")
    rng = random.Random(3)
    records: list[UsageRecord] = []
    last = date(2025, 3, 15)
    for back in range(21):
        day = last - timedelta(days=back)
        for hour in range(24):
            for user in ("calm", "bursty"):
                n = round((40 if 8 <= hour < 18 else 4) * rng.uniform(0.9, 1.1))
                if user == "bursty" and back == 0 and hour == 14:
                    n = 200
                records += [rec(f"{day}T{hour:02d}:{rng.randint(0, 59):02d}:00", user_id=user,
                                total_cost=Decimal("0.01")) for _ in range(n)]
    write(data, records)
    return data


def test_an_hourly_spike_against_the_same_hour_on_previous_days(hourly: Path) -> None:
    at_three = datetime(2025, 3, 15, 15, 5, tzinfo=UTC)  # latest complete hour: 14:00-15:00
    result = find_spikes(hourly, SpikeQuery(dimension="user", window="hour", metric="request_count", as_of=at_three,
                                            include_all=True))
    rows = {row["value"]: row for row in result.rows}
    assert result.window_start == datetime(2025, 3, 15, 14, tzinfo=UTC)
    assert rows["bursty"]["spike"] and rows["bursty"]["observed"] == 200
    assert not rows["calm"]["spike"]
    assert len(result.baseline_windows) == 14


def test_the_morning_ramp_is_not_a_spike_when_compared_with_other_mornings(hourly: Path) -> None:
    at_nine = datetime(2025, 3, 15, 9, 0, tzinfo=UTC)  # 08:00-09:00: ten times the night before
    daily = find_spikes(hourly, SpikeQuery(dimension="user", window="hour", metric="request_count", as_of=at_nine))
    assert daily.rows == []
    naive = find_spikes(hourly, SpikeQuery(dimension="user", window="hour", metric="request_count", as_of=at_nine,
                                           seasonality="none"))
    assert {row["value"] for row in naive.rows} == {"calm", "bursty"}


def test_tags_count_a_request_in_each_of_its_tags(tmp_path: Path) -> None:
    rng = random.Random(1)
    records = []
    for back in range(43):
        day = SATURDAY - timedelta(days=back)
        n = 50 if back == 0 else 10
        records += day_records(day, "m", n, rng, tags=["feature:chat", "feature:chat", "plan:pro"])
    write(tmp_path, records)
    rows = spikes(tmp_path, dimension="tag")
    assert {v: r["observed"] for v, r in rows.items()} == {"feature:chat": Decimal(5), "plan:pro": Decimal(5)}


def test_too_little_history_gives_no_judgement_and_says_why(tmp_path: Path) -> None:
    rng = random.Random(1)
    write(tmp_path, day_records(SATURDAY, "m", 10, rng) + day_records(SATURDAY - timedelta(days=7), "m", 1, rng))
    result = find_spikes(tmp_path, SpikeQuery(as_of=AFTER_SATURDAY))
    assert result.rows == []
    assert result.note == "only 1 of 6 baseline windows have any records; at least 3 are needed"
    assert result.body()["note"] == result.note


def test_an_empty_dataset_gives_no_judgement(tmp_path: Path) -> None:
    assert find_spikes(tmp_path, SpikeQuery(as_of=AFTER_SATURDAY)).note is not None


@pytest.mark.parametrize(("params", "message"), [
    ({"dimension": "colour"}, "unknown dimension 'colour'"),
    ({"window": "week"}, "unknown window 'week'"),
    ({"seasonality": "yearly"}, "unknown seasonality 'yearly'"),
    ({"window": "day", "seasonality": "daily"}, "seasonality=daily compares hours"),
    ({"baseline": "2"}, "baseline must be a whole number from 3 to 60"),
    ({"baseline": "61"}, "baseline must be a whole number from 3 to 60"),
    ({"metric": "unpriced_request_count"}, "unknown metric 'unpriced_request_count'"),
    ({"threshold": "-1"}, "threshold must be a number above 0"),
    ({"threshold": "high"}, "threshold must be a number"),
    ({"min_increase": "-1"}, "min_increase must be a number of 0 or more"),
    ({"as_of": "soon"}, "as_of must be a date"),
    ({"include_all": "perhaps"}, "include_all must be true or false"),
])
def test_bad_parameters_are_refused(tmp_path: Path, params: dict[str, str], message: str) -> None:
    with pytest.raises(ReportParameterError, match=message):
        spikes_from_params(tmp_path, params)


def test_parameters_reach_the_query(weekly: Path) -> None:
    result = spikes_from_params(weekly, {"as_of": "2025-03-15", "baseline": "4", "threshold": "100",
                                         "include_all": "true", "limit": "2"})
    assert len(result.baseline_windows) == 4 and result.query.threshold == 100
    assert len(result.rows) == 2 and result.truncated


def test_cli_spikes_prints_what_it_compared_and_the_spikes(weekly: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["spikes", "--data-dir", str(weekly), "--as-of", "2025-03-15"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("total_cost by model, 2025-03-15T00:00:00Z to 2025-03-16T00:00:00Z, against 6 weekly")
    assert {line.split()[1] for line in out.splitlines()[4:]} == {"surge", "newcomer"}
    assert "new" in out  # the newcomer's ratio: nothing expected
    assert cli.main(["spikes", "--data-dir", str(weekly), "--as-of", "2025-03-15", "--min-increase", "100"]) == 0
    assert capsys.readouterr().out.rstrip().endswith("No spikes.")
    assert cli.main(["spikes", "--data-dir", str(weekly), "--window", "fortnight"]) == 2
