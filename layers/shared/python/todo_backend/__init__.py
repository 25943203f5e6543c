"""Shared code of the Todo backend Lambda functions (deployed as a layer).

What a handler module imports is cold-start time. Classes on that path are `NamedTuple`s (value
records) or plain classes, not dataclasses: on Python 3.12 a dataclass costs about 0.6 ms to
create, because it compiles its generated methods (`tests/test_cold_start.py` checks it).
"""
