"""Wire formats: pure functions from response events to bytes, one module per format."""
