"""Error types shared by modules that must not import each other (config validation and encoder building)."""


class ConfigError(ValueError):
    """A config that cannot be used: names the key, the file and the fix."""


class InputShapeError(ValueError):
    """Clips the model cannot take (more frames than its temporal embeddings, a frame count a method cannot split):
    names the config keys that make them and the values that would fit. Raised inside a forward, shown as one
    sentence by the command line."""
