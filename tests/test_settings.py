"""Unit tests of queue-setting checks and the wording of their errors."""

from __future__ import annotations

import pytest

from conveyor.errors import ValidationError
from conveyor.settings import build_settings, format_seconds


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (1, "1 second"),
        (0.5, "0.5 seconds"),
        (30, "30 seconds"),
        (3600, "1 hour"),
        (7200, "2 hours"),
        (86_400, "1 day"),
        (365 * 86_400, "365 days"),
    ],
)
def test_format_seconds_units(seconds, text):
    assert format_seconds(seconds) == text


def test_int_range_has_separators():
    with pytest.raises(ValidationError) as caught:
        build_settings({"max_in_flight": 0})
    assert "use a value from 1 to 1,000,000" in str(caught.value)


def test_duration_range_singular():
    with pytest.raises(ValidationError) as caught:
        build_settings({"visibility_timeout_s": 0})
    assert "use a value from 0.1 seconds to 12 hours" in str(caught.value)
