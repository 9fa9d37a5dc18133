"""A food order: check the restaurant and the stock in parallel, then pick up, then track.

`check_restaurant` and `check_stock` form a group. `pick_up` is its join,
so it receives both results as a list, in group order. `track` follows
`pick_up` and receives its result.
"""

from __future__ import annotations

import time

from conveyor import Conveyor, Reject, chain, group

app = Conveyor()  # the server at $CONVEYOR_URL, else http://127.0.0.1:8080

QUEUE = "orders"
OPEN_RESTAURANTS = {"luigi": 12, "sakura": 20}  # name -> minutes to prepare
STOCK = {"pizza": 30, "pasta": 10, "ramen": 25, "sushi": 0}


@app.task(queue=QUEUE, name="food.check_restaurant")
def check_restaurant(order: dict) -> dict:
    """Confirm that the restaurant is open and return its preparation time."""
    restaurant = order["restaurant"]
    if restaurant not in OPEN_RESTAURANTS:
        raise Reject(f"restaurant {restaurant!r} is closed")
    time.sleep(0.05)
    return {"check": "restaurant", "restaurant": restaurant,
            "prepare_minutes": OPEN_RESTAURANTS[restaurant]}


@app.task(queue=QUEUE, name="food.check_stock")
def check_stock(order: dict) -> dict:
    """Confirm that every item is in stock."""
    missing = [item for item in order["items"] if STOCK.get(item, 0) <= 0]
    if missing:
        raise Reject(f"out of stock: {', '.join(missing)}")
    time.sleep(0.05)
    return {"check": "stock", "items": order["items"]}


@app.task(queue=QUEUE, name="food.pick_up")
def pick_up(checks: list, courier: str) -> dict:
    """Send a courier once both checks passed; `checks` is [restaurant, stock]."""
    restaurant, stock = checks
    return {
        "courier": courier,
        "restaurant": restaurant["restaurant"],
        "items": stock["items"],
        "ready_in_minutes": restaurant["prepare_minutes"],
    }


@app.task(queue=QUEUE, name="food.track")
def track(pickup: dict) -> dict:
    """Return the delivery's tracking record."""
    return {**pickup, "status": "on the way", "eta_minutes": pickup["ready_in_minutes"] + 15}


def food_order(restaurant: str, items: list[str], courier: str = "sam"):
    """Build the order workflow: two checks in parallel, then pick up, then track."""
    order = {"restaurant": restaurant, "items": items}
    return chain(
        group(check_restaurant.step(order), check_stock.step(order)),
        pick_up.step(courier),
        track.step(),
    )
