"""The routes of the HTTP service, one module per group; each builds its router per application."""
