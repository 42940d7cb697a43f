"""The wizard, driven by Pilot, inside a network namespace (run by test_wizard_agent_netns.py).

``netns_wizard.py SOURCE CODE LOGDIR``: wait for the agent on the cable,
type its code, copy SOURCE onto the agent's first disk, then start another
clone (back to the direction step) and quit. Prints one JSON line with what
happened.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from recovery.engine.peer.cable import role
from recovery.link.discovery import available_links
from recovery.link.sysfs import Sysfs
from recovery.tui.app import WizardApp
from recovery.tui.config import WizardConfig
from recovery.tui.screens.home import HomeScreen
from recovery.tui.screens.pair import PairScreen
from recovery.tui.screens.results import SummaryScreen
from recovery.tui.screens.steps import DirectionScreen, DiskScreen, OptionsScreen, ReviewScreen


async def until(pilot, condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(
                json.dumps(
                    {
                        "ok": False,
                        "stuck": what,
                        "screen": type(pilot.app.screen).__name__,
                        "status": pilot.app.state.status,
                    }
                )
            )
        await pilot.pause(0.1)


async def drive(source: str, code: str, logs: str) -> dict[str, object]:
    app = WizardApp(
        WizardConfig(hostname="wizard-host", disks=(source,), listen=None, cable=True, log_dir=Path(logs), timeout=10)
    )
    out: dict[str, object] = {"role": role(Sysfs(), available_links(Sysfs()))}
    async with app.run_test(size=(80, 24)) as pilot:
        await until(
            pilot,
            lambda: isinstance(app.screen, HomeScreen) and any(s.drivable for s in app.state.seen),
            60,
            "the agent on the cable",
        )
        await pilot.press("c", *code, "enter")
        await until(pilot, lambda: isinstance(app.screen, PairScreen), 30, "the pairing")
        assert app.state.link is not None
        out["link"] = app.state.link.conn.kind
        out["peer"] = app.state.link.theirs.host.hostname
        for screen, keys in (
            (PairScreen, ["enter"]),
            (DirectionScreen, ["home", "enter"]),
            (DiskScreen, ["enter"]),
            (DiskScreen, ["enter"]),
            (OptionsScreen, ["enter"]),
        ):
            await until(pilot, lambda s=screen: isinstance(app.screen, s), 30, screen.__name__)
            await pilot.press(*keys)
            await pilot.pause(0.2)
        await until(pilot, lambda: isinstance(app.screen, ReviewScreen), 30, "the review")
        assert isinstance(app.screen, ReviewScreen)
        await pilot.press(*app.screen.word, "enter")
        await until(pilot, lambda: isinstance(app.screen, SummaryScreen), 120, "the summary")
        assert isinstance(app.screen, SummaryScreen) and app.screen.job.summary is not None
        out["verified"] = app.screen.job.summary.verified
        await pilot.press("enter")  # another clone
        await until(pilot, lambda: isinstance(app.screen, DirectionScreen), 30, "another clone")
        await pilot.press("ctrl+q")
    out["ok"] = True
    return out


if __name__ == "__main__":
    print(json.dumps(asyncio.run(drive(*sys.argv[1:4]))), flush=True)
