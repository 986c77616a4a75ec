"""A collector is declared once (its module's ``COLLECTOR``); what is not derived from the
declarations -- the README tables, the Helm values, schema and template -- is checked against
them here, so a new collector cannot be half-added."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from system_info_collector.config import (
    DEFAULT_COLLECTORS,
    KNOWN_COLLECTORS,
    load_settings,
)
from system_info_collector.errors import ConfigError
from system_info_collector.providers import COLLECTORS
from system_info_collector.schema import MEASUREMENTS, RESERVED_TAGS
from tests.unit.test_packaging import CHART, schema, values

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def readme_section(marker: str) -> str:
    match = re.search(rf"<!-- {marker} -->(.*?)<!-- /{marker} -->", README, re.S)
    assert match, f"README.md lacks the <!-- {marker} --> block"
    return match.group(1)


def readme_row(section: str, first_cell: str) -> list[str]:
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if cells and first_cell in cells[0]:
            return cells
    raise AssertionError(f"README.md has no row for {first_cell}")


def test_registry_names_are_the_measurement_names() -> None:
    assert all(name == c.name for name, c in COLLECTORS.items())
    assert tuple(MEASUREMENTS) == KNOWN_COLLECTORS == tuple(COLLECTORS)
    assert set(DEFAULT_COLLECTORS) == {n for n, c in COLLECTORS.items() if not c.optional}


def test_field_names_carry_units_and_counters_end_in_total() -> None:
    for m in MEASUREMENTS.values():
        for f in m.fields:
            suffix = {"percent": "_percent", "bytes": "bytes", "rate": "_per_second"}.get(f.kind)
            assert suffix is None or suffix in f.name, f"{m.name}.{f.name} ({f.kind})"
            if f.kind == "seconds":
                assert "seconds" in f.name, f"{m.name}.{f.name}"
            assert f.sql_type in ("bigint", "double precision"), f"{m.name}.{f.name}"


def test_option_defaults_equal_the_settings_dataclass_defaults() -> None:
    loaded = load_settings({})
    for name, c in COLLECTORS.items():
        declared = c.settings()
        for option in c.options:
            got = getattr(loaded.collector(name), option.attribute)
            want = getattr(declared, option.attribute)
            assert getattr(got, "pattern", got) == getattr(want, "pattern", want), option.variable
            assert option.variable.startswith(f"SIC_{name.upper()}_"), option.variable


def test_every_label_column_is_a_reserved_tag_name() -> None:
    assert {"ts", "host", "tags"} <= RESERVED_TAGS
    for m in MEASUREMENTS.values():
        for column in m.label_columns:
            with pytest.raises(ConfigError, match=f"'{column}' is a column name"):
                load_settings({"SIC_TAGS": f"{column}=x"})


def test_readme_variables_table_documents_every_collector_variable() -> None:
    table = readme_section("variables")
    default = readme_row(table, "`SIC_COLLECTORS`")[1]
    assert default == f"`{','.join(DEFAULT_COLLECTORS)}`"
    intervals = readme_row(table, "`SIC_CPU_INTERVAL`")[0]
    assert re.findall(r"`SIC_(\w+)_INTERVAL`", intervals) == [n.upper() for n in COLLECTORS]
    for c in COLLECTORS.values():
        for option in c.options:
            row = readme_row(table, f"`{option.variable}`")
            assert row[1] == (option.default_doc or f"`{option.default}`".replace("|", "\\|"))


def without_parentheses(text: str) -> str:
    while re.search(r"\([^()]*\)", text):
        text = re.sub(r"\([^()]*\)", "", text)
    return text


def test_readme_measurements_table_lists_every_field() -> None:
    table = readme_section("measurements")
    for m in MEASUREMENTS.values():
        row = readme_row(table, f"`{m.name}`")
        entity, _, labels = without_parentheses(row[1]).partition(";")
        assert re.findall(r"`(\w+)`", entity) == list(m.entity), f"{m.name}: entity labels"
        assert re.findall(r"`(\w+)`", labels) == list(m.labels), f"{m.name}: other labels"
        assert m.entity or entity.strip() == "—", m.name
        fields = re.findall(r"`(\w+)`", without_parentheses(row[2]))
        assert fields == [f.name for f in m.fields], m.name


def test_helm_values_schema_and_template_follow_the_declarations() -> None:
    chart = values()["collectors"]
    props = schema()["properties"]["collectors"]["properties"]
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    assert chart["enabled"] == list(DEFAULT_COLLECTORS)
    assert props["enabled"]["items"]["enum"] == list(COLLECTORS)
    assert list(chart["intervals"]) == list(COLLECTORS)
    assert {n: p["description"] for n, p in props["intervals"]["properties"].items()} == {
        n: f"SIC_{n.upper()}_INTERVAL" for n in COLLECTORS
    }
    interval_names = re.search(r'range \$name := list ((?:"\w+" ?)+)', helpers)
    assert interval_names and interval_names.group(1).split() == [f'"{n}"' for n in COLLECTORS]
    with_options = {n: c for n, c in COLLECTORS.items() if c.options}
    assert set(chart) - {"enabled", "intervals"} == set(with_options)
    for name, c in with_options.items():
        assert list(chart[name]) == [o.helm_key for o in c.options], name
        declared = props[name]["properties"]
        for o in c.options:
            assert declared[o.helm_key]["description"] == o.variable
            assert chart[name][o.helm_key] in ("", o.default), o.variable
            line = f'(list "{o.variable}" $v.collectors.{name}.{o.helm_key})'
            assert line in helpers, f"_helpers.tpl does not set {o.variable}"
