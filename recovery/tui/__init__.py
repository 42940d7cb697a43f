"""The clone wizard: a Textual app that drives both machines from one screen."""
