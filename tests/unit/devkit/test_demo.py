import argparse
import tomllib
from pathlib import Path

from devkit.demo import REPO, demo_config, dump_toml
from devkit.pki import TlsFiles

from agent.config.schema import parse_config


def test_demo_config_is_the_documented_default_with_its_overrides(tmp_path):
    args = argparse.Namespace(speed=4.0, window=10.0)
    tls = TlsFiles(Path("/x/ca.crt"), Path("/x/v.crt"), Path("/x/v.key"))
    document = demo_config(args, 1234, tls, tmp_path)
    text = dump_toml(document)
    assert tomllib.loads(text) == document
    config = parse_config(text, tmp_path / "demo.toml")
    with (REPO / "config.toml").open("rb") as handle:
        default = tomllib.load(handle)
    assert config.uplink.port == 1234 and config.batch.window == 10.0
    assert config.sources[0].speed == 4.0 and config.sources[0].path == REPO / "dbc/drive.log.gz"
    assert len(config.sampling.signals) == len(default["sampling"]["signals"])
    assert config.spool.max_mb == default["spool"]["max_mb"]
