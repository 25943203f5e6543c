"""Shared code of the Todo backend Lambda functions (deployed as a layer)."""
