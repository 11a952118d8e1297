"""Example Bank: a simulated sponsor bank for rehearsing G2P Bridge disbursements.

It keeps accounts, blocks funds, pays (and fails some payments on purpose), and reports
every ledger movement in MT940 statements delivered to the bridge. It has its own
database, API process and Celery worker and is never deployed in production.
"""

__version__ = "0.1.0"
