"""A generation backend that answers from a script (the real backends are tested in
tests/generation/test_backends.py)."""

from generation.backends import Completion


class ScriptedBackend:
    name = "scripted"

    def __init__(self, answers, fail_on_call=None):
        self.answers, self.calls, self.fail_on_call = answers, 0, fail_on_call

    def close(self):
        pass

    def generate(self, prompts, sampling, on_tokens=None):
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise RuntimeError("GPU fell off the bus")
        return [
            [Completion(text, 3, "stop", -float(i + 1)) for i, text in enumerate(self.answers(p))]
            for p in prompts
        ]
