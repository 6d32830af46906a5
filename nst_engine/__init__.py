"""nst_engine: Gatys et al. neural style transfer on a frozen VGG19, as a library, a CLI and an HTTP service."""

__version__ = "0.1.0"
