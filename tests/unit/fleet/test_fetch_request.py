"""tools/fetch-request without a broker: the request it writes is one a vehicle accepts."""

from __future__ import annotations

import time

import pytest
from fleet.fetch_request import main

from agent.events.fetch import FetchMemory, check_fetch
from agent.ota.update import Trust
from agent.wire.keys import generate_key_pair, key_id, load_public_key


def test_the_written_request_is_accepted_by_its_vehicle_once(tmp_path):
    generate_key_pair(tmp_path / "backend.key")
    out = tmp_path / "request.cose"
    assert main(["--signing-key", str(tmp_path / "backend.key"), "--vehicle", "car-1",
                 "--signals", "can0.BMS_*", "can0.VCU_Status.*", "--last", "90s",
                 "--max-samples", "100", "--output", str(out)]) == 0
    public = load_public_key(tmp_path / "backend.pub")
    trust = Trust({key_id(public): public}, "car-1", frozenset(), 1 << 20)
    request = check_fetch(out.read_bytes(), trust, FetchMemory(tmp_path))
    assert request.signals == ("can0.BMS_*", "can0.VCU_Status.*")
    assert (request.last_ms, request.max_samples) == (90_000, 100)
    assert 0 < request.expires_at - time.time() <= 300


@pytest.mark.parametrize("args", [
    ["--last", "60s"],                                         # neither --host nor --output
    ["--from-ms", "1", "--output", "x"],                       # --from-ms without --to-ms
    ["--last", "60s", "--host", "broker"],                     # TLS without its files
])
def test_usage_errors_exit_2(tmp_path, args):
    with pytest.raises(SystemExit) as exited:
        main(["--signing-key", "k", "--vehicle", "car-1", "--signals", "x", *args])
    assert exited.value.code == 2
