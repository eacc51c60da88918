"""Annotated dependencies: `RuntimeDep`, `SessionDep`, `CurrentUser`, role guards.

They are `async def` although some touch the database: under Mangum every invocation
runs alone on its own event loop, so there is nothing for blocking to starve, while a
plain `def` dependency costs a thread hop each (measured: most of a cached listing's
overhead)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import OAuth2PasswordBearer
from sqlalchemy.orm import Session

from ..accounts import AccountService
from ..db import User
from ..errors import Forbidden, Unauthenticated
from .runtime import Runtime

bearer_scheme = OAuth2PasswordBearer(tokenUrl="token", auto_error=False)


async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_session(runtime: RuntimeDep) -> AsyncIterator[Session]:
    with runtime.transaction() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


async def get_now(runtime: RuntimeDep) -> datetime:
    return runtime.now()


NowDep = Annotated[datetime, Depends(get_now)]


async def account_service(session: SessionDep, runtime: RuntimeDep, now: NowDep) -> AccountService:
    return runtime.accounts(session, now)


AccountsDep = Annotated[AccountService, Depends(account_service)]


async def optional_user(accounts: AccountsDep, token: Annotated[str | None, Depends(bearer_scheme)]) -> User | None:
    if not token:
        return None
    return accounts.authenticate(token)


async def current_user(user: Annotated[User | None, Depends(optional_user)]) -> User:
    if user is None:
        raise Unauthenticated("not authenticated", code="not_authenticated")
    return user


CurrentUser = Annotated[User, Depends(current_user)]
OptionalUser = Annotated[User | None, Depends(optional_user)]


def require_role(*roles: str) -> Callable[[User], Awaitable[User]]:
    async def guard(user: CurrentUser) -> User:
        if user.role not in roles:
            raise Forbidden(f"this action requires the role {' or '.join(roles)}", code="wrong_role")
        return user

    return guard
