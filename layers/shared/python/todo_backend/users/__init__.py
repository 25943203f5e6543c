"""A user's own settings: the time zone, and the local clock it gives."""
