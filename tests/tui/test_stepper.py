"""The stepper sees only the little of the app that :class:`~recovery.tui.stepper.Wizard` names:
a plain object stands in for the app here, and no Textual app runs."""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from typing import TypeVar

from textual.notifications import SeverityLevel
from textual.screen import Screen

from recovery.engine.peer.jobs import JobEnded
from recovery.tui import stepper
from recovery.tui.screens.results import ErrorScreen, SummaryScreen
from recovery.tui.state import WizardState
from recovery.tui.stepper import Stepper
from tests.tui import fakes

Answer = TypeVar("Answer")


class FakeWizard:
    """A :class:`~recovery.tui.stepper.Wizard` that records what the stepper asks of it."""

    def __init__(self, *, demo: bool = False) -> None:
        self.state = WizardState(host=fakes.HERE)
        self.config = fakes.config(demo=demo)
        self.peer_name = fakes.THERE
        self.top: Screen[object] | None = None
        self.asked: list[tuple[str, object]] = []

    def show(self, screen: Screen[None]) -> None:
        self.asked.append(("show", screen))

    def push_screen(self, screen: Screen[Answer], callback: Callable[[Answer | None], None]) -> object:
        self.asked.append(("push", screen))
        return None

    def reset_to_home(self) -> None:
        self.asked.append(("home", None))

    def notify(
        self,
        message: str,
        *,
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        self.asked.append(("notify", message))

    def load_inventory(self, why: str) -> None:
        self.asked.append(("inventory", why))

    def check_demo(self, source: str, target: str) -> None:
        self.asked.append(("demo", (source, target)))

    def rejoin(self, secret: bytes | None) -> None:
        self.asked.append(("rejoin", secret))

    def waiting_line(self) -> str:
        return "waiting to pair again"


def test_the_stepper_does_not_import_the_app() -> None:
    tree = ast.parse(inspect.getsource(stepper))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert "recovery.tui.app" not in imported


def test_without_a_pairing_retry_and_start_over_go_back_to_the_first_screen() -> None:
    wizard = FakeWizard()
    steps = Stepper(wizard)
    wizard.state.job_choice = fakes.choice()
    steps.retry()
    assert wizard.state.retry == fakes.choice()  # retried once paired again
    assert wizard.asked == [("home", None)]
    wizard.asked.clear()
    steps.start_over()
    assert wizard.asked == [("rejoin", None), ("home", None)]


def test_a_clone_that_cannot_resume_by_itself_says_so() -> None:
    wizard = FakeWizard()
    wizard.state.job_choice = fakes.choice()
    Stepper(wizard).auto_resume()  # no lost pairing's secret
    assert wizard.asked == [("notify", "This clone cannot resume by itself: pair again and press r.")]
    assert not wizard.state.auto_resume


def test_a_finished_demo_clone_shows_the_summary_and_asks_for_the_demo_check() -> None:
    wizard = FakeWizard(demo=True)
    wizard.state.job_choice = fakes.choice()
    Stepper(wizard).job_ended(fakes.job(finished=True), JobEnded(ok=True))
    (shown, screen), demo = wizard.asked
    assert shown == "show" and isinstance(screen, SummaryScreen)
    assert demo == ("demo", (fakes.LOCAL[0].path, fakes.PEER[0].path))
    assert wizard.state.last_result.endswith(fakes.job(finished=True).target)


def test_a_failed_clone_without_a_link_says_how_to_pair_again() -> None:
    wizard = FakeWizard()
    wizard.state.job_choice = fakes.choice()
    Stepper(wizard).job_ended(fakes.job(failed=True), JobEnded(ok=False, code="link_lost", message="link lost"))
    [(shown, screen)] = wizard.asked
    assert shown == "show" and isinstance(screen, ErrorScreen) and screen.status == "waiting to pair again"
