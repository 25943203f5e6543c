"""The error of a missing or invalid setting: a leaf module, so that core/settings (which reads
secrets through core/secrets) and core/secrets both raise it without importing each other."""


class ConfigurationError(RuntimeError):
    """The environment is missing a variable or holds an invalid value."""
