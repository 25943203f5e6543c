"""The task tools served over the Model Context Protocol (the MCP function's logic).

Only the MCP function imports this package: it ships the `mcp` SDK itself (the layer does not).
"""
