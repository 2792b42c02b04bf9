"""Validates Vigil config files against the JSON Schema `vigil config schema` prints.

usage: validate_config.py SCHEMA.json CONFIG.toml...

Prints one line per file (`ok PATH` or `invalid PATH: <where>: <why>` for each error) and
exits 1 when any file is invalid. The check is jsonschema's Draft 2020-12 validator, the
reference implementation, so the schema is read as an editor or a CI linter would read it.
"""
import json
import sys
import tomllib

from jsonschema import Draft202012Validator


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        schema = json.load(f)
    Draft202012Validator.check_schema(schema)
    validator = Draft202012Validator(schema)
    failed = False
    for path in sys.argv[2:]:
        with open(path, "rb") as f:
            config = tomllib.load(f)
        errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
        if not errors:
            print(f"ok {path}")
            continue
        failed = True
        for e in errors:
            where = ".".join(str(p) for p in e.absolute_path) or "(top)"
            print(f"invalid {path}: {where}: {e.message[:300]}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
