"""Validates recorded API responses against the OpenAPI document, as a third-party client
would: each line of stdin is {"method", "path", "status", "body"}; the path is the documented
template. Prints one line per failure, then "checked N".
"""
import json
import sys

from jsonschema import Draft202012Validator


def pointer(*parts):
    return "#/" + "/".join(str(p).replace("~", "~0").replace("/", "~1") for p in parts)


def main():
    with open(sys.argv[1]) as f:
        doc = json.load(f)
    failures = 0
    checked = 0
    for line in sys.stdin:
        record = json.loads(line)
        method, path, status = record["method"].lower(), record["path"], str(record["status"])
        operation = doc["paths"].get(path, {}).get(method)
        if operation is None:
            print(f"FAIL {method.upper()} {path}: not documented")
            failures += 1
            continue
        response = operation["responses"].get(status)
        if response is None:
            print(f"FAIL {method.upper()} {path}: status {status} not documented")
            failures += 1
            continue
        content = response.get("content", {})
        if record["body"] is None:
            if content:
                print(f"FAIL {method.upper()} {path} {status}: documented a body, got none")
                failures += 1
            checked += 1
            continue
        media = content.get("application/json")
        if media is None:
            print(f"FAIL {method.upper()} {path} {status}: got JSON, documented {list(content)}")
            failures += 1
            continue
        ref = pointer("paths", path, method, "responses", status, "content", "application/json", "schema")
        root = dict(doc)
        root["$ref"] = ref
        errors = sorted(Draft202012Validator(root).iter_errors(record["body"]), key=str)
        for error in errors[:3]:
            print(f"FAIL {method.upper()} {path} {status}: {error.message} at {list(error.absolute_path)}")
        failures += bool(errors)
        checked += 1
    print(f"checked {checked} failures {failures}")
    sys.exit(1 if failures else 0)


main()
