"""The HTTP report API, its OpenAPI document and the MCP server: the ways other programs ask for reports."""
