"""obsv: Sentry error alerts to GitHub issues, through a durable event log."""

__version__ = "0.1.0"
