"""Start one food order workflow, wait for it and print its result as JSON.

An order that fails a step prints one line naming the step and exits 1.

Usage: python start_order.py [RESTAURANT] [ITEM ...]
"""

from __future__ import annotations

import json
import sys

from conveyor.errors import ResultTimeout, TaskError

from food_tasks import app, food_order

RESULT_TIMEOUT_S = 60.0


def main() -> None:
    restaurant = sys.argv[1] if len(sys.argv) > 1 else "luigi"
    items = sys.argv[2:] or ["pizza", "pasta"]
    handle = food_order(restaurant, items).start(name=f"order at {restaurant}")
    print(f"Started workflow {handle.id}; see it with: conveyor workflows show {handle.id}",
          file=sys.stderr)
    try:
        result = handle.result(timeout_s=RESULT_TIMEOUT_S)
    except (TaskError, ResultTimeout) as exc:
        # A failed, cancelled or slow workflow ends the script with one line, not a traceback.
        print(f"The order did not go through: {exc}", file=sys.stderr)
        sys.exit(1)
    finally:
        app.close()
    print(json.dumps({"workflow_id": handle.id, "result": result}))


if __name__ == "__main__":
    main()
