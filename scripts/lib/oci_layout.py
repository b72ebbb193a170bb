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


def layer_blobs(layout, tag, gzip_only=False):
    """The paths of the image's layer blobs, lowest first."""
    _, m = manifest(layout, tag)
    out = []
    for layer in m["layers"]:
        if gzip_only and not layer["mediaType"].endswith("tar+gzip"):
            raise SystemExit(f"layer {layer['digest']} is {layer['mediaType']}, not gzip")
        out.append(blob(layout, layer["digest"]))
    return out


if __name__ == "__main__":
    # oci_layout.py layers LAYOUT TAG [--gzip-only]: one layer blob path per line.
    import sys

    if len(sys.argv) < 4 or sys.argv[1] != "layers":
        raise SystemExit("usage: oci_layout.py layers LAYOUT TAG [--gzip-only]")
    for path in layer_blobs(sys.argv[2], sys.argv[3], "--gzip-only" in sys.argv[4:]):
        print(path)
