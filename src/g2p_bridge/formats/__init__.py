"""Bank file formats: pure, streaming readers and writers; they know nothing of the domain."""
