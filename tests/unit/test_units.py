"""units: the one way the command line writes watts, bytes and carbon (the demo's summary and `plan`)."""

from __future__ import annotations

import pytest

from stargate_operator.units import bytes_, carbon, watts


@pytest.mark.parametrize(("n", "digits", "text"), [
    (118_800, 1, "118.8 kW"),  # a GB200 NVL72 rack of the samples
    (247_000, 1, "247.0 kW"),
    (197_600, 1, "197.6 kW"),
    (5_000, 3, "5.000 kW"),  # plan's precision
    (999, 1, "999 W"),
    (0, 1, "0 W"),
    (1_000, 1, "1.0 kW"),
    (12_345_678, 1, "12.3 MW"),
    (2_500_000_000, 2, "2.50 GW"),
    (-3_000, 1, "-3.0 kW"),  # a negative headroom keeps its prefix
    (1_234.5, 1, "1.2 kW"),
])
def test_watts_take_the_largest_prefix_that_fits(n: float, digits: int, text: str) -> None:
    assert watts(n, digits) == text


@pytest.mark.parametrize(("n", "digits", "text"), [
    (192_000_000_000, 1, "192.0 GB"),  # decimal, as data sheets give HBM
    (13_824_000_000_000, 1, "13.8 TB"),
    (33_950_000_000_000, 2, "33.95 TB"),
    (100, 2, "100 B"),
    (5_000, 2, "5.00 kB"),
    (2_000_000, 1, "2.0 MB"),
    (3 * 10**15, 1, "3.0 PB"),
    (4 * 10**18, 1, "4.0 EB"),
])
def test_bytes_in_decimal_units(n: int, digits: int, text: str) -> None:
    assert bytes_(n, digits) == text


@pytest.mark.parametrize("missing", [None, "380000", True, [], {}])
def test_a_missing_figure_is_a_dash(missing: object) -> None:
    assert watts(missing) == bytes_(missing) == carbon(missing) == "-"


def test_carbon_in_kilograms_per_hour() -> None:
    assert carbon(134_300.4) == "134.3 kg CO2e/h"
    assert carbon(33_700_600, 0) == "33,701 kg CO2e/h"
