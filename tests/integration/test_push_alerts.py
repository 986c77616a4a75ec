"""The push SLO alert rules, checked and unit-tested with Debian's promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
RULES = Path(__file__).parents[2] / "helm/system-info-collector/files/push-slo-rules.yaml"
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not Path(PROMTOOL).exists():
        pytest.skip("promtool is not installed (.ci/bootstrap.sh installs prometheus)")
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60)


def expected(alert: str, value: str, **labels: str) -> dict[str, object]:
    """The alert as promtool reports it: labels, and annotations rendered from the rule file."""
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    rule = next(r for r in rules if r.get("alert") == alert)
    annotations = {}
    for key, text in rule["annotations"].items():
        text = text.replace("{{ $value | humanizePercentage }}", value)
        for name, label in labels.items():
            text = text.replace(f"{{{{ $labels.{name} }}}}", label)
        annotations[key] = text
    return {"exp_labels": {**rule["labels"], **labels}, "exp_annotations": annotations}


def test_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr


def test_alerts_fire_on_slow_and_incomplete_delivery_and_stay_quiet_otherwise(
    tmp_path: Path,
) -> None:
    slow = 'sic_sink_delivery_latency_seconds_bucket{instance="a",sink="remote_write",le="5.0"}'
    count = 'sic_sink_delivery_latency_seconds_count{instance="a",sink="remote_write"}'
    ok_bucket = 'sic_sink_delivery_latency_seconds_bucket{instance="b",sink="otlp",le="5.0"}'
    ok_count = 'sic_sink_delivery_latency_seconds_count{instance="b",sink="otlp"}'
    a = {"instance": "a", "sink": "remote_write"}
    tests = {
        "rule_files": [str(RULES)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # instance a: 100 records a minute, 2 of them later than 5 s (98 %)
                    {"series": slow, "values": "0+98x60"},
                    {"series": count, "values": "0+100x60"},
                    # instance b: every record within 5 s
                    {"series": ok_bucket, "values": "0+100x60"},
                    {"series": ok_count, "values": "0+100x60"},
                    {
                        "series": 'sic_sink_completeness_ratio{instance="a",sink="remote_write"}',
                        "values": "1x5 0.4x55",
                    },
                    {
                        "series": 'sic_sink_completeness_ratio{instance="b",sink="otlp"}',
                        "values": "1x60",
                    },
                    {
                        "series": (
                            'sic_sink_samples_refused_total{instance="a",sink="remote_write"}'
                        ),
                        "values": "0x30 12x30",
                    },
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "50m",
                        "alertname": "SicPushDeliveryTooSlow",
                        "exp_alerts": [expected("SicPushDeliveryTooSlow", "98%", **a)],
                    },
                    {"eval_time": "10m", "alertname": "SicPushIncomplete", "exp_alerts": []},
                    {
                        "eval_time": "20m",
                        "alertname": "SicPushIncomplete",
                        "exp_alerts": [expected("SicPushIncomplete", "40%", **a)],
                    },
                    {
                        "eval_time": "25m",
                        "alertname": "SicPushNotDelivering",
                        "exp_alerts": [expected("SicPushNotDelivering", "40%", **a)],
                    },
                    {"eval_time": "20m", "alertname": "SicPushSamplesRefused", "exp_alerts": []},
                    {
                        "eval_time": "35m",
                        "alertname": "SicPushSamplesRefused",
                        "exp_alerts": [expected("SicPushSamplesRefused", "", **a)],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "push-slo-test.yaml"
    path.write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
