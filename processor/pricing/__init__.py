"""Pricing: model-name mapping, catalog lookup, the user's overrides, the pricer, catalog updates and explanations of
a price."""
