"""The SQLite store's schema and statements, and its rows made into messages and views.

One table for every queue of the file. A delivered message keeps its row (without body
and headers) until `max_age` after its acceptance, so that its id can be looked up and
its idempotency key still deduplicates; a dead letter keeps everything, to be retried.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import orjson

from .message import PENDING, Message, NewMessage, header_names, public_view

SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY,        -- the order of acceptance
    id TEXT NOT NULL UNIQUE,
    queue TEXT NOT NULL,
    route TEXT NOT NULL,
    state TEXT NOT NULL,            -- pending, delivered, dead
    fair_key TEXT NOT NULL,
    idem TEXT,                      -- the app's idempotency key
    method TEXT NOT NULL,
    target TEXT NOT NULL,
    headers BLOB,
    body BLOB,
    request_id TEXT NOT NULL,
    accepted REAL NOT NULL,
    since REAL NOT NULL,            -- max_age counts from here (a retry by hand resets it)
    due REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    history TEXT NOT NULL DEFAULT '[]',
    settled REAL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS messages_state ON messages (queue, state, settled);
CREATE INDEX IF NOT EXISTS messages_idem ON messages (queue, fair_key, idem)
    WHERE idem IS NOT NULL;
CREATE TABLE IF NOT EXISTS paused (queue TEXT PRIMARY KEY);
"""

WAITING_ROWS = "SELECT seq, queue, fair_key, due, since FROM messages WHERE state = 'pending'"
DEAD_COUNTS = "SELECT queue, count(*) FROM messages WHERE state = 'dead' GROUP BY queue"
PAUSED = "SELECT queue FROM paused"
MAX_SEQ = "SELECT max(seq) FROM messages"
FIND_IDEM = (
    "SELECT id FROM messages WHERE queue = ? AND fair_key = ? AND idem = ? AND accepted > ? "
    "ORDER BY seq DESC LIMIT 1"
)
INSERT = (
    "INSERT INTO messages (seq, id, queue, route, state, fair_key, idem, method, target, "
    "headers, body, request_id, accepted, since, due) "
    "VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
DELIVERED = (
    "UPDATE messages SET state = 'delivered', attempts = ?, history = ?, settled = ?, "
    "body = NULL, headers = NULL WHERE seq = ?"
)
DEAD = (
    "UPDATE messages SET state = 'dead', attempts = ?, history = ?, settled = ?, reason = ? "
    "WHERE seq = ?"
)
RETRY = "UPDATE messages SET attempts = ?, history = ?, due = ? WHERE seq = ?"
DELETE = "DELETE FROM messages WHERE queue = ? AND id = ? AND state = 'dead'"
PAUSE = "INSERT OR IGNORE INTO paused (queue) VALUES (?)"
RESUME = "DELETE FROM paused WHERE queue = ?"
PURGE = "DELETE FROM messages WHERE queue = ? AND state = 'delivered' AND settled < ?"

_LOAD = (
    "SELECT seq, id, route, method, target, headers, body, request_id, fair_key, accepted, "
    "since, attempts, history FROM messages WHERE state = 'pending' AND seq IN ({})"
)
_VIEW = (
    "SELECT id, queue, route, state, method, fair_key, accepted, attempts, history, settled, "
    "reason, length(body), headers FROM messages WHERE queue = ? AND {} "
)


def row(seq: int, queue: str, m: NewMessage) -> tuple[Any, ...]:
    return (
        seq,
        m.id,
        queue,
        m.route,
        m.key,
        m.idem,
        m.method,
        m.target,
        m.headers,
        m.body,
        m.request_id,
        m.accepted,
        m.accepted,
        m.accepted,
    )


def load(conn: sqlite3.Connection, seqs: list[int]) -> list[tuple[Any, ...]]:
    statement = _LOAD.format(",".join("?" * len(seqs)))
    return conn.execute(statement, seqs).fetchall()


def message(r: tuple[Any, ...]) -> Message:
    seq, mid, route, method, target, headers, body, rid, key, accepted, since, n, history = r
    return Message(
        id=mid,
        handle=seq,
        route=route,
        method=method,
        target=target,
        headers=headers or b"",
        body=body,
        request_id=rid,
        key=key,
        accepted=accepted,
        since=since,
        attempts=n,
        history=orjson.loads(history),
    )


def _view(r: tuple[Any, ...]) -> dict[str, Any]:
    mid, queue, route, state, method, key, accepted, attempts, history, settled, reason = r[:11]
    return public_view(
        {
            "id": mid,
            "queue": queue,
            "route": route,
            "state": state,
            "method": method,
            "key": key,
            "accepted": accepted,
            "attempts": attempts,
            "history": orjson.loads(history),
            "settled": settled,
            "reason": reason,
            "body_bytes": r[11] or 0,
            "header_names": header_names(r[12]),
        }
    )


def view(conn: sqlite3.Connection, queue: str, message_id: str) -> dict[str, Any] | None:
    found = conn.execute(_VIEW.format("id = ?"), (queue, message_id)).fetchone()
    return _view(found) if found is not None else None


def dead(conn: sqlite3.Connection, queue: str, limit: int) -> list[dict[str, Any]]:
    statement = _VIEW.format("state = 'dead' ORDER BY settled DESC, seq DESC LIMIT ?")
    return [_view(r) for r in conn.execute(statement, (queue, limit))]


def redrive(
    conn: sqlite3.Connection, queue: str, message_id: str | None, now: float
) -> list[tuple[int, str]]:
    """Dead letters pending again, with their attempts counted afresh (history kept)."""
    where = "queue = ? AND state = 'dead'" + (" AND id = ?" if message_id else "")
    args: tuple[Any, ...] = (now, now, queue) + ((message_id,) if message_id else ())
    statement = (
        f"UPDATE messages SET state = '{PENDING}', attempts = 0, since = ?, due = ?, "
        f"settled = NULL, reason = NULL WHERE {where} RETURNING seq, fair_key"
    )
    return [(seq, key) for seq, key in conn.execute(statement, args).fetchall()]
