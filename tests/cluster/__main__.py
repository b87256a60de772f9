"""Command line: `python -m tests.cluster build|up|down|status|kubeconfig|image-...`."""

from tests.cluster.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
