"""Shared fixtures: throwaway PKI, real Mosquitto brokers and a real gpsd (gpsfake)."""

from __future__ import annotations

import pytest
from devkit.broker import MosquittoBroker
from devkit.pki import make_dev_pki

from tests.helpers.gps_fixtures import DATA
from tests.helpers.gpsfake import GpsFake
from tests.helpers.support import require_mosquitto


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--long", action="store_true",
                     help="run the long variants (e.g. 200+ SIGKILLs in the kill test)")


@pytest.fixture(scope="session")
def dev_pki(tmp_path_factory):
    return make_dev_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mosquitto(tmp_path_factory, dev_pki):
    """A broker with mutual TLS on a free loopback port; persistent sessions survive
    `restart()`/`stop()`+`start()`."""
    require_mosquitto()
    with MosquittoBroker(tmp_path_factory.mktemp("broker"), dev_pki, persistence=True) as broker:
        yield broker


@pytest.fixture
def plain_mosquitto(tmp_path_factory):
    require_mosquitto()
    with MosquittoBroker(tmp_path_factory.mktemp("broker"), None) as broker:
        yield broker


@pytest.fixture
def looping_gpsd():
    """gpsd on a free port cycling the drive_with_stop NMEA log (a 3D fix, moving then
    stopped) for as long as the test runs."""
    with GpsFake(DATA / "drive_with_stop.nmea", once=False) as gpsd:
        yield gpsd
