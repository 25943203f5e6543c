"""The assistant: conversations, messages and the Cohere turn."""
