"""README's demo output and commands agree with the demo and the models it documents; the
commands themselves run against a platform in tests/e2e/test_readme.py."""

from __future__ import annotations

import re
from pathlib import Path

from flywheel_examples import breast_cancer
from flywheel_examples.demo import MODEL_PREFIX, STAGES, next_steps
from sklearn.datasets import load_breast_cancer

README = (Path(__file__).parents[2] / "README.md").read_text()
FEATURES = len(load_breast_cancer().feature_names)


def code_blocks(text: str = README) -> list[str]:
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)


def section(title: str) -> str:
    """From a heading to the next heading of any level (code comments start with one #)."""
    start = README.index(f"\n{title}\n") + len(title) + 2
    following = re.search(r"^#{2,} ", README[start:], re.MULTILINE)
    return README[start : start + following.start() if following else None]


def sample_demo_output() -> str:
    [sample] = [block for block in code_blocks() if "✓" in block]
    return sample


def test_the_sample_demo_output_has_every_stage_of_the_demo_in_order() -> None:
    lines = sample_demo_output().splitlines()
    first = re.fullmatch(rf"Flywheel demo: model ({MODEL_PREFIX}-[0-9a-f]{{6}})", lines[0])
    assert first, lines[0]
    stages = [
        match.group(1)
        for line in lines
        if (match := re.fullmatch(r"✓ +\d+\.\ds  (.+?)(?:  .*)?", line))
    ]
    assert stages == list(STAGES)
    assert any(line.startswith("Shift to v2 at 100%: ") for line in lines)
    model = first.group(1)
    assert lines[-len(next_steps(model)) :] == [f"  {c}" for c in next_steps(model)]


def models_named(block: str) -> set[str]:
    patterns = (
        r"--model ([\w.-]+)",
        r"\bmodel=\"([\w.-]+)\"",
        r"flywheel (?:--json )?(?:infer|versions|rollouts|rollback|promote) ([\w.-]+)",
        r"flywheel (?:--json )?retrain (?:runs|trigger) ([\w.-]+)",
        r"\.infer\(\s*\"([\w.-]+)\"",
    )
    return {name for pattern in patterns for name in re.findall(pattern, block)}


def test_the_commands_use_the_model_the_loop_by_hand_trains() -> None:
    by_hand = section("### The loop by hand")
    assert f"flywheel_examples.breast_cancer --model {breast_cancer.MODEL} --promote" in by_hand
    blocks = [b for b in code_blocks() if b != sample_demo_output()]
    named = set().union(*(models_named(block) for block in blocks))
    assert named == {breast_cancer.MODEL}, "README names a model nobody trains"
    assert models_named(section("## The inference gateway")) == {breast_cancer.MODEL}


def test_inputs_have_the_breast_cancer_model_s_feature_count() -> None:
    rows = re.findall(r'\["14"\] \* (\d+)', README)
    shapes = re.findall(r'InferInput\("features", \[1, (\d+)\]', README)
    assert rows
    assert shapes
    assert {int(n) for n in rows + shapes} == {FEATURES}
