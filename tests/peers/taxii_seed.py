"""Seed a medallion (TAXII 2.1) memory backend with STIX 2.1 objects built by the OASIS
stix2 library: indicators for an IPv4 address, a domain, a SHA-256 and a CIDR-or-URL, a
malware and a relationship. Usage: taxii_seed.py DIR PORT. Writes DIR/bundle.json,
DIR/seed_data.json and DIR/medallion.json (users admin/Password0, readonly/Password1)."""
import json, os, sys

import stix2

OUT, PORT = sys.argv[1], int(sys.argv[2])
BASE = f"http://127.0.0.1:{PORT}"
T0 = "2026-01-01T00:00:00.000Z"
ident = stix2.Identity(id="identity--f431f809-377b-45e0-aa1c-6a4751cae5ff", name="Peers Test CTI",
                       identity_class="organization", created=T0, modified=T0)
common = dict(created_by_ref=ident.id, created=T0, modified=T0, valid_from=T0, pattern_type="stix",
              indicator_types=["malicious-activity"], confidence=80)
ind_ip = stix2.Indicator(id="indicator--8e2e2d2b-17d4-4cbf-938f-98ee46b3cd3f", name="C2 IPv4",
                         pattern="[ipv4-addr:value = '198.51.100.7']", **common)
ind_dom = stix2.Indicator(id="indicator--d81f86b9-975b-4c0b-875e-810c5ad45a4f", name="Phishing domain",
                          pattern="[domain-name:value = 'evil.example.com']", **common)
ind_hash = stix2.Indicator(id="indicator--c410e480-e42b-47d1-9476-85307c12bcbf", name="Dropper SHA-256",
                           pattern="[file:hashes.'SHA-256' = 'aec070645fe53ee3b3763059376134f058cc337247c978add178b6ccdfb0019f']",
                           **common)
ind_cidr = stix2.Indicator(id="indicator--a932fcc6-e032-476c-826f-cb970a5a1ade", name="Scanner net (CIDR, OR of url)",
                           pattern="[ipv4-addr:value ISSUBSET '203.0.113.0/24'] OR [url:value = 'http://evil.example.com/payload.bin']",
                           **common)
mal = stix2.Malware(id="malware--31b940d4-6f7f-459a-80ea-9c1f17b5891b", name="TestDropper", is_family=False,
                    created_by_ref=ident.id, created=T0, modified=T0)
rel = stix2.Relationship(id="relationship--44298a74-ba52-4f0c-87a3-1824e67d7fad", relationship_type="indicates",
                         source_ref=ind_cidr.id, target_ref=mal.id, created=T0, modified=T0)
objs = [ident, ind_ip, ind_dom, ind_hash, ind_cidr, mal, rel]
bundle = stix2.Bundle(objects=objs, id="bundle--5d0092c5-5f74-4287-9642-33f4c354e56d")
open(os.path.join(OUT, "bundle.json"), "w").write(bundle.serialize(pretty=True))

plain = [json.loads(o.serialize()) for o in objs]
manifest = [{"id": o["id"], "date_added": "2026-01-01T00:00:01.000000Z", "version": o.get("modified", T0),
             "media_type": "application/stix+json;version=2.1"} for o in plain]
data = {
    "/discovery": {"title": "Peers test TAXII server", "description": "medallion memory backend",
                   "contact": "nobody@example.invalid", "default": f"{BASE}/api1/", "api_roots": [f"{BASE}/api1/"]},
    "api1": {
        "information": {"title": "API root 1", "description": "test",
                        "versions": ["application/taxii+json;version=2.1"], "max_content_length": 9765625},
        "status": [],
        "collections": [
            {"id": "91a7b528-80eb-42ed-a74d-c6fbd5a26116", "title": "Indicators (read/write)", "description": "seeded",
             "can_read": True, "can_write": True, "media_types": ["application/stix+json;version=2.1"],
             "objects": plain, "manifest": manifest},
        ],
    },
}
json.dump(data, open(os.path.join(OUT, "seed_data.json"), "w"), indent=2)
json.dump({"backend": {"module": "medallion.backends.memory_backend", "module_class": "MemoryBackend",
                       "filename": os.path.join(OUT, "seed_data.json")},
           "users": {"admin": "Password0", "readonly": "Password1"},
           "taxii": {"max_page_size": 100}}, open(os.path.join(OUT, "medallion.json"), "w"), indent=2)
