"""The report API under a crowd: 200 concurrent requests are each answered promptly, 200 with the same numbers a
lone request gets, or 503 with ``Retry-After`` (busy: come back), never an error, a hang or a dropped connection;
the receiver's threads stay bounded and it answers afterwards.
"""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

from tokentrail.processor.ingest.admission import DEFAULT_MAX_EXPORTS

from tests.fault.collector import GrpcExporter, Ledger, make_batch
from tests.fault.health import Watch, assert_answering, thread_bound, warm_up
from tests.fault.oracle import assert_exactly_once
from tests.fault.serve import Serve, http_get
from tests.fault.sizes import Size

QUERIES: Final = [
    "/v1/report?start_date=2025-06-01&end_date=2025-06-03&group_by=day",
    "/v1/report?start_date=2025-06-01&end_date=2025-06-03&group_by=model",
    "/v1/report?start_date=2025-06-01&end_date=2025-06-03&group_by=user&format=csv",
]


def test_200_concurrent_report_requests_get_the_lone_answer_or_a_busy_503(tmp_path: Path, size: Size) -> None:
    serve = Serve(tmp_path, "--flush-interval", "0.05").start()
    ledger = Ledger()
    exporter = GrpcExporter(serve.ports.grpc, ledger)
    for _ in range(30):
        assert exporter.export(make_batch(50, days=3))
    exporter.close()
    assert serve.terminate() == 0  # everything in Parquet; then served by a receiver whose own exports (to check
    # it answers) stay in its WAL until it stops, so every report in the test reads the same data
    serve = Serve(tmp_path, "--flush-interval", "3600", ports=serve.ports).start()
    baseline = warm_up(serve, ledger)
    lone = {q: http_get(serve.ports.api, q) for q in QUERIES}
    assert all(status == 200 for status, _, _ in lone.values())
    assert json.loads(lone[QUERIES[0]][2])  # a real answer: rows for each day

    start = threading.Barrier(size.report_clients)

    def ask(i: int) -> tuple[str, int, dict[str, str], bytes]:
        query = QUERIES[i % len(QUERIES)]
        start.wait()
        status, headers, body = http_get(serve.ports.api, query, timeout=60)
        return query, status, headers, body

    with Watch(serve) as watch, ThreadPoolExecutor(size.report_clients) as pool:
        answers = list(pool.map(ask, range(size.report_clients)))
    statuses = [status for _, status, _, _ in answers]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert statuses.count(200) > 0
    for query, status, headers, body in answers:
        if status == 200:
            assert body == lone[query][2], f"{query}: a crowd's answer differs from the lone one"
        else:
            assert headers.get("retry-after", "").isdigit(), headers
            assert json.loads(body)["error"]["type"]
    assert watch.peak_threads <= thread_bound(baseline, DEFAULT_MAX_EXPORTS), watch.summary()
    assert_answering(serve, ledger)
    assert serve.terminate() == 0
    assert_exactly_once(tmp_path, ledger)
    print(f"report API: {size.report_clients} concurrent, {statuses.count(200)} answered 200, "
          f"{statuses.count(503)} told 503; {watch.summary()}")
