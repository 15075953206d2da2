"""Ingest: OTLP in, durable usage records out. ``receiver.Receiver`` composes the parts, each a module with one job:
the transports (``grpc``, ``http``, with ``auth``), ``pipeline`` (one Export: normalize -> dedupe -> price -> WAL ->
answer), ``recovery`` (replay at start), ``flusher`` (WAL -> Parquet), ``disk``, ``status``, ``metrics`` and
``gc_tuning``. Imports point one way: receiver -> transports -> pipeline -> storage."""
