"""Optional integrations with third-party libraries, one module per library."""
