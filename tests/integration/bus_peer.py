"""A second process on the bus, for tests that need two: `publish` or `consume-and-hang`.

Prints one JSON line per fact the test waits for.
"""

import asyncio
import json
import sys

from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from kairyu_core import tracing
from kairyu_core.bus import Bus, Consumer, ConsumerSpec, Delivery, StreamSpec
from kairyu_core.events import Event, Subjects, WorkspaceObserved, WorkspaceRef


def say(**fact: object) -> None:
    sys.stdout.write(json.dumps(fact) + "\n")
    sys.stdout.flush()


async def main(mode: str, url: str, stream: str, prefix: str) -> None:
    exporter = InMemorySpanExporter()
    tracing.configure("bus-peer", processors=[SimpleSpanProcessor(exporter)])
    spec = StreamSpec(name=stream, subjects=Subjects(prefix=prefix))
    bus = await Bus.connect(url, name=f"peer-{mode}", stream=spec)
    if mode == "publish":
        ref = WorkspaceRef(
            namespace="ns", name="ws", uid="uid-peer", generation=1, resource_version="1"
        )
        await bus.publish(WorkspaceObserved(workspace=ref))
        (span,) = exporter.get_finished_spans()
        say(
            trace_id=f"{span.context.trace_id:032x}",
            span_id=f"{span.context.span_id:016x}",
            name=span.name,
        )
        await bus.close()
        return

    async def hang(event: Event, delivery: Delivery) -> None:
        say(handling=event.workspace.uid, delivered=delivery.num_delivered)
        await asyncio.Event().wait()

    durable = sys.argv[5]
    consumer = Consumer(
        bus,
        ConsumerSpec(durable=durable, filter_subjects=(spec.subjects.all_events,), ack_wait_s=2.0),
        service="peer",
        events={WorkspaceObserved.event_name: WorkspaceObserved},
        handler=hang,
    )
    await consumer.run()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
