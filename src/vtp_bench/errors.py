"""Error types shared by modules that must not import each other (config validation and encoder building)."""


class ConfigError(ValueError):
    """A config that cannot be used: names the key, the file and the fix."""
