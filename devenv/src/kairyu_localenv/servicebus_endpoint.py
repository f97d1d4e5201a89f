"""A local Azure Service Bus endpoint, for the real `azure-servicebus` SDK without cloud or Docker.

Nothing of Azure runs here, so this speaks the part of Service Bus's AMQP 1.0 protocol that the SDK
(7.15, its pure-Python AMQP stack) uses, through the development-emulator connection string
(`UseDevelopmentEmulator=true`: plain AMQP on the given port, SASL ANONYMOUS, then SAS tokens over
CBS). It serves queues and topics with correlation-filter subscriptions, peek-lock and
receive-and-delete, sessions, complete / abandon / defer / dead-letter with dead-letter sub-queues,
lock renewal and expiry, the max delivery count, scheduled messages, duplicate detection and
time-to-live (`servicebus_entities` has the rules, `servicebus_broker` the wire).

Not served: entity management (the administration client's HTTP API; entities come from the
constructor or `--entities`), rule management over AMQP, `get-message-sessions`, transactions,
auto-forwarding, partitioned entities, JWT (Entra ID) tokens, TLS, and message sizes beyond what
one transfer frame sequence carries. The state lives in memory and survives `stop()` / `start()`
of one object; with `state_dir` it is also written there on `stop()` and read back by a new
object, so a restarted process keeps its messages (a killed one loses what changed since).
`servicebus_process.ServiceBusProcess` runs it as a child process (`make dev`, and tests that
restart the broker under a client).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from proton.reactor import ApplicationEvent, Container, EventInjector

from kairyu_localenv.processes import free_port
from kairyu_localenv.servicebus_broker import Broker
from kairyu_localenv.servicebus_entities import EntitySpec, Namespace, specs_from_json

_log = logging.getLogger(__name__)
_STATE_FILE = "servicebus-state.json"
_START_TIMEOUT_S = 10.0


class LocalServiceBus:
    """A Service Bus namespace on `host:port`, served from a background thread."""

    def __init__(
        self,
        entities: Iterable[EntitySpec],
        *,
        keys: Mapping[str, str],
        host: str = "127.0.0.1",
        port: int = 0,
        state_dir: Path | None = None,
    ) -> None:
        self.namespace = Namespace(entities)
        self.keys = dict(keys)
        self.host = host
        self.port = port or free_port()
        self.state_dir = state_dir
        if state_dir is not None and (state_dir / _STATE_FILE).exists():
            self.namespace.restore(json.loads((state_dir / _STATE_FILE).read_text()))
        self._thread: threading.Thread | None = None
        self.crash: Exception | None = None
        """The error that ended the endpoint's loop, if one did."""
        self._injector: EventInjector | None = None

    def connection_string(self, key_name: str) -> str:
        return connection_string_of(self.host, self.port, key_name, self.keys[key_name])

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()
        broker = Broker(
            namespace=self.namespace,
            keys=self.keys,
            host=self.host,
            port=self.port,
            on_ready=ready.set,
        )
        container = Container(broker)
        self._injector = EventInjector()
        container.selectable(self._injector)
        self.crash = None

        def run() -> None:
            # proton lets a handler's exception end its loop: the endpoint would go quiet and the
            # SDK time out. Log it and keep it, so `stop()` (a test's teardown) raises it.
            try:
                container.run()
            except Exception as exc:  # noqa: BLE001 - any handler error ends the loop alike
                _log.exception("the local Service Bus endpoint stopped on an error")
                self.crash = exc

        self._thread = threading.Thread(target=run, name=f"servicebus-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(_START_TIMEOUT_S):
            msg = f"the Service Bus endpoint did not start listening on port {self.port}"
            raise RuntimeError(msg)
        _log.info("local Service Bus listening on %s:%d", self.host, self.port)

    def stop(self) -> None:
        if self._thread is None or self._injector is None:
            return
        self._injector.trigger(ApplicationEvent("shutdown"))
        self._thread.join(_START_TIMEOUT_S)
        self._injector.close()
        self._thread = self._injector = None
        if self.crash is not None:
            raise RuntimeError("the local Service Bus endpoint had stopped") from self.crash
        if self.state_dir is not None:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            (self.state_dir / _STATE_FILE).write_text(json.dumps(self.namespace.snapshot()))

    def __enter__(self) -> LocalServiceBus:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def connection_string_of(host: str, port: int, key_name: str, key: str) -> str:
    """The development-emulator connection string the SDK takes for this endpoint."""
    return (
        f"Endpoint=sb://{host}:{port};SharedAccessKeyName={key_name};"
        f"SharedAccessKey={key};UseDevelopmentEmulator=true"
    )


def main() -> None:
    """`python -m kairyu_localenv.servicebus_endpoint`: serve until SIGTERM or Ctrl-C."""
    parser = argparse.ArgumentParser(description="local Azure Service Bus endpoint (AMQP)")
    parser.add_argument("--port", type=int, default=5672)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--entities", type=Path, required=True, help="JSON: queues and topics")
    parser.add_argument(
        "--key", action="append", default=[], help="NAME=KEY a SAS key (repeatable)"
    )
    parser.add_argument(
        "--key-from-env",
        action="append",
        default=[],
        metavar="NAME=VARIABLE",
        help="a SAS key read from an environment variable, out of sight of `ps` (repeatable)",
    )
    parser.add_argument("--state-dir", type=Path, help="keep messages here across restarts")
    args = parser.parse_args()
    shown = dict(item.split("=", 1) for item in args.key)
    hidden = {name: os.environ[var] for name, var in (i.split("=", 1) for i in args.key_from_env)}
    keys = {**shown, **hidden} or {"RootManageSharedAccessKey": "local"}
    specs = specs_from_json(json.loads(args.entities.read_text()))
    logging.basicConfig(level=logging.INFO)
    bus = LocalServiceBus(
        specs, keys=keys, host=args.host, port=args.port, state_dir=args.state_dir
    )
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with bus, contextlib.suppress(KeyboardInterrupt):
        for name in keys:
            if name in hidden:
                _log.info("key %s: from the environment", name)
            else:
                _log.info("connection string: %s", bus.connection_string(name))
        done.wait()


if __name__ == "__main__":
    main()
