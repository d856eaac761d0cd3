"""The CLI tour (docs/cli.md, moved there from the README) matches the parser: every command
and flag it shows exists, and every command is shown. The README's quick start is checked too."""

import argparse
import re
import unittest

from tests.helpers import REPO
from tftransfer import cli

TOUR = REPO / "docs" / "cli.md"
README = REPO / "README.md"


def tour_commands(text: str, heading: str = "## A tour of the CLI") -> list[list[str]]:
    """The ``python main.py ...`` lines of the first ``bash`` block after ``heading``,
    continuations joined and comments dropped, as token lists starting with the command name."""
    tour = text[text.index(heading):]
    block = re.search(r"```bash\n(.*?)```", tour, re.S).group(1)
    joined = re.sub(r"\\\n", " ", block)
    commands = []
    for line in joined.splitlines():
        line = line.split("#", 1)[0]
        if line.strip().startswith("python main.py"):
            commands.append(line.replace("[", " ").replace("]", " ").split()[2:])
    return commands


def _subcommands() -> dict:
    parser = cli.build_parser()
    return next(action for action in parser._actions
                if isinstance(action, argparse._SubParsersAction)).choices


def unknown_commands_and_flags(commands: list[list[str]]) -> list[str]:
    """The commands, and the ``command --flag``s, of ``commands`` that the parser lacks."""
    parsers = _subcommands()
    unknown = []
    for tokens in commands:
        name, flags = tokens[0], [t.split("=")[0] for t in tokens[1:] if t.startswith("--")]
        if name not in parsers:
            unknown.append(name)
            continue
        known = {option for action in parsers[name]._actions
                 for option in action.option_strings}
        unknown += [f"{name} {flag}" for flag in flags if flag not in known]
    return unknown


class ReadmeTourTest(unittest.TestCase):

    def test_every_flag_of_the_tour_exists(self):
        commands = tour_commands(TOUR.read_text())
        self.assertGreater(len(commands), 15)
        self.assertEqual(unknown_commands_and_flags(commands), [])

    def test_every_command_is_in_the_tour(self):
        shown = {tokens[0] for tokens in tour_commands(TOUR.read_text())}
        self.assertEqual(sorted(set(_subcommands()) - shown), [])

    def test_every_flag_of_the_readme_quick_start_exists(self):
        commands = tour_commands(README.read_text(), "## Quick start")
        self.assertGreater(len(commands), 3)
        self.assertEqual(unknown_commands_and_flags(commands), [])

    def test_the_parser_finds_flags_in_brackets_and_continuations(self):
        text = ("## A tour of the CLI\n```bash\n# python main.py nope --x\n"
                "python main.py transfer --target a \\\n    --epochs 3 [--out d]  # --not\n```\n")
        self.assertEqual(tour_commands(text),
                         [["transfer", "--target", "a", "--epochs", "3", "--out", "d"]])


if __name__ == "__main__":
    unittest.main()
