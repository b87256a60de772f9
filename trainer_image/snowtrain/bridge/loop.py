"""One bridge pass after another: answer new requests, then bring RUNS up to date.

Each pass is idempotent (see ``requests.py`` and ``runs.py``), so the bridge needs no state
of its own: a restarted bridge reads what it needs from Snowflake and the API server. A pass
that fails (Snowflake or the API server away) is logged and the next one tries again; one
bad request row is refused with its reason and never stops the others.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from snowtrain.api.batch import BatchPrediction
from snowtrain.api.identifiers import quote_table
from snowtrain.api.kinds import GROUP, JOB_KINDS, VERSION
from snowtrain.api.trainer_config import ConfigFileError
from snowtrain.trainer.data.connection import LazyConnection, execute
from snowtrain.trainer.data.credentials import load_credentials
from snowtrain.trainer.redact import setup_logging

from . import runs
from .config import BridgeConfig
from .requests import REQUEST_COLUMNS, REQUEST_LABEL, Refused, Request, build_job

log = logging.getLogger("snowtrain.bridge")

#: The kinds with a row each in RUNS: what trains or predicts (a TrainingSchedule's runs are
#: FineTuneJobs or PretrainJobs, so they are there too).
RUN_KINDS = (*JOB_KINDS.values(), BatchPrediction)

ACCEPTED, REFUSED = "ACCEPTED", "REFUSED"


class Bridge:
    """The request table and the RUNS table of one namespace."""

    def __init__(self, cfg: BridgeConfig, api: client.ApiClient, conn: LazyConnection) -> None:
        self.cfg = cfg
        self.custom = client.CustomObjectsApi(api)
        self.conn = conn
        self._written: dict[str, str] = {}
        """uid -> hash of the RUNS row last written (unchanged rows are not written again)."""
        self._requests = quote_table(cfg.request_table)

    def _sql(self, sql: str, params: tuple[Any, ...] = (), *, what: str, **kw: Any) -> Any:
        return execute(
            self.conn.cursor,
            sql,
            params,
            retries=self.cfg.snowflake.retries,
            what=what,
            secrets=self.conn.secrets(),
            on_retry=self.conn.drop,
            num_statements=1,
            **kw,
        )

    # -- requests -----------------------------------------------------------------------------

    def answer_requests(self) -> int:
        """Turn every unanswered request into a job or a refusal; return how many."""
        cols = ", ".join(f'"{c}"' for c in REQUEST_COLUMNS)
        cur = self._sql(
            f'SELECT {cols} FROM {self._requests} WHERE "STATUS" IS NULL '
            'ORDER BY "REQUESTED_AT", "REQUEST_ID"',
            what="read of the request table",
        )
        rows = cur.fetchall()
        for row in rows:
            request = Request.of_row(row)
            try:
                name = self._create(request)
            except Refused as exc:
                log.info("request %s refused: %s", request.request_id, exc)
                self._answer(request, REFUSED, None, str(exc))
            else:
                log.info("request %s accepted: FineTuneJob %s", request.request_id, name)
                self._answer(request, ACCEPTED, name, f"FineTuneJob {self.cfg.namespace}/{name}")
        return len(rows)

    def _create(self, request: Request) -> str:
        """Create the request's job (or find it, made by an earlier pass); return its name."""
        job = build_job(request, self.cfg.template, self.cfg.namespace)
        name = job["metadata"]["name"]
        ns = self.cfg.namespace
        try:
            self.custom.create_namespaced_custom_object(GROUP, VERSION, ns, "finetunejobs", job)
            return str(name)
        except ApiException as exc:
            if exc.status == 409:
                existing = self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, ns, "finetunejobs", name
                )
                labels = (existing.get("metadata") or {}).get("labels") or {}
                if labels.get(REQUEST_LABEL) == request.request_id:
                    return str(name)  # an earlier pass created it and died before answering
                raise Refused(
                    f"MODEL_NAME: a FineTuneJob named {name} exists already; choose another name"
                ) from None
            if exc.status in (400, 403, 422):  # the webhook's or the API server's refusal
                raise Refused(_api_message(exc)) from None
            raise

    def _answer(self, request: Request, status: str, job: str | None, message: str) -> None:
        self._sql(
            f'UPDATE {self._requests} SET "STATUS" = ?, "JOB_NAME" = ?, "MESSAGE" = ?, '
            '"ANSWERED_AT" = CURRENT_TIMESTAMP() WHERE "REQUEST_ID" = ? AND "STATUS" IS NULL',
            (status, job, message[:16000], request.request_id),
            what="answer in the request table",
        )

    # -- runs ---------------------------------------------------------------------------------

    def sync_runs(self) -> int:
        """Write the RUNS rows that changed; mark deleted resources; return rows written."""
        ns = self.cfg.namespace
        bodies = []
        for cls in RUN_KINDS:
            listed = self.custom.list_namespaced_custom_object(GROUP, VERSION, ns, cls.PLURAL)
            bodies += [{**item, "kind": cls.KIND} for item in listed.get("items") or []]
        written = 0
        present = set()
        for body in bodies:
            row = runs.run_row(body)
            uid = row["UID"]
            present.add(uid)
            digest = hashlib.sha256(json.dumps(row, sort_keys=True).encode()).hexdigest()
            if self._written.get(uid) == digest:
                continue
            self._sql(
                runs.upsert_sql(self.cfg.runs_table),
                runs.row_params(row),
                what="write of the RUNS table",
            )
            self._written[uid] = digest
            written += 1
        cur = self._sql(
            runs.live_uids_sql(self.cfg.runs_table), (ns,), what="read of the RUNS table"
        )
        for (uid,) in cur.fetchall():
            if uid not in present:
                self._sql(
                    runs.mark_deleted_sql(self.cfg.runs_table), (uid,), what="RUNS deletion mark"
                )
                self._written.pop(uid, None)
                log.info("run %s is gone from the cluster; its RUNS row stays", uid)
        return written

    def tick(self) -> None:
        """One pass: requests first (a new job's row then appears in this pass's sync)."""
        self.answer_requests()
        self.sync_runs()


def _api_message(exc: ApiException) -> str:
    """The reason the API server (or the webhook) gave, without the HTTP envelope."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    return str(body.get("message") or exc.reason or f"HTTP {exc.status}")[:4000]


def run_forever(bridge: Bridge, poll_seconds: float, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            bridge.tick()
        except Exception as exc:  # logged; the next pass tries again
            log.error("bridge pass failed: %s: %s", type(exc).__name__, exc)
            bridge.conn.drop()
        stop.wait(poll_seconds)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m snowtrain.bridge")
    parser.add_argument("--config", required=True, help="bridge config (JSON or YAML)")
    parser.add_argument("--once", action="store_true", help="one pass, then exit")
    args = parser.parse_args(argv)
    redactor = setup_logging()
    try:
        cfg = BridgeConfig.load(args.config)
    except (ConfigFileError, OSError) as exc:
        print(f"invalid bridge config: {exc}", file=sys.stderr)
        return 64
    credentials = load_credentials(cfg.snowflake)
    redactor.add(credentials.secret_values())
    try:
        config.load_incluster_config()
        api = client.ApiClient()
    except config.ConfigException:
        api = config.new_client_from_config()
    bridge = Bridge(cfg, api, LazyConnection(cfg.snowflake, credentials))
    if args.once:
        bridge.tick()
        return 0
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    log.info(
        "answering %s and keeping %s for namespace %s every %.0f s",
        cfg.request_table, cfg.runs_table, cfg.namespace, cfg.poll_seconds,
    )  # fmt: skip
    run_forever(bridge, cfg.poll_seconds, stop)
    return 0
