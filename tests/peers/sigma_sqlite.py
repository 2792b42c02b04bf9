#!/usr/bin/env python3
"""Sigma through pySigma's SQLite backend, as Zircolite runs it: the reference Vigil's
Sigma engine is compared with (tests/e2e/sigma.rs) and timed against (BENCHMARKS.md).

usage: sigma_sqlite.py --rules DIR [DIR...] --events FILE [FILE...] [--bench]

Events are the evtx_dump JSON documents SigmaHQ ships next to each regression EVTX
(several pretty-printed documents per file), flattened as Zircolite does: the System
fields (`Provider_Name`, `TimeCreated`, `EventRecordID`…) and the event data by name
(spaces removed); or the lines of `vigil hunt --select attributes.windows --format
json` (the same flat map, for EVTX files without a JSON twin). One SQLite row each,
every column `TEXT COLLATE NOCASE`. Each rule's
logsource becomes a `Channel`/`EventID` condition from this file's own table (SigmaHQ's
sysmon and windows-services definitions); rules with another logsource, pySigma cannot
convert, or a deprecated status are skipped and counted. Security 4688 events are left
out: process creation here means Sysmon 1, with Sysmon's field names.

Prints one JSON line per match (`rule`, `file` stem, `record`), then a summary line. With
`--bench`, also the time to load the events and run every query (events per second).
"""

import argparse
import json
import os
import re
import sqlite3
import sys
import time

import yaml
from sigma.backends.sqlite import sqliteBackend
from sigma.collection import SigmaCollection

SYSMON = "Microsoft-Windows-Sysmon/Operational"
CATEGORIES = {
    "process_creation": [1],
    "network_connection": [3],
    "process_termination": [5],
    "driver_load": [6],
    "image_load": [7],
    "create_remote_thread": [8],
    "raw_access_thread": [9],
    "process_access": [10],
    "file_event": [11],
    "registry_set": [13],
    "registry_rename": [14],
    "registry_event": [12, 13, 14],
    "create_stream_hash": [15],
    "pipe_created": [17, 18],
    "wmi_event": [19, 20, 21],
    "dns_query": [22],
    "file_delete": [23, 26],
    "clipboard_capture": [24],
    "process_tampering": [25],
}
POWERSHELL = {"ps_module": 4103, "ps_script": 4104}
SERVICES = {
    "security": "Security",
    "system": "System",
    "application": "Application",
    "sysmon": SYSMON,
    "powershell": "Microsoft-Windows-PowerShell/Operational",
    "powershell-classic": "Windows PowerShell",
    "windefend": "Microsoft-Windows-Windows Defender/Operational",
    "taskscheduler": "Microsoft-Windows-TaskScheduler/Operational",
    "bits-client": "Microsoft-Windows-Bits-Client/Operational",
    "codeintegrity-operational": "Microsoft-Windows-CodeIntegrity/Operational",
    "dns-client": "Microsoft-Windows-DNS Client Events/Operational",
    "firewall-as": "Microsoft-Windows-Windows Firewall With Advanced Security/Firewall",
    "appxdeployment-server": "Microsoft-Windows-AppXDeploymentServer/Operational",
    "wmi": "Microsoft-Windows-WMI-Activity/Operational",
    "ntlm": "Microsoft-Windows-NTLM/Operational",
}


def logsource_sql(logsource):
    """The SQL condition of a logsource, or None when this table does not know it."""
    product, category, service = (logsource.get(k) for k in ("product", "category", "service"))
    if product != "windows":
        return None
    if category and not service:
        if category in CATEGORIES:
            ids = ",".join(str(i) for i in CATEGORIES[category])
            return f"Channel = '{SYSMON}' AND EventID IN ({ids})"
        if category in POWERSHELL:
            return f"Channel = 'Microsoft-Windows-PowerShell/Operational' AND EventID = {POWERSHELL[category]}"
        return None
    if service and not category and service in SERVICES:
        return f"Channel = '{SERVICES[service]}'"
    return None


def documents(path):
    """The JSON documents of a file (concatenated, pretty-printed)."""
    text = open(path, encoding="utf-8").read()
    decoder = json.JSONDecoder()
    at = 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at >= len(text):
            return
        doc, at = decoder.raw_decode(text, at)
        yield doc


def scalar(value):
    if isinstance(value, dict):
        value = value.get("#text")
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def flatten(doc):
    if "attributes.windows" in doc:  # `vigil hunt --select attributes.windows --format json`
        return case_once({k: scalar(v) for k, v in doc["attributes.windows"].items()})
    event = doc.get("Event", doc)
    system = event.get("System", {})
    row = {}
    for key, value in system.items():
        attributes = value.get("#attributes") if isinstance(value, dict) else None
        if attributes:
            for name, v in attributes.items():
                row[f"{key}_{name}" if key in ("Provider",) else name] = scalar(v)
            if key == "TimeCreated":
                row["TimeCreated"] = scalar(attributes.get("SystemTime"))
        else:
            row[key] = scalar(value)
    data = event.get("EventData") or {}
    user = event.get("UserData") or {}
    if isinstance(user, dict):
        for inner in user.values():
            if isinstance(inner, dict):
                data = {**data, **inner}
    if isinstance(data, dict):
        for key, value in data.items():
            if key != "#attributes":
                row[key.replace(" ", "")] = scalar(value)
    return case_once(row)


def case_once(row):
    """SQLite's column names ignore case: the event data's `ProcessId` (the one Sigma rules
    mean) wins over the System's `ProcessID`, which comes first."""
    kept = {}
    for k, v in row.items():
        if v is not None:
            kept = {key: value for key, value in kept.items() if key.lower() != k.lower()}
            kept[k] = v
    return kept


def rules_of(dirs):
    for top in dirs:
        for root, _, names in os.walk(top):
            for name in sorted(names):
                if name.endswith(".yml"):
                    yield os.path.join(root, name)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rules", nargs="+", required=True)
    parser.add_argument("--events", nargs="+", required=True)
    parser.add_argument("--bench", action="store_true")
    args = parser.parse_args()

    started = time.perf_counter()
    backend = sqliteBackend()
    queries = []
    skipped = {"logsource": 0, "conversion": 0, "status": 0}
    for path in rules_of(args.rules):
        try:
            doc = yaml.safe_load(open(path, encoding="utf-8"))
        except yaml.YAMLError:
            skipped["conversion"] += 1
            continue
        if not isinstance(doc, dict) or "detection" not in doc:
            continue
        if doc.get("status") in ("deprecated", "unsupported"):
            skipped["status"] += 1
            continue
        where = logsource_sql(doc.get("logsource") or {})
        if where is None:
            skipped["logsource"] += 1
            continue
        try:
            converted = backend.convert(SigmaCollection.from_yaml(open(path, encoding="utf-8").read()))
        except Exception:  # pySigma refuses the rule: it is not compared
            skipped["conversion"] += 1
            continue
        conditions = [q.split(" WHERE ", 1)[1] for q in converted]
        queries.append((doc["id"], where, conditions))
    converted_at = time.perf_counter()

    db = sqlite3.connect(":memory:")
    db.create_function("regexp", 2, lambda pattern, value: value is not None and re.search(pattern, value) is not None)
    rows = []
    for path in args.events:
        stem = os.path.splitext(os.path.basename(path))[0]
        for doc in documents(path):
            row = flatten(doc)
            if row.get("Channel") == "Security" and row.get("EventID") == "4688":
                continue
            row["_file"] = stem
            rows.append(row)
    loaded = time.perf_counter()
    # Column names ignore case in SQLite: one column per name whatever its case.
    rows = [{k.lower(): v for k, v in r.items()} for r in rows]
    columns = sorted({k for r in rows for k in r})
    db.execute("CREATE TABLE logs (" + ", ".join(f'"{c}" TEXT COLLATE NOCASE' for c in columns) + ")")
    db.executemany(
        "INSERT INTO logs (" + ", ".join(f'"{c}"' for c in columns) + ") VALUES (" + ", ".join("?" for _ in columns) + ")",
        [[r.get(c) for c in columns] for r in rows],
    )
    failed = 0
    matches = 0
    for rule, where, conditions in queries:
        seen = set()
        for condition in conditions:
            result = None
            for _ in range(64):
                try:
                    result = db.execute(f"SELECT _file, EventRecordID FROM logs WHERE ({where}) AND ({condition})").fetchall()
                    break
                except sqlite3.OperationalError as e:
                    # A field no event has is a column no row fills: all NULL.
                    missing = re.match(r"no such column: (.+)", str(e))
                    if not missing:
                        break
                    db.execute(f'ALTER TABLE logs ADD COLUMN "{missing.group(1)}" TEXT COLLATE NOCASE')
            if result is None:
                failed += 1
                break
            for file, record in result:
                if (file, record) not in seen:
                    seen.add((file, record))
                    matches += 1
                    if not args.bench:
                        print(json.dumps({"rule": rule, "file": file, "record": int(record)}))
    done = time.perf_counter()
    summary = {
        "compared": sorted(rule for rule, _, _ in queries),
        "rules_compared": len(queries) - failed,
        "query_failed": failed,
        "skipped": skipped,
        "events": len(rows),
        "matches": matches,
        "convert_seconds": round(converted_at - started, 3),
        "load_and_query_seconds": round(done - loaded, 3),
    }
    if args.bench:
        summary["events_per_second"] = round(len(rows) / max(done - loaded, 1e-9), 1)
    print(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
