"""Dependencies of the providers and appointments functions."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from ..booking import BookingService
from ..scheduling import ProviderSchedule
from .deps import NowDep, RuntimeDep, SessionDep
from .runtime import booking_policy


async def schedule_service(session: SessionDep, runtime: RuntimeDep, now: NowDep) -> ProviderSchedule:
    return ProviderSchedule(session, policy=booking_policy(runtime.settings), now=now, store=runtime.day_store)


async def booking_service(session: SessionDep, runtime: RuntimeDep, now: NowDep) -> BookingService:
    return BookingService(session, policy=booking_policy(runtime.settings), now=now)


ScheduleDep = Annotated[ProviderSchedule, Depends(schedule_service)]
BookingDep = Annotated[BookingService, Depends(booking_service)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, description="Replays return the first response"),
]
