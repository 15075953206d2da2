"""OTLP/gRPC under abuse and overload, on a real receiver and real gRPC channels: the token is checked from the
metadata before the message is read, the receiver takes on a bounded number of exports and bytes (an export
reserving the largest message before its own is read), and past the bound it answers UNAVAILABLE with a
``RetryInfo`` at once, which a Collector retries until everything is stored exactly once. Connections that never
finish their handshake, or carry no call for long, are closed."""

from __future__ import annotations

import random
import socket
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from tokentrail.processor.cli import main as cli
from tokentrail.processor.cli import serve
from tokentrail.processor.ingest import grpc as grpc_module
from tokentrail.processor.ingest import receiver as receiver_module
from tokentrail.processor.ingest.asgi_server import HttpLimits
from tokentrail.processor.ingest.grpc import BUSY_BYTES_DETAILS, TRACE_SERVICE
from tokentrail.processor.ingest.receiver import Receiver, ReceiverConfigError

from tests.helpers.otlp import make_request, random_span
from tests.helpers.receiver import ServeProcess, batch, read_usage, span_ids

TOKEN = "abuse-test-token"
AUTHORIZED = (("authorization", f"Bearer {TOKEN}"),)
TRACES = f"/{TRACE_SERVICE}/Export"
LOGS = "/opentelemetry.proto.collector.logs.v1.LogsService/Export"
METRICS = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
MiB = 1 << 20


def big_request(nbytes: int) -> bytes:
    """One GenAI span padded to about ``nbytes``: counted in ``spans_received`` if it is ever parsed."""
    return make_request([random_span({"app.padding": "x" * nbytes})]).SerializeToString()


def logs_request() -> bytes:
    logs = ExportLogsServiceRequest()
    logs.resource_logs.add().scope_logs.add().log_records.add()
    return logs.SerializeToString()


def call(
    port: int, payload: bytes, method: str = TRACES, metadata: Any = None, timeout: float = 30
) -> bytes:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return channel.unary_unary(method)(payload, metadata=metadata, timeout=timeout)


def refusal(port: int, payload: bytes, method: str = TRACES, metadata: Any = None) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(port, payload, method, metadata)
    return info.value


def retry_delay(error: grpc.RpcError) -> float | None:
    """The ``RetryInfo`` delay of a refusal, read as a Collector reads it: the ``google.rpc.Status`` in the
    ``grpc-status-details-bin`` trailer, its code and message matching the call's own."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status = status_pb2.Status.FromString(value)
            assert (status.code, status.message) == (error.code().value[0], error.details())
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return info.retry_delay.ToTimedelta().total_seconds()
    return None


class SlowSender:
    """An Export whose client has opened the call (headers sent: admitted) but not yet sent its message: it holds
    its admission pass until ``send()``, through the real server path and no seam of ours."""

    def __init__(self, port: int, payload: bytes, method: str = TRACES, metadata: Any = None) -> None:
        self._payload = payload
        self._go = threading.Event()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        self.future = self._channel.stream_unary(method).future(self._messages(), timeout=60, metadata=metadata)

    def _messages(self) -> Iterator[bytes]:
        self._go.wait(60)
        yield self._payload

    def send(self) -> bytes:
        self._go.set()
        try:
            return self.future.result(timeout=60)
        finally:
            self._channel.close()


def wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


# -- auth before the message is read ------------------------------------------------------------------------------


def test_an_unauthenticated_30_mb_export_is_refused_and_never_parsed(tmp_path: Path) -> None:
    payload = big_request(30 * MiB)
    with Receiver(tmp_path, grpc_port=0, ingest_token=TOKEN, flush_interval=3600) as receiver:
        for metadata in (None, (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
            assert refusal(receiver.grpc_port, payload, metadata=metadata).code() == grpc.StatusCode.UNAUTHENTICATED
        seen = receiver.metrics.counters()
        assert (seen["requests_unauthenticated"], seen["spans_received"], seen["requests_invalid"]) == (3, 0, 0)
        assert receiver.admission.in_flight == (0, 0)  # refused before admission: no pass taken
        call(receiver.grpc_port, payload, metadata=AUTHORIZED)  # the same message with the token: parsed, stored
        assert receiver.metrics.counters()["spans_received"] == 1
        receiver.flush()
    assert len(read_usage(tmp_path)) == 1


@pytest.mark.parametrize("method", [TRACES, LOGS, METRICS])
def test_the_token_is_checked_before_the_message_is_read(tmp_path: Path, method: str) -> None:
    # Read first, a 30 MB message over a 1 MiB limit would be RESOURCE_EXHAUSTED: UNAUTHENTICATED says it never was.
    payload = big_request(30 * MiB)
    with Receiver(tmp_path, grpc_port=0, ingest_token=TOKEN, max_message_bytes=MiB, flush_interval=3600) as receiver:
        assert refusal(receiver.grpc_port, payload, method).code() == grpc.StatusCode.UNAUTHENTICATED
        authorized = refusal(receiver.grpc_port, payload, method, AUTHORIZED)
        assert authorized.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # the limit holds once the token is right
        seen = receiver.metrics.counters()
        assert (seen["requests_unauthenticated"], seen["spans_received"], seen["requests_invalid"]) == (1, 0, 0)
        assert receiver.admission.in_flight == (0, 0)


# -- the export bound ---------------------------------------------------------------------------------------------


def test_a_full_receiver_answers_unavailable_with_retry_info_and_the_retry_is_stored_once(tmp_path: Path) -> None:
    first, second = batch(3), batch(2)
    with Receiver(tmp_path, grpc_port=0, max_concurrent_exports=1, flush_interval=3600) as receiver:
        slow = SlowSender(receiver.grpc_port, first.SerializeToString())
        try:
            wait_for(lambda: receiver.admission.in_flight[0] == 1, "the slow export's admission")
            busy = refusal(receiver.grpc_port, second.SerializeToString())
            assert busy.code() == grpc.StatusCode.UNAVAILABLE
            assert retry_delay(busy) == 1.0
            busy_logs = refusal(receiver.grpc_port, logs_request(), LOGS)  # one bound for every signal
            assert busy_logs.code() == grpc.StatusCode.UNAVAILABLE and retry_delay(busy_logs) == 1.0
            seen = receiver.metrics.counters()
            assert (seen["requests_busy"], seen["spans_received"], seen["log_records_ignored"]) == (2, 0, 0)
        finally:
            slow.send()
        assert receiver.admission.in_flight == (0, 0)
        call(receiver.grpc_port, second.SerializeToString())  # the sender's retry, once there is room
        receiver.flush()
        assert receiver.metrics.counters()["requests_ok"] == 2
    stored = [row["span_id"] for row in read_usage(tmp_path)]
    assert sorted(stored) == sorted(span_ids(first) | span_ids(second))


def test_a_sender_that_never_sends_its_message_loses_its_place(tmp_path: Path) -> None:
    limits = HttpLimits(body_timeout=0.5)
    with Receiver(tmp_path, grpc_port=0, max_concurrent_exports=1, http_limits=limits, flush_interval=3600) as receiver:
        with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
            never = threading.Event()

            def nothing() -> Iterator[bytes]:
                never.wait(30)
                yield b""

            future = channel.stream_unary(TRACES).future(nothing(), timeout=30)
            try:
                with pytest.raises(grpc.RpcError) as info:
                    future.result(timeout=30)
            finally:
                never.set()
        assert info.value.code() == grpc.StatusCode.CANCELLED  # retried by OTLP exporters
        wait_for(lambda: receiver.admission.in_flight == (0, 0), "the pass's release")
        call(receiver.grpc_port, batch(1).SerializeToString())


# -- the byte bound -----------------------------------------------------------------------------------------------


def test_two_big_exports_are_never_parsed_at_once_past_the_byte_bound(tmp_path: Path) -> None:
    a, b = big_request(2 * MiB), big_request(2 * MiB)
    entered, release = threading.Event(), threading.Event()
    parsed_at_once: list[int] = []

    def hold(records: object) -> None:  # a listener runs while its export holds its pass: the real slow path
        parsed_at_once.append(receiver.admission.in_flight[1])
        entered.set()
        release.wait(30)

    with Receiver(
        tmp_path, grpc_port=0, max_concurrent_exports=8, max_inflight_bytes=MiB, flush_interval=3600
    ) as receiver:
        receiver.add_listener(hold)
        first = threading.Thread(target=call, args=(receiver.grpc_port, a))
        first.start()
        try:
            assert entered.wait(30)
            before = receiver.metrics.counters()["spans_received"]
            busy = refusal(receiver.grpc_port, b)
            assert busy.code() == grpc.StatusCode.UNAVAILABLE and retry_delay(busy) == 1.0
            seen = receiver.metrics.counters()
            assert seen["requests_busy"] == 1
            assert seen["spans_received"] == before  # refused before reading (a's reservation took the bytes)
        finally:
            release.set()
            first.join(30)
        call(receiver.grpc_port, b)  # alone now: admitted whatever its size
        receiver.flush()
        assert receiver.admission.in_flight == (0, 0)
    assert len(parsed_at_once) == 2 and max(parsed_at_once) < 2 * len(a)
    assert len(read_usage(tmp_path)) == 2


def metrics_values(port: int) -> dict[str, float]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=30) as response:
        text = response.read().decode()
    return {
        line.split("{")[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line and not line.startswith("#")
    }


def test_two_reservations_of_the_largest_message_refuse_a_third_export_before_it_is_read(tmp_path: Path) -> None:
    """Room for two messages of the limit (``max_inflight = 2 x max_message``): two exports whose messages are still
    on their way hold it, each having reserved the limit; a third authenticated export is refused unread, busy on
    bytes with ``RetryInfo``, and lands once they are answered. Each export, once read, holds only its own size."""
    first, second, third = (batch(n).SerializeToString() for n in (2, 3, 4))
    held: list[tuple[int, int]] = []
    with Receiver(
        tmp_path, grpc_port=0, http_port=0, ingest_token=TOKEN, max_message_bytes=MiB, max_inflight_bytes=2 * MiB,
        max_concurrent_exports=8, flush_interval=3600,
    ) as receiver:
        receiver.add_listener(lambda records: held.append(receiver.admission.in_flight))  # while its pass is held
        port, http_port = receiver.grpc_port, receiver.http_port
        assert http_port is not None
        slow = [SlowSender(port, first, metadata=AUTHORIZED), SlowSender(port, second, metadata=AUTHORIZED)]
        try:
            wait_for(lambda: receiver.admission.in_flight == (2, 2 * MiB), "two reservations of the message limit")
            busy = refusal(port, third, metadata=AUTHORIZED)
            assert busy.code() == grpc.StatusCode.UNAVAILABLE and retry_delay(busy) == 1.0
            assert busy.details() == BUSY_BYTES_DETAILS
            seen = receiver.metrics.counters()
            assert (seen["requests_busy"], seen["spans_received"], seen["requests_invalid"]) == (1, 0, 0)
            gauges = metrics_values(http_port)
            assert gauges["tokentrail_receiver_exports_in_flight"] == 2
            assert gauges["tokentrail_receiver_bytes_in_flight"] == 2 * MiB
        finally:
            replies = [sender.send() for sender in slow]  # one after the other: the second still reserved meanwhile
        assert all(isinstance(reply, bytes) for reply in replies)
        assert receiver.admission.in_flight == (0, 0)
        call(port, third, metadata=AUTHORIZED)  # the sender's retry, once there is room
        gauges = metrics_values(http_port)
        assert (gauges["tokentrail_receiver_exports_in_flight"], gauges["tokentrail_receiver_bytes_in_flight"]) == (0, 0)
        receiver.flush()
    assert held == [(2, len(first) + MiB), (1, len(second)), (1, len(third))]  # shrunk to the message once read
    stored = {row["span_id"] for row in read_usage(tmp_path)}
    assert len(stored) == 9


# -- connections: silent ones and idle ones closed ----------------------------------------------------------------


def closed_by_server(sock: socket.socket, within: float) -> bool:
    """Reads (and drops) what the server sends until it closes the connection: True, or False after ``within`` s."""
    deadline = time.monotonic() + within
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            if not sock.recv(65536):
                return True
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
    return False


def test_a_silent_connection_is_closed_after_the_handshake_timeout_and_grpc_still_serves(tmp_path: Path) -> None:
    """A client that connects and never sends a byte (not even HTTP/2's preface) is closed after the HTTP idle
    timeout, as OTLP/HTTP closes one; gRPC's own default would keep it two minutes."""
    limits = HttpLimits(idle_timeout=0.5)
    with Receiver(tmp_path, grpc_port=0, http_limits=limits, flush_interval=3600) as receiver:
        with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
            export = channel.unary_unary(TRACES)
            export(batch(1).SerializeToString(), timeout=30)  # connected before the silent ones
            silent = [socket.create_connection(("127.0.0.1", receiver.grpc_port)) for _ in range(3)]
            try:
                assert all(closed_by_server(sock, 30) for sock in silent)  # liveness bound, far past 0.5 s
            finally:
                for sock in silent:
                    sock.close()
            export(batch(1).SerializeToString(), timeout=30)  # a client that did finish its handshake still served
        call(receiver.grpc_port, batch(1).SerializeToString())  # and a new one
        assert receiver.metrics.counters()["requests_ok"] == 3


def test_a_connection_without_calls_is_closed_gracefully(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An HTTP/2 connection that finished its handshake and then makes no call gets a GOAWAY after
    ``MAX_CONNECTION_IDLE_SECONDS`` (shortened here) and is closed; a gRPC channel just reconnects."""
    monkeypatch.setattr(grpc_module, "MAX_CONNECTION_IDLE_SECONDS", 0.5)
    with Receiver(tmp_path, grpc_port=0, flush_interval=3600) as receiver:
        sock = socket.create_connection(("127.0.0.1", receiver.grpc_port), timeout=30)
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        try:
            conn.initiate_connection()
            sock.sendall(conn.data_to_send())
            events: list[h2.events.Event] = []
            deadline = time.monotonic() + 30  # liveness bound, far past 0.5 s
            while not any(isinstance(e, h2.events.ConnectionTerminated) for e in events):
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    break
                if not data:
                    break
                events += conn.receive_data(data)
                sock.sendall(conn.data_to_send())  # settings and ping acknowledged: a well-behaved idle client
            assert any(isinstance(e, h2.events.RemoteSettingsChanged) for e in events)  # the handshake was done
            assert any(isinstance(e, h2.events.ConnectionTerminated) for e in events), events
        finally:
            sock.close()
        with grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") as channel:
            export = channel.unary_unary(TRACES)
            export(batch(1).SerializeToString(), timeout=30)
            time.sleep(1.5)  # past the idle limit: the server sends GOAWAY, the channel reconnects on its next call
            export(batch(1).SerializeToString(), timeout=30)
        assert receiver.metrics.counters()["requests_ok"] == 2


# -- overload: 64 exports at once, four at a time -----------------------------------------------------------------


def test_64_concurrent_exports_four_at_a_time_all_land_exactly_once_after_retries(tmp_path: Path) -> None:
    requests = [batch(5) for _ in range(64)]
    peak = 0
    peak_lock = threading.Lock()
    outcomes: Counter[str] = Counter()
    delays: set[float | None] = set()

    def observe() -> None:
        nonlocal peak
        with peak_lock:
            peak = max(peak, receiver.admission.in_flight[0])

    def slow_listener(records: object) -> None:  # keeps each export in flight a while, sampling the bound there
        observe()
        time.sleep(0.02)

    def collector(channel: grpc.Channel, request: bytes, start: threading.Barrier) -> None:
        export = channel.unary_unary(TRACES)
        start.wait(30)
        for _ in range(1000):
            try:
                export(request, timeout=30)  # liveness only: a refusal must come long before this
            except grpc.RpcError as error:
                with peak_lock:
                    outcomes[error.code().name] += 1
                    delays.add(retry_delay(error))
                if error.code() != grpc.StatusCode.UNAVAILABLE:
                    return
                time.sleep(random.uniform(0.01, 0.05))  # a Collector waits RetryInfo's delay; shorter keeps this quick
            else:
                with peak_lock:
                    outcomes["OK"] += 1
                return

    with Receiver(tmp_path, grpc_port=0, max_concurrent_exports=4, flush_interval=3600) as receiver:
        receiver.add_listener(slow_listener)
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.is_set():
                observe()
                time.sleep(0.0005)

        sampler = threading.Thread(target=sample)
        sampler.start()
        channels = [grpc.insecure_channel(f"127.0.0.1:{receiver.grpc_port}") for _ in range(8)]
        start = threading.Barrier(64)
        threads = [
            threading.Thread(target=collector, args=(channels[i % 8], r.SerializeToString(), start))
            for i, r in enumerate(requests)
        ]
        try:
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
        finally:
            stop_sampling.set()
            sampler.join()
            for channel in channels:
                channel.close()
        receiver.flush()
        counters = receiver.metrics.counters()
        assert receiver.admission.in_flight == (0, 0)
    assert outcomes["OK"] == 64
    assert set(outcomes) <= {"OK", "UNAVAILABLE"}, outcomes  # never RESOURCE_EXHAUSTED, never a deadline
    assert outcomes["UNAVAILABLE"] >= 1 and delays == {1.0}  # the bound bit, and every refusal said when to retry
    assert counters["requests_busy"] == outcomes["UNAVAILABLE"]
    assert counters["requests_ok"] == 64 and counters["spans_deduplicated"] == 0
    assert 1 <= peak <= 4
    stored = [row["span_id"] for row in read_usage(tmp_path)]
    expected = set().union(*(span_ids(r) for r in requests))
    assert len(stored) == len(expected) == 320 and set(stored) == expected


# -- configuration ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["max_message_bytes", "max_concurrent_exports", "max_inflight_bytes"])
@pytest.mark.parametrize("value", [0, -1])
def test_receiver_bounds_must_be_positive(tmp_path: Path, option: str, value: int) -> None:
    bounds: dict[str, Any] = {option: value}
    with pytest.raises(ReceiverConfigError, match=f"{option} must be positive"):
        Receiver(tmp_path, grpc_port=0, **bounds)


def test_an_http_idle_timeout_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ReceiverConfigError, match="idle_timeout must be positive"):
        Receiver(tmp_path, grpc_port=0, http_limits=HttpLimits(idle_timeout=0))


def test_serve_advertises_the_receivers_default_message_limit() -> None:
    assert serve.DEFAULT_MAX_MESSAGE_BYTES == receiver_module.DEFAULT_MAX_MESSAGE_BYTES


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--max-message-bytes", "lots"),
        ("--max-message-bytes", str(1 << 31)),
        ("--max-concurrent-exports", "0"),
        ("--max-concurrent-exports", "2.5"),
        ("--max-inflight-bytes", "-5"),
        ("--max-inflight-bytes", "256MiB"),
        ("--http-idle-timeout", "0"),
        ("--http-idle-timeout", "nan"),
        ("--http-read-timeout", "-1"),
        ("--http-read-timeout", "soon"),
    ],
)
def test_serve_refuses_a_bad_bound_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], option: str, value: str
) -> None:
    code = cli.main(["serve", "--data-dir", str(tmp_path), "--grpc-port", "0", "--no-http", "--no-api", option, value])
    err = capsys.readouterr().err
    assert code == 2
    (line,) = err.splitlines()
    assert line.startswith(f"tokentrail serve: {option} (env TOKENTRAIL_") and repr(value) in line
    assert not (tmp_path / "wal").exists()  # refused before anything started


def test_serve_refuses_a_bad_bound_from_its_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TOKENTRAIL_MAX_CONCURRENT_EXPORTS", "many")
    code = cli.main(["serve", "--data-dir", str(tmp_path), "--grpc-port", "0", "--no-http", "--no-api"])
    (line,) = capsys.readouterr().err.splitlines()
    assert code == 2 and "TOKENTRAIL_MAX_CONCURRENT_EXPORTS" in line and "'many'" in line


def test_serve_applies_its_bounds(tmp_path: Path) -> None:
    process = ServeProcess(
        tmp_path, "abuse-serve", "--max-concurrent-exports", "1", "--max-message-bytes", str(2 * MiB),
        "--max-inflight-bytes", str(4 * MiB), "--http-idle-timeout", "5", http=True,
    )
    first, second = batch(2), batch(2)
    call(process.port, first.SerializeToString())  # it answers
    assert refusal(process.port, big_request(3 * MiB)).code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    slow = SlowSender(process.port, second.SerializeToString())
    try:
        # The slow export is admitted once its headers arrive; then the one place is taken. Probed with log exports:
        # acknowledged, never stored, under the same bound.
        deadline = time.monotonic() + 30
        while True:
            try:
                call(process.port, logs_request(), LOGS)
            except grpc.RpcError as error:
                busy = error
                break
            assert time.monotonic() < deadline, "the slow export was never admitted"
            time.sleep(0.01)
        assert busy.code() == grpc.StatusCode.UNAVAILABLE and retry_delay(busy) == 1.0
    finally:
        slow.send()
    assert process.terminate() == 0
    stored = {row["span_id"] for row in read_usage(tmp_path)}
    assert stored == span_ids(first) | span_ids(second)
