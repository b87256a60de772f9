"""Generate the chart's CRD templates from manifests/ so the two can never drift.

manifests/crds is generated from the API models (``python -m snowtrain.api.crd``); this script
wraps each CRD into ``templates/crds/*.yaml``: rendered only when
``crds.install`` is true, and annotated ``helm.sh/resource-policy: keep`` so ``helm uninstall``
never deletes the CRDs (which would delete every job in the cluster with them).
Helm's own ``crds/`` folder is not used: Helm never upgrades those and cannot template them.

    python charts/snowtrain/hack/sync_crds.py          # write
    python charts/snowtrain/hack/sync_crds.py --check  # exit 1 when out of date (tests, CI)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1]
ROOT = CHART.parents[1]
SOURCES = (ROOT / "manifests/crds",)
OUT = CHART / "templates/crds"
KEEP = {"helm.sh/resource-policy": "keep"}


def _crds() -> list[tuple[Path, dict]]:
    found = []
    for source in SOURCES:
        files = sorted(source.glob("*.yaml")) if source.is_dir() else [source]
        for path in files:
            for doc in yaml.safe_load_all(path.read_text()):
                if doc and doc.get("kind") == "CustomResourceDefinition":
                    found.append((path, doc))
    return found


def render() -> dict[str, str]:
    """Template file name -> content for every CRD."""
    out = {}
    for source, crd in _crds():
        meta = crd["metadata"]
        meta["annotations"] = {**meta.get("annotations", {}), **KEEP}
        body = yaml.safe_dump(crd, sort_keys=False, width=100)
        if "{{" in body:
            raise ValueError(f"{meta['name']}: '{{{{' would be read as a Helm template")
        rel = source.relative_to(ROOT)
        out[f"{meta['name']}.yaml"] = (
            f"{{{{- /* Generated from {rel} by hack/sync_crds.py: do not edit. */ -}}}}\n"
            "{{- if .Values.crds.install }}\n"
            f"{body}"
            "{{- end }}\n"
        )
    return out


def sync(check: bool = False) -> list[Path]:
    """Write the templates (or only compare, with ``check``); return the stale/extra files."""
    wanted = render()
    stale = [p for p in OUT.glob("*.yaml") if p.name not in wanted]
    for name, text in wanted.items():
        path = OUT / name
        if not path.exists() or path.read_text() != text:
            stale.append(path)
    if not check:
        OUT.mkdir(parents=True, exist_ok=True)
        for path in stale:
            if path.name in wanted:
                path.write_text(wanted[path.name])
            else:
                path.unlink()
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the chart is stale")
    args = parser.parse_args(argv)
    stale = sync(check=args.check)
    for path in stale:
        print(f"{'out of date' if args.check else 'updated'}: {path.relative_to(ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
