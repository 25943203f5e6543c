"""Settings, database, authentication, errors and observability: what every function uses."""
