#!/usr/bin/env python3
"""Reads the language catalog (languages/catalog.toml) for the shell scripts.

    catalog.py CATALOG images              the image names, one per line
    catalog.py CATALOG image NAME          shell assignments describing image NAME
    catalog.py CATALOG files NAME ROOT     writes image NAME's extra files under ROOT

The image's DEFINITION is a digest of everything its build reads from the catalog, plus the
builder's own revision: an image whose label carries the same digest is not rebuilt.
"""

import hashlib
import json
import os
import shlex
import sys
import tomllib

# Bump when the way an image is built changes, so that every image is rebuilt once.
BUILDER_REVISION = "trixie-2"


def load(path):
    with open(path, "rb") as f:
        return tomllib.load(f)


def image(catalog, name):
    images = catalog.get("images", {})
    if name not in images:
        sys.exit(f"unknown image {name!r}: the catalog has {', '.join(images)}")
    return images[name]


def definition(name, spec):
    canonical = json.dumps({"name": name, "spec": spec, "builder": BUILDER_REVISION}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    catalog = load(argv[1])
    command = argv[2]
    if command == "images":
        for name in catalog.get("images", {}):
            print(name)
    elif command == "image" and len(argv) == 4:
        name = argv[3]
        spec = image(catalog, name)
        users = [l["id"] for l in catalog.get("languages", []) if l.get("image") == name]
        print(f"TAG={shlex.quote('voidrunner/' + name + ':' + spec['version'])}")
        print(f"PACKAGES={shlex.quote(','.join(spec.get('packages', [])))}")
        print(f"CHECK={shlex.quote(spec['check'])}")
        print(f"EXPECT={shlex.quote(spec['expect'])}")
        print(f"ENVS=({' '.join(shlex.quote(e) for e in spec.get('env', []))})")
        print(f"SETUP={shlex.quote(spec.get('setup', ''))}")
        print(f"LANGUAGES={shlex.quote(' '.join(users))}")
        print(f"DEFINITION={definition(name, spec)}")
    elif command == "files" and len(argv) == 5:
        spec = image(catalog, argv[3])
        root = argv[4]
        for path, content in spec.get("files", {}).items():
            target = os.path.join(root, path.lstrip("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "w") as f:
                f.write(content)
            os.chmod(target, 0o644)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
