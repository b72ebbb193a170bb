"""Reading an OCI image layout (the benchmark image) from the bench scripts."""
import json
import os


def blob(layout, digest):
    """The path of a blob of the layout."""
    algo, hexd = digest.split(":", 1)
    return os.path.join(layout, "blobs", algo, hexd)


def manifest(layout, tag):
    """The descriptor the tag names in index.json, and the manifest it points to."""
    with open(os.path.join(layout, "index.json")) as f:
        index = json.load(f)
    desc = next(m for m in index["manifests"]
                if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    with open(blob(layout, desc["digest"])) as f:
        return desc, json.load(f)
