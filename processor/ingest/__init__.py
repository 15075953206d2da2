"""Ingest: the OTLP/gRPC and OTLP/HTTP transports, the receiver that turns an Export into durable usage records,
and its metrics."""
