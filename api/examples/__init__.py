"""Example workflows, written to be read: what ``tierflow demo`` runs.

- :mod:`~tierflow.examples.orders`: retries against a flaky service, a signal, a timer.
- :mod:`~tierflow.examples.payments`: captures and refunds that fail for good.
- :mod:`~tierflow.examples.provisioning`: child workflows in parallel, rollback.
- :mod:`~tierflow.examples.approvals`: waiting days for a decision, cancellation.

Failures of the flaky services depend only on the request id
(:mod:`~tierflow.examples.flaky`), so the same ids tell the same story on every run.
``tierflow worker --app tierflow.examples`` runs them all.
"""

from __future__ import annotations

from tierflow.examples.approvals import expense_approval
from tierflow.examples.orders import process_order
from tierflow.examples.payments import capture_payment, refund_payment
from tierflow.examples.provisioning import provision_account, provision_resource

__all__ = [
    "WORKFLOWS",
    "capture_payment",
    "expense_approval",
    "process_order",
    "provision_account",
    "provision_resource",
    "refund_payment",
]

WORKFLOWS = [
    process_order,
    capture_payment,
    refund_payment,
    provision_account,
    provision_resource,
    expense_approval,
]
