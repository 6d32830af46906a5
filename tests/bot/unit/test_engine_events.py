"""bot/engine/events.py: each wire event becomes one typed event, once."""
import base64

import pytest

from bot.engine.events import Final, FinalState, Notice, Preview, Progress, Queued, Shutdown, Started, parse_event


@pytest.mark.parametrize(("raw", "expected"), [
    ({"type": "status", "state": "queued", "position": 3, "eta_s": 12.5}, Queued(3, 12.5)),
    ({"type": "position", "position": 1, "job_id": "j", "seq": 4}, Queued(1, None)),
    ({"type": "status", "state": "running", "device": "cuda:0"}, Started("cuda:0")),
    ({"type": "started", "device": "cpu", "queue_wait_s": 0.1}, Started("cpu")),
    ({"type": "progress", "iteration": 30, "total": 120, "scale": 2, "num_scales": 3, "width": 256, "height": 171,
      "eta_s": 40.0}, Progress(30, 120, 2, 3, 256, 171, 40.0)),
    ({"type": "notice", "code": "size_capped", "message": "Size reduced."}, Notice("size_capped", "Size reduced.")),
    ({"type": "shutdown", "state": "running"}, Shutdown()),
    ({"type": "done", "run_s": 9.5, "error": None}, Final(FinalState.DONE, None, None, 9.5)),
    ({"type": "failed", "error": {"code": "out_of_memory", "message": "Too big."}},
     Final(FinalState.FAILED, "out_of_memory", "Too big.", None)),
    ({"type": "ping"}, None),
    ({"type": "something_new"}, None),
    ({"type": "status", "state": "done"}, None),  # the final event follows it
])
def test_wire_events_become_typed_events(raw, expected):
    assert parse_event(raw) == expected


def test_previews_are_decoded_and_garbage_is_dropped():
    assert parse_event({"type": "preview", "data": base64.b64encode(b"\x89PNG").decode()}) == Preview(b"\x89PNG")
    assert parse_event({"type": "preview", "data": "not base64!"}) is None
    assert parse_event({"type": "preview"}) is None


def test_progress_fraction_and_bad_numbers():
    assert Progress(30, 120).fraction == 0.25
    assert Progress(5, 0).fraction == 1.0  # a zero total from a confused engine is not a division by zero
    event = parse_event({"type": "progress", "iteration": "x", "total": None})
    assert event == Progress(0, 1)
