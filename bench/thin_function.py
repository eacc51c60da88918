"""The thinnest reserving function this stack allows: the floor of the throughput goal.

No `from __future__ import annotations` here: FastAPI reads the route's annotations at
run time, and the body model must be a real class when it does.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import text

from reservations.adapters.db import make_engine
from reservations.http.lambda_entry import make_lambda_handler

from .booking_world import HOLD_EXPIRE, HOLD_INSERT


class Hold(BaseModel):
    provider_id: int
    start_time: datetime


def thin_function(url: str, patient: int, now: datetime) -> Callable[[dict[str, Any], Any], dict[str, Any]]:
    """The least a reserving function can be on this stack: FastAPI behind the project's
    Lambda wrapper (Mangum, Powertools), a body model, and the hold transaction's two
    writes through the project's engine (SQLAlchemy Core, pg8000, pool of 1) for one
    patient - no token, no provider or visit type, no locks, limits, history, day versions
    or outbox. A floor for the throughput goal, not a way to book."""
    engine = make_engine(url)
    expire, insert = text(HOLD_EXPIRE), text(HOLD_INSERT)

    app = FastAPI()

    @app.post("/appointments/reserve", status_code=201)
    def hold(body: Hold) -> dict[str, int]:
        end, expires = body.start_time + timedelta(minutes=15), now + timedelta(minutes=30)
        values = {"provider": body.provider_id, "patient": patient, "start": body.start_time, "end": end,
                  "now": now, "expires": expires}  # fmt: skip
        with engine.begin() as connection:
            connection.execute(expire, values)
            return {"slot_id": connection.execute(insert, values).scalar_one()}

    return make_lambda_handler(app)
