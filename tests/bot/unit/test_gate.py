"""The gate's pure parts, and the rule that makes it unavoidable: only bot/gate.py creates jobs."""
from __future__ import annotations

import ast
from pathlib import Path

from bot.gate import channel_refusal
from bot.jobs import GuildConfig

BOT = Path(__file__).resolve().parents[3] / "bot"


def test_an_empty_allow_list_allows_every_channel():
    assert channel_refusal(GuildConfig(), 123) is None


def test_the_allow_list_refuses_other_channels_naming_the_allowed_ones():
    config = GuildConfig(allowed_channels=(10, 20))
    assert channel_refusal(config, 20) is None
    assert channel_refusal(config, 30) == "I only stylize in <#10>, <#20> on this server."


def _job_creating_calls(tree: ast.AST) -> list[str]:
    """Calls that register, journal or run a new job: `….scheduler.admit(`, `….add_job(`, `….runner.spawn(`."""
    found = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        attr, owner = node.func.attr, node.func.value
        owner_name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        if attr == "add_job" or (attr, owner_name) in {("admit", "scheduler"), ("spawn", "runner")}:
            found.append(f"line {node.lineno}: {owner_name}.{attr}")
    return found


def test_only_the_gate_creates_jobs():
    """A new entry point (a cog, a button) must go through Gate.create_job, which needs the gate's Admission."""
    offenders = {}
    for path in sorted(BOT.rglob("*.py")):
        if path.name == "gate.py" and path.parent == BOT:
            continue
        calls = _job_creating_calls(ast.parse(path.read_text(encoding="utf-8")))
        if calls:
            offenders[str(path.relative_to(BOT))] = calls
    assert offenders == {}
    gate_calls = _job_creating_calls(ast.parse((BOT / "gate.py").read_text(encoding="utf-8")))
    assert len(gate_calls) == 3, gate_calls  # the check above would pass vacuously if the names changed
