"""The demo and its fake LLM provider: not product code, kept apart so the product never imports it."""
