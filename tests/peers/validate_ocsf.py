"""Validate OCSF events (one JSON object per line on stdin) against the OCSF JSON Schema of
their class, as published by the `ocsf-json-schema` package. Exits 1 on the first problem
of each record, naming the record and the failing path."""
import json
import sys

import jsonschema
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

version = sys.argv[1] if len(sys.argv) > 1 else "1.5.0"
schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version=version))
failed = 0
n = 0
for n, line in enumerate(sys.stdin, 1):
    doc = json.loads(line)
    name = schema.lookup_class_name_from_uid(doc["class_uid"])
    class_schema = schema.get_class_schema(name, doc.get("metadata", {}).get("profiles", []))
    errors = sorted(jsonschema.Draft202012Validator(class_schema).iter_errors(doc), key=lambda e: list(e.path))
    for e in errors:
        failed += 1
        print(f"record {n} ({name}): {'/'.join(map(str, e.path)) or '<root>'}: {e.message}")
print(f"{n} record(s), {failed} problem(s)")
sys.exit(1 if failed else 0)
