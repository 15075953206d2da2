"""TokenTrail processor."""
