"""The built-in stores, one module each."""
