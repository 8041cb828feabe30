"""A FastAPI service on kvstore's asyncio manager: sessions, a shared chat log, cached reports.

    pip install -e ".[examples]"
    KVSTORE_CONFIG=config.example.yaml uvicorn examples.fastapi_app:app --workers 4

Without ``KVSTORE_CONFIG`` it runs on the embedded default (no server). Every handler awaits
kvstore, so a slow or frozen Redis never stalls the others: ``/health`` answers at once.
"""

from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from fastapi import FastAPI, HTTPException

from kvstore import StoreUnavailableError
from kvstore.aio import AsyncPersistenceManager

CONFIG = {"persistence": {"categories": {
    "session": {"store": "cache", "ttl": "30m"},
    "chat": {"store": "database"},
    "report": {"store": "cache", "ttl": "10m"},
    "config": {"store": "file"},
}}}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    path = os.environ.get("KVSTORE_CONFIG")
    pm = AsyncPersistenceManager.from_yaml(path) if path else AsyncPersistenceManager.from_config(CONFIG)
    async with pm:
        app.state.pm = pm

        @pm.cached(category="report", ttl="10m")
        async def report(room: str) -> dict[str, Any]:
            await asyncio.sleep(0.2)  # an expensive query, computed once per room and 10 minutes
            messages = await pm.load(f"chat:{room}", default=[])
            return {"room": room, "messages": len(messages)}

        app.state.report = report
        yield


app = FastAPI(lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.put("/session/{sid}")
async def put_session(sid: str, data: dict[str, Any]) -> dict[str, Any]:
    await app.state.pm.save(f"session:{sid}", data)
    return {"saved": sid}


@app.get("/session/{sid}")
async def get_session(sid: str) -> dict[str, Any]:
    data = await app.state.pm.load(f"session:{sid}")
    if data is None:
        raise HTTPException(404, f"no session {sid}")
    return data


@app.post("/chat/{room}")
async def post_message(room: str, message: dict[str, Any]) -> dict[str, int]:
    # Atomic: concurrent posts from every worker are all kept.
    return {"length": await app.state.pm.append(f"chat:{room}", message)}


@app.get("/chat/{room}")
async def get_chat(room: str) -> list[Any]:
    return await app.state.pm.load(f"chat:{room}", default=[])  # type: ignore[no-any-return]


@app.get("/report/{room}")
async def get_report(room: str) -> dict[str, Any]:
    return await app.state.report(room)  # type: ignore[no-any-return]


@app.exception_handler(StoreUnavailableError)
async def unavailable(request: Any, exc: StoreUnavailableError) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": str(exc)}, status_code=503)
