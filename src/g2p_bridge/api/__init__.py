"""The PBMS- and bank-facing HTTP API (FastAPI)."""
