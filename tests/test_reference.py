"""The configuration reference (docs/reference.md) is generated from conf/ and the schema: it cannot drift."""

from harness.config import reference
from tests.conftest import ROOT


def test_the_reference_page_is_what_the_config_says():
    page = (ROOT / "docs" / "reference.md").read_text()
    assert page == reference.markdown(), "docs/reference.md is stale: python -m harness.config.reference --out docs/reference.md"


def test_every_group_option_and_knob_is_in_it():
    page = reference.markdown()
    for group in reference.GROUPS:
        for path in (ROOT / "conf" / group).glob("*.yaml"):
            assert f"| `{path.stem}` |" in page, (group, path.stem)
    for key in ("epochs", "init_seed", "study.margin", "study.rounds", "tracking.uri"):
        assert f"| `{key}` |" in page


def test_the_cli_page_is_what_the_commands_print():
    page = (ROOT / "docs" / "cli.md").read_text()
    assert page == reference.cli_markdown(), "docs/cli.md is stale: python -m harness.config.reference --cli docs/cli.md"
    for command, _ in reference.COMMANDS:
        assert f"## `{command}`" in page
