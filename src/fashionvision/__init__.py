"""fashionvision: detect and segment clothing in fashion photos."""

__version__ = "0.1.0"
