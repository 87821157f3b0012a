"""ipft-web: follow marked packets through the Linux kernel, function by function."""

__version__ = "0.1.0"
