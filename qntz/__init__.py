"""qntz: declarative, cached, verified conversion of PyTorch models to deployable artifacts."""

__version__ = "0.1.0"
