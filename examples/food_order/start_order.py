"""Start one food order workflow, wait for it and print its result as JSON.

Usage: python start_order.py [RESTAURANT] [ITEM ...]
"""

from __future__ import annotations

import json
import sys

from food_tasks import app, food_order

RESULT_TIMEOUT_S = 60.0


def main() -> None:
    restaurant = sys.argv[1] if len(sys.argv) > 1 else "luigi"
    items = sys.argv[2:] or ["pizza", "pasta"]
    handle = food_order(restaurant, items).start(name=f"order at {restaurant}")
    print(f"Started workflow {handle.id}; see it with: conveyor workflows show {handle.id}",
          file=sys.stderr)
    result = handle.result(timeout_s=RESULT_TIMEOUT_S)
    print(json.dumps({"workflow_id": handle.id, "result": result}))
    app.close()


if __name__ == "__main__":
    main()
