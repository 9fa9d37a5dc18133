"""Start one expense claim workflow, wait for it and print its result as JSON.

A claim that fails a step prints one line naming the step and exits 1.

Usage: python start_claim.py [EMPLOYEE] [AMOUNT_CENTS] [CATEGORY]
"""

from __future__ import annotations

import json
import sys

from conveyor.errors import ResultTimeout, TaskError

from expense_tasks import app, expense_claim

RESULT_TIMEOUT_S = 60.0


def main() -> None:
    employee = sys.argv[1] if len(sys.argv) > 1 else "ada"
    amount_cents = int(sys.argv[2]) if len(sys.argv) > 2 else 12_50
    category = sys.argv[3] if len(sys.argv) > 3 else "meals"
    handle = expense_claim(employee, amount_cents, category).start(name=f"claim of {employee}")
    print(f"Started workflow {handle.id}; see it with: conveyor workflows show {handle.id}",
          file=sys.stderr)
    try:
        result = handle.result(timeout_s=RESULT_TIMEOUT_S)
    except (TaskError, ResultTimeout) as exc:
        # A failed, cancelled or slow workflow ends the script with one line, not a traceback.
        print(f"The claim did not go through: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        app.close()
    print(json.dumps({"workflow_id": handle.id, "result": result}))


if __name__ == "__main__":
    main()
