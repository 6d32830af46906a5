"""bot/backoff.py: the delays double up to the cap, stay within the jitter, and honour Retry-After."""
from bot.backoff import JITTER, Backoff


def test_doubles_to_the_cap_within_the_jitter_and_resets():
    backoff = Backoff(1.0, 5.0)
    nominal = [1.0, 2.0, 4.0, 5.0, 5.0]
    for expected in nominal:
        delay = backoff.next()
        assert expected * (1 - JITTER) <= delay <= expected * (1 + JITTER)
    backoff.reset()
    assert backoff.next() <= 1.0 * (1 + JITTER)


def test_retry_after_lengthens_the_wait_but_never_past_the_cap():
    backoff = Backoff(0.5, 8.0)
    assert 3.0 <= backoff.next(retry_after=3.0) <= 3.0 * (1 + JITTER)
    assert 8.0 <= backoff.next(retry_after=60.0) <= 8.0 * (1 + JITTER)
    # A Retry-After shorter than the current step does not shorten it: the step here is 2 s.
    assert backoff.next(retry_after=0.1) >= 2.0


def test_a_cap_below_the_start_is_raised_to_it():
    assert Backoff(2.0, 1.0).next() >= 2.0 * (1 - JITTER)
