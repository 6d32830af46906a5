"""The Gateway: a websocket speaking Discord's gateway protocol (JSON encoding, optional
``zlib-stream`` or ``zstd-stream`` transport compression).

Lifecycle: HELLO -> (heartbeats <-> ACKs) -> IDENTIFY -> READY + GUILD_CREATE -> dispatches;
after a dropped connection: HELLO -> RESUME -> missed dispatches -> RESUMED.

Docs: https://discord.com/developers/docs/events/gateway
      https://discord.com/developers/docs/events/gateway-events
      https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import DiscordDouble

_log = logging.getLogger(__name__)

# https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-opcodes
DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE = 0, 1, 2, 3, 4
RESUME, RECONNECT, REQUEST_GUILD_MEMBERS, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 6, 7, 8, 9, 10, 11
CLIENT_OPS = {HEARTBEAT, IDENTIFY, PRESENCE_UPDATE, VOICE_STATE_UPDATE, RESUME, REQUEST_GUILD_MEMBERS, 31}

# https://discord.com/developers/docs/events/gateway#gateway-intents
INTENTS = {
    "GUILDS": 1 << 0,
    "GUILD_MEMBERS": 1 << 1,
    "GUILD_MODERATION": 1 << 2,
    "GUILD_EXPRESSIONS": 1 << 3,
    "GUILD_INTEGRATIONS": 1 << 4,
    "GUILD_WEBHOOKS": 1 << 5,
    "GUILD_INVITES": 1 << 6,
    "GUILD_VOICE_STATES": 1 << 7,
    "GUILD_PRESENCES": 1 << 8,
    "GUILD_MESSAGES": 1 << 9,
    "GUILD_MESSAGE_REACTIONS": 1 << 10,
    "GUILD_MESSAGE_TYPING": 1 << 11,
    "DIRECT_MESSAGES": 1 << 12,
    "DIRECT_MESSAGE_REACTIONS": 1 << 13,
    "DIRECT_MESSAGE_TYPING": 1 << 14,
    "MESSAGE_CONTENT": 1 << 15,
    "GUILD_SCHEDULED_EVENTS": 1 << 16,
    "AUTO_MODERATION_CONFIGURATION": 1 << 20,
    "AUTO_MODERATION_EXECUTION": 1 << 21,
    "GUILD_MESSAGE_POLLS": 1 << 24,
    "DIRECT_MESSAGE_POLLS": 1 << 25,
}
ALL_INTENTS = sum(INTENTS.values())
PRIVILEGED_INTENTS = INTENTS["GUILD_MEMBERS"] | INTENTS["GUILD_PRESENCES"] | INTENTS["MESSAGE_CONTENT"]

# Close codes after which Discord will not let the session RESUME.
# https://discord.com/developers/docs/topics/opcodes-and-status-codes#gateway-gateway-close-event-codes
NOT_RESUMABLE = {1000, 1001, 4004, 4007, 4009, 4010, 4011, 4012, 4013, 4014}


@dataclass
class Session:
    """A gateway session: survives dropped connections until it is invalidated."""

    id: str
    intents: int
    shard: tuple[int, int]
    seq: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)  # every dispatch frame sent
    connection: Connection | None = None
    valid: bool = True


class Connection:
    """One websocket. Transport compression keeps one zlib/zstd context for the connection."""

    def __init__(self, ws: web.WebSocketResponse, path: str, compress: str | None) -> None:
        self.ws = ws
        self.path = path
        self.compress = compress
        self.session: Session | None = None
        self.server_close_code: int | None = None
        self._lock = asyncio.Lock()
        self._zlib = zlib.compressobj() if compress == "zlib-stream" else None
        self._zstd = _zstd_compressor() if compress == "zstd-stream" else None

    async def close(self, code: int, reason: str) -> None:
        """Close from the server side. (aiohttp reports 1000 as ``close_code`` when ``close()``
        interrupts a pending ``receive()``, so the code is remembered here.)"""
        if self.server_close_code is None and not self.ws.closed:
            self.server_close_code = code
        await self.ws.close(code=code, message=reason.encode())

    @property
    def close_code(self) -> int | None:
        return self.server_close_code if self.server_close_code is not None else self.ws.close_code

    async def send(self, frame: dict[str, Any]) -> bool:
        data = json.dumps(frame)
        async with self._lock:
            if self.ws.closed:
                return False
            try:
                if self._zlib is not None:
                    await self.ws.send_bytes(self._zlib.compress(data.encode()) + self._zlib.flush(zlib.Z_SYNC_FLUSH))
                elif self._zstd is not None:
                    await self.ws.send_bytes(self._zstd(data.encode()))
                else:
                    await self.ws.send_str(data)
            except (ConnectionError, RuntimeError):
                return False
        return True


def _zstd_compressor() -> Callable[[bytes], bytes]:
    """zstd-stream, mirroring discord.py's own choice of library (``discord.utils``): each
    websocket message is one flushed block of a single zstd stream. Untested here: discord.py
    only asks for it when ``zstandard`` (or Python 3.14's ``compression.zstd``) is installed."""
    try:
        import zstandard  # type: ignore

        obj = zstandard.ZstdCompressor().compressobj()
        return lambda b: obj.compress(b) + obj.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK)
    except ImportError:
        from compression.zstd import ZstdCompressor  # type: ignore

        comp = ZstdCompressor()
        return lambda b: comp.compress(b, mode=ZstdCompressor.FLUSH_BLOCK)


class Gateway:
    def __init__(self, double: DiscordDouble, *, heartbeat_interval_ms: int) -> None:
        self.double = double
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.sessions: dict[str, Session] = {}
        self.connections: list[Connection] = []
        self.received: list[dict[str, Any]] = []  # every frame the bot sent, in order
        self.connection_paths: list[str] = []  # URL path + query of every websocket opened
        self.close_codes: list[int | None] = []  # close code of every finished connection
        self.identified = 0  # sessions that got READY + their GUILD_CREATEs
        self._changed = asyncio.Event()

    # -- introspection for tests -----------------------------------------------------------
    def ops_received(self, op: int | None = None) -> list[dict[str, Any]]:
        return [f for f in self.received if op is None or f.get("op") == op]

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``condition()`` holds; re-checked whenever the gateway state changes."""

        async def waiter() -> None:
            while not condition():
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(waiter(), timeout)

    async def wait_for_op(self, op: int, *, count: int = 1, timeout: float = 5.0) -> dict[str, Any]:
        """Wait until the bot has sent ``count`` frames with opcode ``op``; returns the last."""
        await self.wait_until(lambda: len(self.ops_received(op)) >= count, timeout)
        return self.ops_received(op)[count - 1]

    # -- the websocket handler -------------------------------------------------------------
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        """``GET /gateway`` upgraded to a websocket.
        https://discord.com/developers/docs/events/gateway#connecting"""
        ws = web.WebSocketResponse(max_msg_size=0, autoping=True)
        await ws.prepare(request)
        compress = request.query.get("compress")
        conn = Connection(ws, request.path_qs, compress)
        self.connections.append(conn)
        self.connection_paths.append(request.path_qs)
        try:
            if request.query.get("v", "10") not in ("10", "9"):
                await conn.close(4012, "Invalid API version")
                return ws
            if request.query.get("encoding", "json") != "json" or compress not in (None, "zlib-stream", "zstd-stream"):
                await conn.close(4002, "Error while decoding payload.")  # only JSON is spoken here
                return ws
            # https://discord.com/developers/docs/events/gateway-events#hello
            await conn.send(
                {
                    "op": HELLO,
                    "d": {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["discord-double"]},
                    "s": None,
                    "t": None,
                }
            )
            async for msg in ws:
                if msg.type != WSMsgType.TEXT and msg.type != WSMsgType.BINARY:
                    break
                try:
                    frame = json.loads(msg.data)
                    op = frame["op"]
                except (ValueError, KeyError, TypeError):
                    await conn.close(4002, "Error while decoding payload.")
                    break
                self.received.append(frame)
                self._changed.set()
                await self._on_frame(conn, op, frame.get("d"))
                if ws.closed:
                    break
        finally:
            self.connections.remove(conn)
            self.close_codes.append(conn.close_code)
            session = conn.session
            if session is not None and session.connection is conn:
                session.connection = None
                if conn.close_code in NOT_RESUMABLE:
                    session.valid = False
            self._changed.set()
        return ws

    async def _on_frame(self, conn: Connection, op: int, d: Any) -> None:
        if op not in CLIENT_OPS:
            await conn.close(4001, "Unknown opcode.")
        elif op == HEARTBEAT:
            # https://discord.com/developers/docs/events/gateway#sending-heartbeats
            await conn.send({"op": HEARTBEAT_ACK, "d": None, "s": None, "t": None})
        elif op == IDENTIFY:
            await self._identify(conn, d or {})
        elif op == RESUME:
            await self._resume(conn, d or {})
        elif conn.session is None:
            await conn.close(4003, "Not authenticated.")
        elif op == REQUEST_GUILD_MEMBERS:
            await self._request_members(conn, d or {})
        # PRESENCE_UPDATE / VOICE_STATE_UPDATE: accepted and recorded in ``received``.

    async def _identify(self, conn: Connection, d: dict[str, Any]) -> None:
        """https://discord.com/developers/docs/events/gateway-events#identify"""
        double = self.double
        if conn.session is not None:
            await conn.close(4005, "Already authenticated.")
            return
        if d.get("token") != double.token:
            await conn.close(4004, "Authentication failed.")
            return
        intents = d.get("intents")
        if not isinstance(intents, int) or intents & ~ALL_INTENTS:
            await conn.close(4013, "Invalid intent(s).")
            return
        if intents & PRIVILEGED_INTENTS & ~double.privileged_intents:
            await conn.close(4014, "Disallowed intent(s).")
            return
        shard = tuple(d.get("shard") or (0, 1))
        if len(shard) != 2 or not 0 <= shard[0] < shard[1]:
            await conn.close(4010, "Invalid shard.")
            return
        session = Session(id=secrets.token_hex(16), intents=intents, shard=shard)  # type: ignore[arg-type]
        self.sessions[session.id] = session
        conn.session = session
        session.connection = conn
        guilds = [g for g in double.store.guilds.values() if (g.id >> 22) % shard[1] == shard[0]]
        # https://discord.com/developers/docs/events/gateway-events#ready
        ready = {
            "v": 10,
            "user": {**double.bot_user.to_payload(), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": double.resume_gateway_url,
            "application": {"id": str(double.application_id), "flags": double.application_flags},
            "private_channels": [],
            "presences": [],
            "relationships": [],
            "user_settings": {},
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "_trace": ["discord-double"],
        }
        if d.get("shard"):
            ready["shard"] = list(shard)
        await self._send_dispatch(session, "READY", ready)
        for guild in guilds:
            # https://discord.com/developers/docs/events/gateway-events#guild-create
            await self._send_dispatch(session, "GUILD_CREATE", guild.to_create_payload(double.joined_at))
        self.identified += 1
        self._changed.set()

    async def _resume(self, conn: Connection, d: dict[str, Any]) -> None:
        """https://discord.com/developers/docs/events/gateway#resuming"""
        session = self.sessions.get(d.get("session_id", ""))
        if d.get("token") != self.double.token:
            await conn.close(4004, "Authentication failed.")
            return
        if session is None or not session.valid:
            # https://discord.com/developers/docs/events/gateway-events#invalid-session
            await conn.send({"op": INVALID_SESSION, "d": False, "s": None, "t": None})
            return
        seq = d.get("seq") or 0
        if seq > session.seq:
            await conn.close(4007, "Invalid seq.")
            return
        old = session.connection
        session.connection = conn
        conn.session = session
        if old is not None and old is not conn:
            await old.close(4000, "Session resumed elsewhere.")
        for frame in session.history:
            if frame["s"] > seq:
                await conn.send(frame)
        await self._send_dispatch(session, "RESUMED", {"_trace": ["discord-double"]})

    async def _request_members(self, conn: Connection, d: dict[str, Any]) -> None:
        """https://discord.com/developers/docs/events/gateway-events#request-guild-members"""
        guild = self.double.store.guilds.get(int(d.get("guild_id", 0)))
        if guild is None or conn.session is None:
            return
        members = list(guild.members.values())
        if d.get("user_ids"):
            wanted = {int(u) for u in d["user_ids"]}
            members = [m for m in members if m.user.id in wanted]
        elif d.get("query"):
            members = [m for m in members if m.user.username.startswith(d["query"])]
        if d.get("limit"):
            members = members[: d["limit"]]
        chunk = {
            "guild_id": str(guild.id),
            "members": [m.to_payload() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
        }
        if d.get("nonce"):
            chunk["nonce"] = d["nonce"]
        # https://discord.com/developers/docs/events/gateway-events#guild-members-chunk
        await self._send_dispatch(conn.session, "GUILD_MEMBERS_CHUNK", chunk)

    # -- dispatching -------------------------------------------------------------------------
    async def _send_dispatch(self, session: Session, event: str, data: dict[str, Any]) -> None:
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        if event not in ("READY", "RESUMED"):
            session.history.append(frame)
        if session.connection is not None:
            await session.connection.send(frame)

    async def dispatch(
        self,
        event: str,
        data: dict[str, Any],
        *,
        intent: int = 0,
        transform: Callable[[Session, dict[str, Any]], dict[str, Any] | None] | None = None,
    ) -> None:
        """Send a dispatch to every valid session whose intents include ``intent``. Sessions that
        are disconnected keep it in their history, to be replayed on RESUME."""
        for session in list(self.sessions.values()):
            if not session.valid or (intent and not session.intents & intent):
                continue
            payload = transform(session, data) if transform else data
            if payload is not None:
                await self._send_dispatch(session, event, payload)

    # -- faults ------------------------------------------------------------------------------
    async def disconnect(self, code: int = 4000, reason: str = "Unknown error.") -> int:
        """Close every live connection with ``code`` (4000 = unknown error, resumable)."""
        conns = list(self.connections)
        for conn in conns:
            await conn.close(code, reason)
        return len(conns)

    async def send_op(self, op: int, d: Any) -> None:
        for conn in list(self.connections):
            if conn.session is not None:
                await conn.send({"op": op, "d": d, "s": None, "t": None})

    async def close(self) -> None:
        for conn in list(self.connections):
            await conn.close(1001, "Server shutting down.")
