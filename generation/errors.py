from __future__ import annotations

from dataclasses import dataclass

from config.errors import Invalid, NotFound


@dataclass(frozen=True)
class LineProblem:
    line: int
    problem: str


class InvalidFile(Invalid):
    """A file with bad lines: every one is listed, and nothing from the file was stored."""

    code = "invalid_file"

    def __init__(self, *, name: str, problems: list[LineProblem]) -> None:
        self.name = name
        self.problems = problems
        lines = "\n".join(f"{name}:{p.line}: {p.problem}" for p in problems)
        noun = "line" if len(problems) == 1 else "lines"
        super().__init__(
            f"{name}: {len(problems)} bad {noun}, nothing imported\n{lines}",
            problems=[{"line": p.line, "problem": p.problem} for p in problems],
        )


class PolicyNotFound(NotFound):
    code = "policy_not_found"
