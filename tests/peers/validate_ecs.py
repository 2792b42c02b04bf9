"""Validate ECS documents (one JSON object per line on stdin) against ECS's field
definitions (ecs_flat.yml, given as argv[1]): every field must exist in ECS (custom data
lives under `vigil.*` and `labels.*`), and event.kind / category / type / outcome must be
allowed values, each type among those expected for the category."""
import json
import sys

import yaml

flat = yaml.safe_load(open(sys.argv[1]))
allowed = {k: {v["name"] for v in flat[k].get("allowed_values", [])} for k in ("event.kind", "event.category", "event.type", "event.outcome")}
expected = {v["name"]: set(v.get("expected_event_types", [])) for v in flat["event.category"]["allowed_values"]}


def leaves(value, prefix=""):
    if isinstance(value, dict):
        for k, v in value.items():
            yield from leaves(v, f"{prefix}.{k}" if prefix else k)
    elif isinstance(value, list) and value and isinstance(value[0], dict):
        for item in value:
            yield from leaves(item, prefix)
    else:
        yield prefix, value


problems = 0
n = 0
for n, line in enumerate(sys.stdin, 1):
    doc = json.loads(line)
    for path, value in leaves(doc):
        if path.startswith(("vigil.", "labels.")) or path == "tags":
            continue
        if path not in flat:
            problems += 1
            print(f"record {n}: `{path}` is not an ECS field")
    event = doc.get("event", {})
    for key in ("kind", "category", "type", "outcome"):
        values = event.get(key)
        for v in values if isinstance(values, list) else ([values] if values is not None else []):
            if v not in allowed[f"event.{key}"]:
                problems += 1
                print(f"record {n}: event.{key} `{v}` is not an allowed value")
    for category in event.get("category", []):
        bad = set(event.get("type", [])) - expected.get(category, set())
        if expected.get(category) and bad:
            problems += 1
            print(f"record {n}: event.type {sorted(bad)} not expected for category `{category}` ({sorted(expected[category])})")
print(f"{n} record(s), {problems} problem(s)")
sys.exit(1 if problems else 0)
