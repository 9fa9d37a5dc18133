"""An expense claim: submit -> verify -> approve -> pay, strictly in order.

Each step receives the previous step's result (the claim so far) as its
first argument and returns the claim with its own part added, so the
workflow's result is the paid claim with its whole history.
"""

from __future__ import annotations

import hashlib
import logging
import time

from conveyor import Conveyor, Reject, chain

app = Conveyor()  # the server at $CONVEYOR_URL, else http://127.0.0.1:8080
logger = logging.getLogger(__name__)

QUEUE = "expenses"
# Claims above this amount (in cents) need a person, so the example rejects them.
AUTO_APPROVE_LIMIT_CENTS = 50_000
ALLOWED_CATEGORIES = ("travel", "meals", "equipment")


@app.task(queue=QUEUE, name="expense.submit")
def submit(employee: str, amount_cents: int, category: str) -> dict:
    """Record a new claim; the first step, so it gets no input."""
    claim_id = "claim-" + hashlib.sha256(f"{employee}:{time.time_ns()}".encode()).hexdigest()[:10]
    return {
        "claim_id": claim_id,
        "employee": employee,
        "amount_cents": amount_cents,
        "category": category,
        "history": ["submitted"],
    }


@app.task(queue=QUEUE, name="expense.verify")
def verify(claim: dict) -> dict:
    """Check the claim's category and amount; a bad claim goes to the DLQ at once."""
    if claim["category"] not in ALLOWED_CATEGORIES:
        raise Reject(f"category {claim['category']!r} is not reimbursable")
    if claim["amount_cents"] <= 0:
        raise Reject(f"amount {claim['amount_cents']} must be positive")
    return {**claim, "history": [*claim["history"], "verified"]}


@app.task(queue=QUEUE, name="expense.approve")
def approve(claim: dict) -> dict:
    """Approve claims up to AUTO_APPROVE_LIMIT_CENTS."""
    if claim["amount_cents"] > AUTO_APPROVE_LIMIT_CENTS:
        raise Reject(f"claim {claim['claim_id']} needs a manager's approval")
    return {**claim, "approved_by": "auto", "history": [*claim["history"], "approved"]}


@app.task(queue=QUEUE, name="expense.pay", max_attempts=5)
def pay(claim: dict) -> dict:
    """Pay the claim through the (fake) payment provider."""
    payment_id = FakePaymentProvider().transfer(claim["employee"], claim["amount_cents"])
    logger.info("Paid claim %s as payment %s", claim["claim_id"], payment_id)
    return {**claim, "payment_id": payment_id, "history": [*claim["history"], "paid"]}


class FakePaymentProvider:
    """Stands in for a third-party payment API; returns a payment id."""

    def transfer(self, employee: str, amount_cents: int) -> str:
        time.sleep(0.05)  # the network round trip a real provider would take
        digest = hashlib.sha256(f"{employee}:{amount_cents}".encode()).hexdigest()
        return "pay-" + digest[:12]


def expense_claim(employee: str, amount_cents: int, category: str):
    """Build the claim workflow: each step runs only after the previous one succeeded."""
    return chain(
        submit.step(employee, amount_cents, category),
        verify.step(),
        approve.step(),
        pay.step(),
    )
