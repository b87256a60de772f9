"""``python -m tests.images [operator] [trainer] [--import]``: build (cached) and import."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tests.cluster import config, localkube
from tests.cluster import images as oci
from tests.images.build import build_and_time
from tests.images.spec import IMAGES


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.images", description=__doc__)
    p.add_argument("images", nargs="*", help=f"any of {sorted(IMAGES)} (default: all)")
    p.add_argument("--import", dest="do_import", action="store_true", help="into the cluster")
    args = p.parse_args(argv)
    lay = config.default_layout()
    if args.do_import and "containerd" not in localkube.running_components(lay):
        p.error("cluster not up: run `python -m tests.cluster up` first")
    for name in args.images or list(IMAGES):
        if name not in IMAGES:
            p.error(f"unknown image {name!r}; choose from {sorted(IMAGES)}")
        result = build_and_time(IMAGES[name])
        if args.do_import:
            start = time.monotonic()
            oci.import_tarball(Path(str(result["tarball"])), lay.containerd_sock)
            result["importSeconds"] = round(time.monotonic() - start, 1)
        print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
