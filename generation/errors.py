from __future__ import annotations

from dataclasses import dataclass

from config.errors import Invalid, NotFound


@dataclass(frozen=True)
class LineProblem:
    line: int
    problem: str


class InvalidFile(Invalid):
    """A file with bad lines: every one is listed, and nothing from the file was stored. Line 0 is the
    file as a whole (empty, not UTF-8, an unknown format): said as FILE: problem, not FILE:0."""

    code = "invalid_file"

    def __init__(self, *, name: str, problems: list[LineProblem]) -> None:
        self.name = name
        self.problems = problems
        context = {"problems": [{"line": p.line, "problem": p.problem} for p in problems]}
        if len(problems) == 1 and problems[0].line == 0:  # the file as a whole (empty, not UTF-8, ...)
            super().__init__(f"{name}: {problems[0].problem}; nothing imported", **context)
            return
        lines = "\n".join(f"{name}:{p.line}: {p.problem}" for p in problems)
        noun = "line" if len(problems) == 1 else "lines"
        super().__init__(f"{name}: {len(problems)} bad {noun}, nothing imported\n{lines}", **context)


class PolicyNotFound(NotFound):
    code = "policy_not_found"
