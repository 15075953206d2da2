"""Pricing: the genai-prices catalog, the user's overrides, model-name mapping and explanations of a price."""
