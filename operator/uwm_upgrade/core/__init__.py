"""The pure core: models, hop planning, phase decisions and status transactions. Imports no I/O library."""
