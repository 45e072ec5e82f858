"""The web dashboard: a standard-library HTTP server and one static page."""
