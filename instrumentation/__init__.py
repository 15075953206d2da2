"""TokenTrail instrumentation."""
