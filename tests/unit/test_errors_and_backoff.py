"""The error classifier and the backoff function."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, ValidationError

from mqkit.backoff import backoff_ceiling, full_jitter
from mqkit.errors import (
    AuthorizationError,
    Classifier,
    ConnectionFailed,
    DecodeError,
    ErrorKind,
    HandlerTimeout,
    PermanentError,
    TransientError,
    classify,
)


class Model(BaseModel):
    n: int


def validation_error() -> ValidationError:
    try:
        Model.model_validate({"n": "x"})
    except ValidationError as exc:
        return exc
    raise AssertionError("unreachable")


@pytest.mark.parametrize(
    "exc",
    [ConnectionError(), TimeoutError(), TimeoutError(), ConnectionFailed("x"),
     HandlerTimeout("x"), TransientError("x"), OSError("disk")],
)
def test_connection_errors_and_timeouts_are_transient(exc: BaseException) -> None:
    assert classify(exc) is ErrorKind.TRANSIENT


@pytest.mark.parametrize(
    "exc",
    [validation_error(), DecodeError("x"), PermanentError("x"), AuthorizationError("x"),
     PermissionError("denied"), ValueError("bad"), KeyError("k")],
)
def test_validation_decoding_and_authorization_are_permanent(exc: BaseException) -> None:
    assert classify(exc) is ErrorKind.PERMANENT


def test_unknown_errors_default_to_transient_and_the_default_is_configurable() -> None:
    class Weird(Exception):
        pass

    assert Classifier().classify(Weird()) is ErrorKind.TRANSIENT
    assert Classifier(unknown=ErrorKind.PERMANENT).classify(Weird()) is ErrorKind.PERMANENT


def test_users_extend_the_table_and_their_rules_win() -> None:
    # Given a classifier told that a gateway's ValueError subclass is transient
    class GatewayBusy(ValueError):
        pass

    classifier = Classifier()
    classifier.register(GatewayBusy, ErrorKind.TRANSIENT)
    classifier.add_rule(lambda e: ErrorKind.PERMANENT if "fraud" in str(e) else None)
    # Then the registration overrides the default ValueError -> permanent
    assert classifier.classify(GatewayBusy()) is ErrorKind.TRANSIENT
    assert classifier.classify(ValueError()) is ErrorKind.PERMANENT
    # And a rule decides by content
    assert classifier.classify(ConnectionError("fraud suspected")) is ErrorKind.PERMANENT


def test_backoff_ceiling_grows_exponentially_then_caps() -> None:
    assert [backoff_ceiling(a, base=1, cap=10) for a in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_backoff_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        backoff_ceiling(0, 1, 10)
    with pytest.raises(ValueError):
        backoff_ceiling(1, -1, 10)


@given(
    attempt=st.integers(min_value=1, max_value=10_000),
    base=st.floats(min_value=0, max_value=100),
    cap=st.floats(min_value=0, max_value=10_000),
    r=st.floats(min_value=0, max_value=1, exclude_max=True),
)
def test_full_jitter_stays_within_zero_and_the_ceiling(
    attempt: int, base: float, cap: float, r: float
) -> None:
    delay = full_jitter(attempt, base, cap, rand=lambda: r)
    assert 0 <= delay <= min(cap, backoff_ceiling(attempt, base, cap))


def test_full_jitter_spreads_delays() -> None:
    delays = {round(full_jitter(5, 1.0, 100.0), 6) for _ in range(50)}
    assert len(delays) > 40
