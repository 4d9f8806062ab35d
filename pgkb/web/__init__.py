"""The web console: static files served by `pgkb serve` at /console (see docs/console.md)."""
