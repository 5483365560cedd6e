"""The README's configuration table is the one generated from the settings class."""

from app.settings_doc import README, render, table


def test_readme_configuration_table_matches_the_settings() -> None:
    text = README.read_text()
    assert render(text) == text, "run: python -m app.settings_doc --write"
    assert "`SEQSERVE_API_KEYS`" in table() and "`SEQSERVE_MAX_TEXT_CHARS` | `20000`" in table()
