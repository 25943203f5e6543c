"""Tasks: the schema family, the service (one statement per operation) and the model tools."""
