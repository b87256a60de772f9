"""`python -m tests.cluster COMMAND`: build, run and feed the local single-node cluster.

build                      compile and cache Kubernetes v1.20.2 (warm cache: no work)
up [--crds DIR]            start it (idempotent); CRDs go in before the controller-manager
down                       stop it; no process, mount, cgroup, bridge or netns left
status                     JSON: components, pids, RSS, ports, build and up timings
kubeconfig                 print the admin kubeconfig path
kubectl ARGS...            the version-matched kubectl against the cluster
image-build --rootfs DIR --tag NAME:TAG [...]   OCI image from a directory, imported
image-busybox --tag NAME:TAG                    tiny busybox test image, imported
image-import TARBALL                            import an OCI/Docker archive
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tests.cluster import build, config, images, localkube, paths


def _cmd_build(args: argparse.Namespace) -> int:
    seconds = build.build(force=args.force, keep_tree=args.keep_tree)
    if seconds:
        print(json.dumps(seconds, indent=2))
    else:
        print("binaries already built (warm cache): " + str(paths.bin_dir()), file=sys.stderr)
    return 0


def _cmd_up(args: argparse.Namespace) -> int:
    cluster = localkube.up(crds_dir=args.crds)
    print(cluster.kubeconfig)
    return 0


def _cmd_down(_: argparse.Namespace) -> int:
    stopped = localkube.down()
    print("stopped: " + (", ".join(stopped) if stopped else "nothing was running"))
    return 0


def _cmd_status(_: argparse.Namespace) -> int:
    st = localkube.status()
    print(json.dumps(st, indent=2))
    return 0 if st["up"] else 1


def _cmd_kubeconfig(_: argparse.Namespace) -> int:
    print(paths.kubeconfig_path())
    return 0 if paths.kubeconfig_path().exists() else 1


def _cmd_kubectl(args: argparse.Namespace) -> int:
    argv = [str(localkube.kubectl_path()), "--kubeconfig", str(paths.kubeconfig_path())]
    return subprocess.run([*argv, *args.args], check=False).returncode


def _import(tarball: Path) -> None:
    """Import into the running node; without a cluster just say where the tarball is."""
    lay = config.default_layout()
    if "containerd" not in localkube.running_components(lay):
        print(f"cluster not up; image kept at {tarball}", file=sys.stderr)
        return
    images.import_tarball(tarball, lay.containerd_sock)


def _cmd_image_import(args: argparse.Namespace) -> int:
    lay = config.default_layout()
    if "containerd" not in localkube.running_components(lay):
        print("cluster not up: run `python -m tests.cluster up` first", file=sys.stderr)
        return 1
    sys.stdout.write(images.import_tarball(Path(args.tarball), lay.containerd_sock))
    return 0


def _cmd_image_build(args: argparse.Namespace) -> int:
    out = images.build_oci(
        Path(args.rootfs),
        args.tag,
        Path(args.output) if args.output else None,
        entrypoint=args.entrypoint or (),
        cmd=args.cmd or (),
        env=args.env or (),
        user=args.user,
        workdir=args.workdir,
    )
    if not args.no_import:
        _import(out)
    print(out)
    return 0


def _cmd_image_busybox(args: argparse.Namespace) -> int:
    out = images.build_busybox(args.tag)
    _import(out)
    print(out)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tests.cluster",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build and cache the Kubernetes binaries")
    b.add_argument("--force", action="store_true", help="rebuild even if cached")
    b.add_argument("--keep-tree", action="store_true", help="keep the Go build tree")
    b.set_defaults(fn=_cmd_build)
    u = sub.add_parser("up", help="start the cluster (idempotent)")
    u.add_argument("--crds", help="directory of CRD yaml to apply before the controllers")
    u.set_defaults(fn=_cmd_up)
    sub.add_parser("down", help="stop the cluster and remove its traces").set_defaults(fn=_cmd_down)
    sub.add_parser("status", help="components, RSS, ports (exit 1 if down)").set_defaults(
        fn=_cmd_status
    )
    sub.add_parser("kubeconfig", help="print the admin kubeconfig path").set_defaults(
        fn=_cmd_kubeconfig
    )
    k = sub.add_parser("kubectl", help="run kubectl v1.20.2 against the cluster")
    k.add_argument("args", nargs=argparse.REMAINDER)
    k.set_defaults(fn=_cmd_kubectl)
    ii = sub.add_parser("image-import", help="import an OCI/Docker image tarball")
    ii.add_argument("tarball")
    ii.set_defaults(fn=_cmd_image_import)
    ib = sub.add_parser("image-build", help="build an OCI image from a rootfs directory")
    ib.add_argument("--rootfs", required=True)
    ib.add_argument("--tag", required=True, help="e.g. snowtrain/trainer:dev")
    ib.add_argument("--entrypoint", action="append", help="repeat for each argv element")
    ib.add_argument("--cmd", action="append", help="repeat for each argv element")
    ib.add_argument("--env", action="append", help="K=V, repeatable")
    ib.add_argument("--user")
    ib.add_argument("--workdir")
    ib.add_argument("--output", help="tarball path (default: the image cache dir)")
    ib.add_argument("--no-import", action="store_true", help="only write the tarball")
    ib.set_defaults(fn=_cmd_image_build)
    bb = sub.add_parser("image-busybox", help="build the busybox test image and import it")
    bb.add_argument("--tag", default="snowtrain/busybox:test")
    bb.set_defaults(fn=_cmd_image_busybox)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    return int(args.fn(args) or 0)
