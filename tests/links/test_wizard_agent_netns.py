"""The wizard and `recovery agent --link tbnet` on a thunderbolt-net cable: one lifecycle, both UUID orders.

Two network namespaces joined by a veth pair named like the cable's
interfaces (real thunderbolt-net: bring-up, link-local addresses, the
beacon, TCP). The Thunderbolt bus, which cannot exist here, is a sysfs tree
with each host's UUID and its one peer (tests/links/fakebus.py). The host
with the smaller UUID listens, the other connects; before the lifecycle was
one, the agent always listened, so with the wizard's UUID the smaller one
both sides listened and nothing happened.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import MIB, REPO, Recovery, fill_random, sh
from tests.links.netns import cable

pytestmark = pytest.mark.root
SMALL = "0b7f4a3c-0000-0000-0000-000000000001"
LARGE = "d2c81e55-0000-0000-0000-000000000002"


@pytest.fixture
def images(tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    source, target = tmp_path / "source.img", tmp_path / "target.img"
    fill_random(source, 24 * MIB, seed=9)
    with open(target, "wb") as f:
        f.truncate(24 * MIB)
    yield source, target


@pytest.mark.parametrize("wizard_uuid", [SMALL, LARGE], ids=["wizard-listens", "wizard-connects"])
def test_the_wizard_drives_an_agent_over_thunderbolt_net(
    images: tuple[Path, Path], tmp_path: Path, wizard_uuid: str
) -> None:
    source, target = images
    agent_uuid = LARGE if wizard_uuid == SMALL else SMALL
    with cable() as (a, b):
        agent = Recovery(
            str(tmp_path / "bus-agent"),
            agent_uuid,
            wizard_uuid,
            "--",
            "agent",
            "--link",
            "tbnet",
            "--disk",
            str(target),
            "--name",
            "agent-host",
            "--log-dir",
            str(tmp_path / "agent-logs"),
            "--timeout",
            "10",
            prefix=("ip", "netns", "exec", b),
            module="tests.links.fakebus",
        )
        try:
            code = agent.wait_event("pairing")["code"]  # printed by the agent, typed in the wizard
            wizard = sh(
                "ip",
                "netns",
                "exec",
                a,
                sys.executable,
                "-m",
                "tests.links.fakebus",
                str(tmp_path / "bus-wizard"),
                wizard_uuid,
                agent_uuid,
                "--",
                "--script",
                str(REPO / "tests" / "links" / "netns_wizard.py"),
                str(source),
                code,
                str(tmp_path / "logs"),
                check=False,
                cwd=REPO,
                env={**os.environ, "PYTHONPATH": str(REPO)},
                timeout=240,
            )
            result = json.loads(wizard.stdout.strip().splitlines()[-1]) if wizard.stdout.strip() else {}
            assert result.get("ok"), (wizard.stdout[-2000:], wizard.stderr[-3000:], agent.stderr[-2000:])
            assert result["role"] == ("receive" if wizard_uuid == SMALL else "send")
            assert (result["link"], result["peer"], result["verified"]) == ("tbnet", "agent-host", True)
            assert source.read_bytes() == target.read_bytes()
            # the wizard quit: the agent's session ended with its bye, and it waits again with a new code
            ended = agent.wait_event("phase", name="session", timeout=30)
            assert "wizard-host ended the session: wizard-host's user quit the wizard" in ended["message"]
            renewed = agent.wait_event("pairing", why="a new pairing", timeout=10)
            assert renewed["code"] != code
        finally:
            agent.kill()
