"""pg-runbooks: the library behind the Jupyter runbooks. Notebooks hold no logic; this does."""

__version__ = "0.1.0"
