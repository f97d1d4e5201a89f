"""The rollout trace's context survives as an annotation."""

from opentelemetry import trace

from kairyu_watcher import rollout_trace


def test_rollout_context_round_trips_through_the_annotation() -> None:
    value = rollout_trace.start_rollout(namespace="ns", name="ws", generation=3, uid="u")
    annotations = {rollout_trace.ANNOTATION: value}
    assert rollout_trace.stored_generation(annotations) == 3
    ctx = rollout_trace.context_of(annotations)
    assert ctx is not None
    span = trace.get_current_span(ctx).get_span_context()
    assert span.is_valid
    assert f"-{span.trace_id:032x}-{span.span_id:016x}-" in value


def test_missing_or_foreign_annotations_mean_no_trace_yet() -> None:
    assert rollout_trace.stored_generation(None) is None
    assert rollout_trace.stored_generation({rollout_trace.ANNOTATION: "junk"}) is None
    assert rollout_trace.context_of({}) is None
