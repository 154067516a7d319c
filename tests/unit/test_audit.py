"""The audit log's file: continued where it ended, and never read when it is not a file."""

from __future__ import annotations

import os
import threading

import orjson

from proxy.control.audit import AuditLog, verify


def test_audit_file_continues_the_chain_it_holds(tmp_path):
    path = tmp_path / "audit.log"
    AuditLog.to_file(path).record("reload", result="success")
    AuditLog.to_file(path).record("drain")  # a restart appends to the same chain
    count, broken = verify(path)
    assert (count, broken) == (2, None)
    assert [orjson.loads(line)["action"] for line in path.read_bytes().splitlines()] == [
        "reload",
        "drain",
    ]


def test_audit_log_on_a_pipe_is_not_read_back(tmp_path):
    """`/dev/stdout` in a container is a pipe: reading it back would block start-up."""
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    opened: list[AuditLog] = []
    worker = threading.Thread(target=lambda: opened.append(AuditLog.to_file(pipe)), daemon=True)
    worker.start()
    worker.join(2)
    if worker.is_alive():
        with open(pipe, "wb"):  # release the blocked read before failing
            pass
    assert opened, "AuditLog.to_file blocked reading a pipe"
