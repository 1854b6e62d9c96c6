"""Where ``vadpipe watch`` sends its events: JSON lines, a command per event, a webhook.

Hooks run on their own worker threads behind bounded queues, so a slow or failing hook never
holds up scoring: a failure is logged (one line on stderr) and the watch goes on; when a hook's
queue is full the event is skipped for that hook and counted.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

__all__ = ["EventSink", "JsonLinesSink", "CommandHook", "WebhookHook"]

Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class EventSink:
    """Interface: ``send(event)`` must return at once; ``close()`` flushes within a deadline."""

    def send(self, event: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class JsonLinesSink(EventSink):
    """One JSON object per line, flushed per event (a file, appended to, or stdout)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: TextIO = sys.stdout if path is None else open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._lock = threading.Lock()

    def send(self, event: dict) -> None:
        line = json.dumps(event, allow_nan=False)
        with self._lock:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            self._file.flush()
            if self.path is not None:
                self._file.close()


class _Worker(EventSink):
    """A bounded queue drained by one thread calling ``deliver(event)``."""

    name = "hook"

    def __init__(self, *, log: Log = _stderr, max_pending: int = 100) -> None:
        self.log = log
        self.skipped = 0
        self.failures = 0
        self.delivered = 0
        self._q: queue.Queue = queue.Queue(maxsize=max_pending)
        self._thread = threading.Thread(target=self._loop, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def send(self, event: dict) -> None:
        try:
            self._q.put_nowait(event)
        except queue.Full:
            self.skipped += 1
            self.log(f"warning: {self.name}: {self._q.maxsize} events pending, skipped a {event.get('event')} event")

    def _loop(self) -> None:
        while True:
            event = self._q.get()
            if event is None:
                return
            try:
                self.deliver(event)
                self.delivered += 1
            except Exception as exc:  # a hook never stops the watch
                self.failures += 1
                self.log(
                    f"warning: {self.name} failed for a {event.get('event')} event of {event.get('camera')}: {exc}"
                )

    def deliver(self, event: dict) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self._q.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)


class CommandHook(_Worker):
    """Runs a shell command per event with the event's JSON on stdin (and VADPIPE_EVENT set)."""

    name = "--on-event"

    def __init__(self, command: str, *, timeout_s: float = 30.0, log: Log = _stderr) -> None:
        self.command = command
        self.timeout_s = timeout_s
        super().__init__(log=log)

    def deliver(self, event: dict) -> None:
        import os

        data = json.dumps(event, allow_nan=False)
        try:
            done = subprocess.run(
                self.command,
                shell=True,
                input=data,
                text=True,
                timeout=self.timeout_s,
                capture_output=True,
                env={**os.environ, "VADPIPE_EVENT": event.get("event", "")},
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"{self.command!r} ran longer than {self.timeout_s:g} s") from None
        if done.returncode != 0:
            tail = (done.stderr or "").strip().splitlines()[-1:] or [""]
            raise RuntimeError(f"{self.command!r} exited with {done.returncode} {tail[0][:200]}".rstrip())


class WebhookHook(_Worker):
    """POSTs each event as JSON; up to ``retries`` more tries (0.5 s, 1 s, 2 s ... apart)."""

    name = "--webhook"

    def __init__(self, url: str, *, retries: int = 3, timeout_s: float = 5.0, log: Log = _stderr) -> None:
        self.url = url
        self.retries = retries
        self.timeout_s = timeout_s
        super().__init__(log=log)

    def deliver(self, event: dict) -> None:
        data = json.dumps(event, allow_nan=False).encode()
        delay = 0.5
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(
                self.url,
                data=data,
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "vadpipe-watch"},
            )
            try:
                with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                    if 200 <= response.status < 300:
                        return
                    error = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                error = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                error = str(getattr(exc, "reason", exc))
            if attempt < self.retries:
                time.sleep(delay)
                delay *= 2
        raise RuntimeError(f"POST {self.url}: {error} after {self.retries + 1} tries")
