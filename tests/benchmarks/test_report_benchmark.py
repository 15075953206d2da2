"""The report benchmark must keep running (the lead runs it at 10M records); here it runs tiny and checks that both
ways of asking agree, never the time."""

from __future__ import annotations

from pathlib import Path

import duckdb

from benchmarks import report_queries


def test_the_report_benchmark_runs_and_both_ways_give_the_same_answers(tmp_path: Path) -> None:
    result = report_queries.run(rows=3_000, repeat=1, data_dir=tmp_path / "bench")
    assert result["mismatches"] == 0
    for name in ("model_by_day", "by_tag", "top_100_users", "one_tags_users"):
        assert result[f"{name}_ratio"] > 0


def test_the_generator_writes_the_receivers_layout_with_skewed_users_and_1_to_4_tags(tmp_path: Path) -> None:
    report_queries.generate(tmp_path, 6_000)
    days = sorted(p.name for p in (tmp_path / "usage").iterdir())
    assert len(days) == report_queries.DAYS and days[0] == "date=2026-10-01"
    relation = duckdb.sql(
        f"SELECT count(*), min(len(tags)), max(len(tags)), count(DISTINCT model), "
        f"max(n) FILTER (WHERE true), count(DISTINCT user_id) FROM read_parquet('{tmp_path}/usage/*/*.parquet') "
        f"JOIN (SELECT user_id AS u, count(*) AS n FROM read_parquet('{tmp_path}/usage/*/*.parquet') GROUP BY 1) "
        "ON u = user_id"
    )
    assert relation is not None
    (stats,) = relation.fetchall()
    count, fewest_tags, most_tags, models, top_user_requests, users = stats
    assert count == 6_000 and 1 <= fewest_tags and most_tags <= 4 and models > 20
    assert top_user_requests > 10 * count / users  # the heaviest customer far above the average
