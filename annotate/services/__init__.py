"""Annotate's writes, one module per area (HackSoft/Zulip style):

- ``campaigns``: create, edit, pause/close campaigns and manage their members.
- ``imports``: preference pairs and hand-written comparisons from outside.
- ``queue``: serving the next comparison under a lease, and skipping it.
- ``judgments``: recording a verdict (the one helper every judgment goes through) and changing it.
- ``pairing``: a policy's answers to prompts, paired into comparisons.
- ``simulation``: scripted annotators judging like people are served.
"""
