"""Celery workers: thin tasks over the domain steps, configured for money."""
