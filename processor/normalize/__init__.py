"""Normalize: OTLP spans of any GenAI dialect become usage records."""
