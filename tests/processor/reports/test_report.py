"""The report, as a specification: what each group, date part and filter returns over a Parquet dataset laid out
as the receiver writes it (``usage/date=YYYY-MM-DD/part-*.parquet``)."""

from __future__ import annotations

import json
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from tokentrail.processor.reports.errors import ReportParameterError
from tokentrail.processor.reports.formatting import report_json
from tokentrail.processor.reports.query import METRICS, ReportQuery
from tokentrail.processor.reports.report import Report, run_report
from tokentrail.processor.reports.sql import build_sql
from tokentrail.processor.schema import UNPRICED

from tests.helpers.reports import keys, q, rec, write


@pytest.fixture
def data(tmp_path: Path) -> Path:
    write(
        tmp_path,
        [
            rec("2025-03-03T09:15:00", user_id="alice", tags=["plan:pro", "feature:chat"], service="web",
                api="chat.completions", environment="prod", operation="chat", credential_type="system",
                conversation_id="conv_1", trace_id="ab" * 16,
                total_cost=Decimal("0.5"), market_cost=Decimal("0.5"), cached_input_tokens=4, reasoning_tokens=1),
            rec("2025-03-03T09:45:00", user_id="bob", tags=["plan:free"], model="claude-haiku-4-5",
                provider="anthropic", service="worker", api="messages", environment="staging",
                operation="chat", credential_type="byok", total_cost=Decimal("0"), market_cost=Decimal("3"),
                cache_creation_input_tokens=7),
            rec("2025-03-03T10:05:00", user_id="alice", tags=["plan:pro"], service="web", api="responses",
                environment="prod", operation="embeddings", total_cost=Decimal("2"), market_cost=Decimal("2"),
                conversation_id="conv_1", trace_id="ab" * 16),
            rec("2025-03-04T23:59:59", user_id=None, tags=[], service="web", api="chat.completions",
                environment="prod", operation="chat", total_cost=Decimal("4"), market_cost=Decimal("4")),
            rec("2025-03-10T00:00:00", user_id="carol", tags=["plan:pro", "feature:search"], service="web",
                api="chat.completions", environment="prod", operation="chat", conversation_id="conv_2"),
            rec("2025-04-01T12:00:00", user_id="alice", tags=["plan:pro"], service="web",
                api="chat.completions", environment="prod", operation="chat"),
        ],
    )
    return tmp_path


# --- grouping -------------------------------------------------------------------------------------------------


def test_default_group_by_is_one_row_per_day_keyed_by_day(data: Path) -> None:
    rows = run_report(data, q())
    assert keys(rows, "day", "request_count") == [("2025-03-03", 3), ("2025-03-04", 1), ("2025-03-10", 1)]
    assert list(rows[0]) == ["day", *METRICS]


def test_group_by_user_keys_rows_by_user_and_keeps_requests_without_a_user(data: Path) -> None:
    rows = run_report(data, q(group_by="user"))
    assert keys(rows, "user", "request_count", "total_cost") == [
        (None, 1, Decimal(4)),
        ("alice", 2, Decimal("2.5")),
        ("carol", 1, Decimal(1)),
        ("bob", 1, Decimal(0)),
    ]
    assert "day" not in rows[0]


@pytest.mark.parametrize(
    ("group", "expected"),
    [
        ("model", {"gpt-4o-mini": 4, "claude-haiku-4-5": 1}),
        ("provider", {"openai": 4, "anthropic": 1}),
        ("credential_type", {"system": 4, "byok": 1}),
        ("service", {"web": 4, "worker": 1}),
        ("api", {"chat.completions": 3, "messages": 1, "responses": 1}),
        ("environment", {"prod": 4, "staging": 1}),
        ("operation", {"chat": 4, "embeddings": 1}),
    ],
)
def test_group_by_a_dimension_gives_one_row_per_value(data: Path, group: str, expected: dict[str, int]) -> None:
    rows = run_report(data, q(group_by=group))
    assert {row[group]: row["request_count"] for row in rows} == expected
    assert all(set(row) == {group, *METRICS} for row in rows)


def test_group_by_several_gives_one_row_per_combination(data: Path) -> None:
    rows = run_report(data, q(group_by="provider,credential_type,environment"))
    assert sorted(keys(rows, "provider", "credential_type", "environment", "request_count")) == [
        ("anthropic", "byok", "staging", 1),
        ("openai", "system", "prod", 4),
    ]


def test_group_by_day_and_model_rows_carry_both_keys(data: Path) -> None:
    rows = run_report(data, q(group_by="day,model"))
    assert keys(rows, "day", "model", "request_count") == [
        ("2025-03-03", "gpt-4o-mini", 2),
        ("2025-03-03", "claude-haiku-4-5", 1),
        ("2025-03-04", "gpt-4o-mini", 1),
        ("2025-03-10", "gpt-4o-mini", 1),
    ]


def test_date_part_with_another_group_gives_rows_with_both_keys(data: Path) -> None:
    """What codeburn and other Vercel clients send: date_part=day&group_by=model, then read day and model."""
    rows = run_report(data, q(date_part="day", group_by="model"))
    assert keys(rows, "day", "model") == [
        ("2025-03-03", "gpt-4o-mini"),
        ("2025-03-03", "claude-haiku-4-5"),
        ("2025-03-04", "gpt-4o-mini"),
        ("2025-03-10", "gpt-4o-mini"),
    ]


def test_group_by_day_with_date_part_hour_is_hourly_keyed_by_hour(data: Path) -> None:
    rows = run_report(data, q(group_by="day", date_part="hour"))
    assert keys(rows, "hour", "request_count") == [
        ("2025-03-03T09", 2),
        ("2025-03-03T10", 1),
        ("2025-03-04T23", 1),
        ("2025-03-10T00", 1),
    ]
    assert "day" not in rows[0]


def test_date_part_week_keys_rows_by_the_monday_starting_the_iso_week(data: Path) -> None:
    rows = run_report(data, q(date_part="week"))
    # 2025-03-03 is a Monday; 2025-03-10 the next one.
    assert keys(rows, "week", "request_count") == [("2025-03-03", 4), ("2025-03-10", 1)]


def test_date_part_month_keys_rows_by_year_and_month(data: Path) -> None:
    rows = run_report(data, q(end="2025-04-30", date_part="month"))
    assert keys(rows, "month", "request_count") == [("2025-03", 5), ("2025-04", 1)]


def test_group_by_tag_counts_a_request_in_each_of_its_tags_so_rows_do_not_add_up(data: Path) -> None:
    rows = run_report(data, q(group_by="tag"))
    assert {row["tag"]: row["request_count"] for row in rows} == {
        "plan:pro": 3,
        "feature:chat": 1,
        "plan:free": 1,
        "feature:search": 1,
    }
    total = run_report(data, q(group_by="none"))[0]
    assert sum(row["request_count"] for row in rows) == 6 != total["request_count"] == 5  # overlap, untagged


def test_group_by_tag_leaves_untagged_requests_out(data: Path) -> None:
    rows = run_report(data, q(start="2025-03-04", end="2025-03-04", group_by="tag"))
    assert rows == []


def test_a_tag_repeated_on_one_request_counts_once(tmp_path: Path) -> None:
    write(tmp_path, [rec("2025-03-05T00:00:00", tags=["a", "a", "b"])])
    rows = run_report(tmp_path, q(group_by="tag"))
    assert keys(rows, "tag", "request_count") == [("a", 1), ("b", 1)]


def test_group_by_none_gives_one_total_row(data: Path) -> None:
    (row,) = run_report(data, q(group_by="none"))
    assert set(row) == set(METRICS)
    assert row["request_count"] == 5 and row["total_cost"] == Decimal("7.5")


def test_the_total_equals_the_sum_over_days(data: Path) -> None:
    (total,) = run_report(data, q(group_by="none"))
    days = run_report(data, q(group_by="day"))
    for metric in METRICS:
        assert total[metric] == sum(row[metric] for row in days), metric


def test_rows_are_sorted_by_date_then_by_total_cost_descending(tmp_path: Path) -> None:
    write(
        tmp_path,
        [
            rec("2025-03-02T00:00:00", model="cheap", total_cost=Decimal("0.1")),
            rec("2025-03-01T00:00:00", model="cheap", total_cost=Decimal("0.1")),
            rec("2025-03-02T00:00:00", model="dear", total_cost=Decimal("9")),
            rec("2025-03-01T00:00:00", model="mid", total_cost=Decimal("5")),
        ],
    )
    rows = run_report(tmp_path, q(date_part="day", group_by="model"))
    assert keys(rows, "day", "model") == [
        ("2025-03-01", "mid"),
        ("2025-03-01", "cheap"),
        ("2025-03-02", "dear"),
        ("2025-03-02", "cheap"),
    ]


def test_metrics_sum_every_token_kind(data: Path) -> None:
    (row,) = run_report(data, q(start="2025-03-03", end="2025-03-03", group_by="none"))
    assert {name: row[name] for name in METRICS[2:]} == {
        "input_tokens": 30,
        "output_tokens": 15,
        "cached_input_tokens": 4,
        "cache_creation_input_tokens": 7,
        "reasoning_tokens": 1,
        "request_count": 3,
        "unpriced_request_count": 0,
    }
    assert (row["total_cost"], row["market_cost"]) == (Decimal("2.5"), Decimal("5.5"))


def test_group_by_conversation_sums_each_conversation_and_keeps_calls_without_one(data: Path) -> None:
    rows = run_report(data, q(group_by="conversation"))
    assert keys(rows, "conversation", "request_count", "total_cost", "input_tokens") == [
        (None, 2, Decimal(4), 20),  # bob's call and the unattributed one: in the null row, not dropped
        ("conv_1", 2, Decimal("2.5"), 20),
        ("conv_2", 1, Decimal(1), 10),
    ]
    assert all(set(row) == {"conversation", *METRICS} for row in rows)


def test_group_by_trace_sums_each_agent_run(data: Path) -> None:
    rows = run_report(data, q(group_by="trace", order_by="request_count", limit="1"))
    assert keys(rows, "trace", "request_count", "total_cost") == [("ab" * 16, 2, Decimal("2.5"))]
    assert len(run_report(data, q(group_by="trace"))) == 4  # the two calls of one run and three runs of one call


def test_group_by_conversation_and_user_splits_a_conversation_by_user(data: Path) -> None:
    rows = run_report(data, q(group_by="conversation,user", order_by="conversation"))
    assert keys(rows, "conversation", "user", "request_count") == [
        ("conv_1", "alice", 2), ("conv_2", "carol", 1), (None, None, 1), (None, "bob", 1),
    ]


# --- filters --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("param", "value", "expected_requests"),
    [
        ("user_id", "alice", 2),
        ("model", "claude-haiku-4-5", 1),
        ("provider", "openai", 4),
        ("credential_type", "byok", 1),
        ("service", "worker", 1),
        ("environment", "prod", 4),
        ("api", "chat.completions", 3),
        ("operation", "embeddings", 1),
        ("conversation_id", "conv_1", 2),
        ("trace_id", "ab" * 16, 2),
        ("trace_id", "AB" * 16, 2),  # as some tracing UIs show it
    ],
)
def test_filter_keeps_only_matching_requests(data: Path, param: str, value: str, expected_requests: int) -> None:
    (row,) = run_report(data, q(group_by="none", **{param: value}))
    assert row["request_count"] == expected_requests


def test_tags_filter_any_matches_requests_with_at_least_one_tag(data: Path) -> None:
    (row,) = run_report(data, q(group_by="none", tags="plan:free,feature:search"))
    assert row["request_count"] == 2


def test_tags_filter_all_matches_only_requests_with_every_tag(data: Path) -> None:
    (row,) = run_report(data, q(group_by="none", tags="plan:pro,feature:chat", tags_match="all"))
    assert row["request_count"] == 1


def test_filters_combine_with_and(data: Path) -> None:
    (row,) = run_report(data, q(group_by="none", user_id="alice", tags="feature:chat"))
    assert row["request_count"] == 1


def test_a_filter_nothing_matches_gives_no_rows(data: Path) -> None:
    assert run_report(data, q(model="no-such-model")) == []


def test_user_values_never_enter_the_sql_text(data: Path) -> None:
    hostile = "x' OR 1=1; DROP TABLE usage; --"
    query = q(model=hostile, user_id=hostile, provider=hostile, tags=hostile)
    sql, params = build_sql(query)
    assert hostile not in sql
    assert params["model"] == params["tag_0"] == hostile
    assert run_report(data, query) == []


# --- money ----------------------------------------------------------------------------------------------------


def test_unpriced_requests_are_counted_but_add_nothing_to_cost(tmp_path: Path) -> None:
    write(
        tmp_path,
        [
            rec("2025-03-05T00:00:00", total_cost=Decimal("1.25"), market_cost=Decimal("1.5")),
            rec("2025-03-05T01:00:00", model="acme-private", price_status=UNPRICED, total_cost=None,
                market_cost=None, input_tokens=1000),
        ],
    )
    (row,) = run_report(tmp_path, q())
    assert row["request_count"] == 2
    assert row["unpriced_request_count"] == 1
    assert row["input_tokens"] == 1010
    assert (row["total_cost"], row["market_cost"]) == (Decimal("1.25"), Decimal("1.5"))


def test_a_group_of_only_unpriced_requests_has_unknown_costs_and_says_how_many(tmp_path: Path) -> None:
    write(tmp_path, [rec("2025-03-05T00:00:00", price_status=UNPRICED, total_cost=None, market_cost=None)] * 2)
    (row,) = run_report(tmp_path, q(group_by="model"))
    assert row["total_cost"] is None and row["market_cost"] is None  # unknown, never a silent $0
    assert row["unpriced_request_count"] == row["request_count"] == 2


def test_costs_sum_exactly_to_the_pico_dollar(tmp_path: Path) -> None:
    write(tmp_path, [rec("2025-03-05T00:00:00", total_cost=Decimal("0.000000000001"))] * 3)
    write(tmp_path, [rec("2025-03-06T00:00:00", total_cost=Decimal("0.1"))] * 3, part="part-r2-000001")
    rows = run_report(tmp_path, q())
    assert [row["total_cost"] for row in rows] == [Decimal("0.000000000003"), Decimal("0.3")]
    assert all(isinstance(row["total_cost"], Decimal) for row in rows)


def test_large_costs_sum_exactly(tmp_path: Path) -> None:
    write(tmp_path, [rec("2025-03-05T00:00:00", total_cost=Decimal("999999.999999999999"))] * 3)
    (row,) = run_report(tmp_path, q())
    assert row["total_cost"] == Decimal("2999999.999999999997")


def test_report_json_writes_costs_as_exact_numbers(tmp_path: Path) -> None:
    write(
        tmp_path,
        [rec("2025-03-05T00:00:00", total_cost=Decimal("0.000000000001"), market_cost=Decimal("123456.789012345678"))]
        * 3,
    )
    body = report_json(run_report(tmp_path, q()))
    assert '"total_cost": 0.000000000003' in body
    assert '"market_cost": 370370.367037037034' in body
    assert "E-" not in body and "e-" not in body
    parsed = json.loads(body, parse_float=Decimal)
    assert parsed["results"][0]["total_cost"] == Decimal("0.000000000003")


def test_report_json_of_no_rows_is_an_empty_results_list() -> None:
    assert json.loads(report_json([])) == {"results": []}


# --- dataset --------------------------------------------------------------------------------------------------


def test_date_range_is_inclusive_at_both_ends(data: Path) -> None:
    rows = run_report(data, q(start="2025-03-04", end="2025-03-10"))
    assert keys(rows, "day") == [("2025-03-04",), ("2025-03-10",)]


def test_several_files_in_one_day_are_all_read(tmp_path: Path) -> None:
    write(tmp_path, [rec("2025-03-05T00:00:00")], part="part-r1-000001")
    write(tmp_path, [rec("2025-03-05T01:00:00")], part="part-r2-000001")
    (row,) = run_report(tmp_path, q())
    assert row["request_count"] == 2


def test_temporary_files_being_written_are_ignored(data: Path) -> None:
    folder = data / "usage" / "date=2025-03-03"
    (folder / "part-r9-000001.parquet.tmp").write_bytes(b"half-written, not parquet yet")
    rows = run_report(data, q())
    assert rows[0]["request_count"] == 3


def test_a_missing_dataset_gives_no_rows(tmp_path: Path) -> None:
    assert run_report(tmp_path / "nothing-here", q()) == []


def test_an_empty_dataset_gives_no_rows(tmp_path: Path) -> None:
    (tmp_path / "usage" / "date=2025-03-05").mkdir(parents=True)
    assert run_report(tmp_path, q()) == []
    assert run_report(tmp_path, q(group_by="none")) == []


def test_a_period_without_data_gives_no_rows(data: Path) -> None:
    assert run_report(data, q(start="2024-01-01", end="2024-12-31", group_by="none")) == []


# --- parameters -----------------------------------------------------------------------------------------------

BAD_PARAMS: list[tuple[dict[str, Any], str]] = [
    ({"end_date": "2025-03-31"}, "start_date is required"),
    ({"start_date": "2025-03-01"}, "end_date is required"),
    ({"start_date": "2025/03/01", "end_date": "2025-03-31"}, "start_date must be a date as YYYY-MM-DD"),
    ({"start_date": "2025-03-01", "end_date": "yesterday"}, "end_date must be a date as YYYY-MM-DD"),
    ({"start_date": "2025-02-30", "end_date": "2025-03-31"}, "start_date is not a valid date"),
    ({"start_date": "2025-03-31", "end_date": "2025-03-01"}, "end_date 2025-03-01 is before start_date 2025-03-31"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "group_by": "colour"}, "unknown group_by 'colour'"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "group_by": "hour"}, "use date_part=hour"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "group_by": "none,model"}, "cannot be combined"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "date_part": "year"}, "unknown date_part 'year'"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "credential_type": "user"}, "unknown credential_type"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "tags_match": "some"}, "unknown tags_match 'some'"),
    ({"start_date": ["2025-03-01", "2025-03-02"], "end_date": "2025-03-31"}, "start_date was given 2 times"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "trace_id": "abc"}, "trace_id must be 32 hexadecimal"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "group_by": "session"}, "use group_by=conversation"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "group_by": "trace_id"}, "use group_by=trace"),
    ({"start_date": "2025-03-01", "end_date": "2025-03-31", "tags": ",".join(f"t{i}" for i in range(101))},
     "filter on at most 100"),
]


@pytest.mark.parametrize(("params", "message"), BAD_PARAMS, ids=[m for _, m in BAD_PARAMS])
def test_a_bad_parameter_raises_a_report_parameter_error_naming_it(params: dict[str, Any], message: str) -> None:
    with pytest.raises(ReportParameterError, match=message.replace("(", r"\(")) as info:
        ReportQuery.from_params(params)
    assert isinstance(info.value, ValueError)


def test_a_query_built_in_code_is_validated_as_strictly() -> None:
    with pytest.raises(ReportParameterError, match="unknown group_by 'colour'"):
        ReportQuery(start_date=date(2025, 3, 1), end_date=date(2025, 3, 2), group_by=("colour",))
    with pytest.raises(ReportParameterError, match="start_date must be a date"):
        ReportQuery(start_date=datetime(2025, 3, 1), end_date=date(2025, 3, 2))


def test_parameters_accept_lists_as_parse_qs_gives_them() -> None:
    query = ReportQuery.from_params(
        {"start_date": ["2025-03-01"], "end_date": ["2025-03-02"], "group_by": ["user", "model"], "tags": ["a,b", "c"]}
    )
    assert query.group_by == ("user", "model")
    assert query.tags == ("a", "b", "c")


def test_empty_parameters_count_as_absent() -> None:
    query = ReportQuery.from_params(
        {"start_date": "2025-03-01", "end_date": "2025-03-02", "group_by": "", "model": "", "tags": ""}
    )
    assert (query.group_by, query.model, query.tags) == (("day",), None, ())


def test_query_round_trips_through_parameters() -> None:
    query = q(group_by="tag,model,conversation,trace", date_part="hour", user_id="u", credential_type="byok",
              tags="a,b", tags_match="all", service="web", environment="prod", api="openai.responses",
              operation="chat", conversation_id="c", trace_id="0" * 32)
    assert ReportQuery.from_params(query.to_params()) == query


# --- Python API -----------------------------------------------------------------------------------------------


def test_python_api_takes_dates_and_groups_as_strings_or_values(data: Path) -> None:
    report = Report(data)
    by_strings = report.query(start_date="2025-03-01", end_date="2025-03-31", group_by="model,user")
    by_values = report.query(start_date=date(2025, 3, 1), end_date=date(2025, 3, 31), group_by=["model", "user"])
    assert by_strings == by_values == run_report(data, q(group_by="model,user"))


def test_python_api_json_is_the_http_body(data: Path) -> None:
    assert Report(data).json(q(group_by="model")) == report_json(run_report(data, q(group_by="model")))
