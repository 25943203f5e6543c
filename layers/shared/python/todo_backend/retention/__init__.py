"""Retention: what the scheduled function deletes once it is old enough (settled task events,
chat turn records, chat usage rows)."""
