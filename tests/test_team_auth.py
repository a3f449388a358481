"""A team's servers that ask who you are (docs/teams.md), each started here on 127.0.0.1:

- `mlflow server --app-name basic-auth` (users and permissions in a SQLite user database; the
  pipeline's credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, or in the URI);
- `prefect server start` with PREFECT_SERVER_API_AUTH_STRING (clients: PREFECT_API_AUTH_STRING);
- a Dask scheduler and worker on `tls://` with certificates of a CA made for the test (clients:
  Dask's own DASK_DISTRIBUTED__COMM__TLS__* settings, which `distributed.Security()` reads).

For each: a caller without the right credentials is refused; `mmpipe run` / `mmpipe sweep` with
them run end to end; and no password, auth string or private key appears in anything the runs
wrote or printed (the run folder, byte for byte; stdout and stderr; MLflow params and tags;
Prefect logs, parameters and artifacts; links). The fast tests at the end check `public_uri`
and the places that use it.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import ipaddress
import json
import os
import re
import secrets
import socket
import ssl
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from servers import (
    MMPIPE,
    free_port,
    mlflow_server,
    prefect_server,
    server_process,
    stop_group,
    venv_command,
    wait_for,
)

from mmcore.uris import public_uri

# As small as the pipeline goes: what is under test is who may talk to the servers.
TINY = ["data.limit=400", "features.image_epochs=1", "features.text_epochs=1",
        "fusion.epochs=2", "training.epochs=2", "testing.robustness=false"]
MODEL = "mmpipe-classifier"
EXPERIMENT = "default"

# MLflow refuses passwords under 12 characters. Each secret is new per test session.
ADMIN = ("admin", f"admin-{secrets.token_hex(8)}")
ALICE = ("alice", f"alice-{secrets.token_hex(8)}")  # runs the pipeline: creates what it logs to
BOB = ("bob", f"bob-{secrets.token_hex(8)}")  # granted READ on the experiment and the model
PREFECT_AUTH = f"team:{secrets.token_hex(12)}"


def basic(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def forbidden_bytes(tls_key: Path | None = None) -> dict[str, bytes]:
    """Every secret, as written and as an HTTP Basic header would carry it; the body of the
    Dask client's private key."""
    found = {}
    for user, password in (ADMIN, ALICE, BOB):
        found[f"{user}'s password"] = password.encode()
        found[f"{user}'s Basic header"] = basic(user, password).encode()
    found["Prefect auth string"] = PREFECT_AUTH.encode()
    found["Prefect auth string's password"] = PREFECT_AUTH.split(":", 1)[1].encode()
    found["Prefect Basic header"] = base64.b64encode(PREFECT_AUTH.encode())
    if tls_key is not None:
        body = [line for line in tls_key.read_text().splitlines() if "-----" not in line]
        found["Dask private key"] = body[0].encode()
    return found


def leaks(data: bytes, forbidden: dict[str, bytes]) -> list[str]:
    return [name for name, secret in forbidden.items() if secret in data]


# ---- the servers ------------------------------------------------------------------------------

def make_tls(folder: Path, name: str) -> dict[str, Path]:
    """A CA and one certificate and key it signed, for 127.0.0.1 and localhost, usable as a
    server's and a client's (Dask checks that the peer's certificate is the CA's; one pair for
    scheduler, worker and client keeps the test short: docs/teams.md gives each its own)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def subject(common_name: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])

    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=1))
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(subject(f"{name} CA"))
          .issuer_name(subject(f"{name} CA")).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(valid[0]).not_valid_after(valid[1])
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(subject(f"{name} dask"))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0]).not_valid_after(valid[1])
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                  ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    folder.mkdir(parents=True, exist_ok=True)
    files = {"ca": folder / f"{name}-ca.pem", "cert": folder / f"{name}-cert.pem",
             "key": folder / f"{name}-key.pem"}
    files["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files["cert"].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files["key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    files["key"].chmod(0o600)
    return files


def dask_client_env(tls: dict[str, Path]) -> dict[str, str]:
    """What a teammate sets to reach the TLS cluster: Dask's own configuration."""
    return {"DASK_DISTRIBUTED__COMM__REQUIRE_ENCRYPTION": "true",
            "DASK_DISTRIBUTED__COMM__TLS__CA_FILE": str(tls["ca"]),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__CERT": str(tls["cert"]),
            "DASK_DISTRIBUTED__COMM__TLS__CLIENT__KEY": str(tls["key"])}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the tests' Prefect, MLflow and Dask settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("PREFECT_", "MLFLOW_", "MMPIPE_", "PYTEST_", "DASK_"))}
    env.update(DO_NOT_TRACK="true", MLFLOW_DISABLE_TELEMETRY="true",
               PREFECT_SERVER_ANALYTICS_ENABLED="false", PYTHONUNBUFFERED="1", **extra)
    return env


@contextlib.contextmanager
def tls_dask_cluster(folder: Path, tls: dict[str, Path], worker_env: dict[str, str]):
    """`dask scheduler` on tls:// (its HTTP /health on another port) and one single-threaded
    `dask worker`, both with the CA's certificate; yields the scheduler's address once the
    worker joined it."""
    from distributed import Client, Security

    folder.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    flags = ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]),
             "--tls-key", str(tls["key"])]
    address = f"tls://127.0.0.1:{port}"
    scheduler = [venv_command("dask"), "scheduler", "--protocol", "tls", "--host", "127.0.0.1",
                 "--port", str(port), "--dashboard-address", f"127.0.0.1:{http_port}", *flags]
    worker = [venv_command("dask"), "worker", address, "--nworkers", "1", "--nthreads", "1",
              "--host", "127.0.0.1", "--no-dashboard", *flags]
    with server_process(scheduler, f"http://127.0.0.1:{http_port}/health",
                        folder / "scheduler.log", clean_env()):
        with open(folder / "worker.log", "wb") as log:
            process = subprocess.Popen(worker, stdout=log, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, start_new_session=True,
                                       env=worker_env, cwd=folder)
        try:
            security = Security(require_encryption=True, tls_ca_file=str(tls["ca"]),
                                tls_client_cert=str(tls["cert"]),
                                tls_client_key=str(tls["key"]))
            with Client(address, security=security, timeout=60) as client:
                client.wait_for_workers(1, timeout=180)
            yield address
        finally:
            stop_group(process)


@contextlib.contextmanager
def all_started(**managers):
    """Enter the context managers side by side (the servers' start-ups overlap: each takes
    10-30 s on loaded cores), yield their values by name; exit the ones that started."""
    with contextlib.ExitStack() as stack:
        with ThreadPoolExecutor(len(managers)) as pool:
            futures = {name: pool.submit(m.__enter__) for name, m in managers.items()}
        values, failed = {}, []
        for name, future in futures.items():
            try:
                values[name] = future.result()
            except BaseException as exc:  # noqa: BLE001 -- raised below, after the rest stop
                failed.append(exc)
            else:
                stack.push(managers[name].__exit__)
        if failed:
            raise failed[0]
        yield values


class Team:
    """The three servers and what a teammate sets to use them."""

    def __init__(self, root: Path, mlflow_url: str, prefect_url: str, dask_address: str,
                 tls: dict[str, Path], rogue: dict[str, Path]):
        self.root, self.mlflow_url, self.prefect_url = root, mlflow_url, prefect_url
        self.dask_address, self.tls, self.rogue = dask_address, tls, rogue
        self.run_dir = root / "run"
        self.outputs: dict[str, subprocess.CompletedProcess] = {}

    def env(self, **extra: str) -> dict[str, str]:
        """A teammate's environment: every server's address and credentials."""
        return clean_env(**{**mlflow_env(self.mlflow_url),
                            "PREFECT_API_URL": self.prefect_url,
                            "PREFECT_API_AUTH_STRING": PREFECT_AUTH,
                            **dask_client_env(self.tls), **extra})

    def mmpipe(self, name: str, *args: str, env: dict[str, str] | None = None,
               ) -> subprocess.CompletedProcess:
        """`mmpipe` in a subprocess on the shared run folder; its output kept under `name`."""
        done = subprocess.run([MMPIPE, *args, "--set", f"run_dir={self.run_dir}",
                               *[f"--set={o}" for o in TINY]],
                              env=env or self.env(), capture_output=True, timeout=600,
                              cwd=self.root)
        self.outputs[name] = done
        assert done.returncode == 0, (f"mmpipe {' '.join(args)} failed:\n"
                                      f"{done.stdout.decode()}\n{done.stderr.decode()}")
        return done

    def prefect(self, auth: str | None = PREFECT_AUTH) -> httpx.Client:
        """Prefect's REST API with an auth string (None: anonymous)."""
        headers = {"Authorization": f"Basic {base64.b64encode(auth.encode()).decode()}"} \
            if auth else {}
        return httpx.Client(base_url=self.prefect_url, headers=headers, timeout=30)


def mlflow_env(url: str, who: tuple[str, str] = ALICE) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": url, "MLFLOW_TRACKING_USERNAME": who[0],
            "MLFLOW_TRACKING_PASSWORD": who[1]}


@contextlib.contextmanager
def as_user(team: Team, who: tuple[str, str]):
    """An MlflowClient of `who`: credentials in the environment, as a teammate has them."""
    from mlflow import MlflowClient

    with pytest.MonkeyPatch.context() as env:
        env.setenv("MLFLOW_TRACKING_USERNAME", who[0])
        env.setenv("MLFLOW_TRACKING_PASSWORD", who[1])
        yield MlflowClient(team.mlflow_url)


@pytest.fixture(scope="module")
def team(tmp_path_factory, mlflow_db_template):
    """The MLflow server with basic auth (admin, and users alice and bob), the Prefect server
    with an auth string and the TLS Dask cluster, started side by side."""
    import shutil

    from mlflow.server import get_app_client

    root = tmp_path_factory.mktemp("team")
    tls, rogue = make_tls(root / "tls", "team"), make_tls(root / "tls", "rogue")
    mlflow_root, mlflow_port = root / "mlflow-server", free_port()
    mlflow_url = f"http://127.0.0.1:{mlflow_port}"
    mlflow_root.mkdir()
    shutil.copy(mlflow_db_template, mlflow_root / "server.db")  # migrated: starts sooner
    # Nobody may do anything they were not granted; the admin password is read once, when the
    # user database is created (docs/teams.md).
    auth_ini = mlflow_root / "basic_auth.ini"
    auth_ini.write_text("[mlflow]\n"
                        "default_permission = NO_PERMISSIONS\n"
                        f"database_uri = sqlite:///{mlflow_root / 'users.db'}\n"
                        f"admin_username = {ADMIN[0]}\n"
                        f"admin_password = {ADMIN[1]}\n"
                        "authorization_function = "
                        "mlflow.server.auth:authenticate_request_basic_auth\n"
                        # Without it every request hashes the password (scrypt): ~2 s each on
                        # loaded cores, 300 s for a pipeline run, instead of once a minute.
                        "auth_cache_ttl_seconds = 60\n")
    auth_ini.chmod(0o600)
    # The worker's environment, as on a teammate's cluster: cells log to MLflow from the
    # worker (environment variables do not travel with a task; Prefect's settings do).
    worker_env = clean_env(**mlflow_env(mlflow_url))
    with all_started(
            mlflow=mlflow_server(mlflow_root, auth_config=auth_ini, port=mlflow_port),
            prefect=prefect_server(root / "prefect-server",
                                   PREFECT_SERVER_API_AUTH_STRING=PREFECT_AUTH),
            dask=tls_dask_cluster(root / "dask", tls, worker_env)) as started:
        team = Team(root, mlflow_url, started["prefect"], started["dask"], tls, rogue)
        with as_user(team, ADMIN):
            users = get_app_client("basic-auth", tracking_uri=mlflow_url)
            for name, password in (ALICE, BOB):
                users.create_user(name, password)
        yield team


@pytest.fixture(scope="module")
def team_run(team) -> subprocess.CompletedProcess:
    """`mmpipe run` as alice, against the MLflow and Prefect servers that ask who she is."""
    return team.mmpipe("run", "run")


@pytest.fixture(scope="module")
def reader(team, team_run) -> str:
    """bob, granted READ on the pipeline's experiment and registered model by the admin;
    the experiment's id."""
    from mlflow.server import get_app_client

    with as_user(team, ADMIN) as admin:
        experiment = admin.get_experiment_by_name(EXPERIMENT).experiment_id
        users = get_app_client("basic-auth", tracking_uri=team.mlflow_url)
        users.grant_user_permission(BOB[0], "experiment", experiment, "READ")
        users.grant_user_permission(BOB[0], "registered_model", MODEL, "READ")
    return experiment


@pytest.fixture(scope="module")
def uri_run(team, team_run) -> subprocess.CompletedProcess:
    """`mmpipe run` again (stages cached) with alice's credentials in the tracking URI
    instead of the environment: MLflow's client sends them as HTTP Basic auth."""
    user, password = ALICE
    host = team.mlflow_url.removeprefix("http://")
    env = team.env(MLFLOW_TRACKING_URI=f"http://{user}:{password}@{host}")
    del env["MLFLOW_TRACKING_USERNAME"], env["MLFLOW_TRACKING_PASSWORD"]
    return team.mmpipe("uri-run", "run", env=env)


@pytest.fixture(scope="module")
def tls_sweep(team, team_run) -> subprocess.CompletedProcess:
    """A one-cell sweep on the TLS cluster (`--dask-address tls://...`); the cell, a pipeline
    run with another fusion, runs on the worker over the cached upstream stages."""
    return team.mmpipe("sweep", "sweep", "--grid", "training.fusion=concat", "--seeds", "0",
                       "--dask-address", team.dask_address)


def refused(call) -> str:
    """The error message of a call that must fail."""
    with pytest.raises(Exception) as caught:  # noqa: PT011 -- MLflow, httpx or Dask errors
        call()
    return str(caught.value)


def tls_security(files: dict[str, Path], ca: Path):
    from distributed import Security

    return Security(require_encryption=True, tls_ca_file=str(ca),
                    tls_client_cert=str(files["cert"]), tls_client_key=str(files["key"]))


# ---- MLflow -----------------------------------------------------------------------------------

@pytest.mark.slow
def test_mlflow_refuses_anonymous_and_wrong_passwords(team):
    search = "/api/2.0/mlflow/experiments/search?max_results=1"
    with httpx.Client(base_url=team.mlflow_url, timeout=30) as http:
        assert http.get(search).status_code == 401
        assert http.get(search, auth=(ALICE[0], "not-her-password")).status_code == 401
        assert http.get(search, auth=("mallory", ALICE[1])).status_code == 401
        assert http.get(search, auth=ALICE).status_code == 200
    with as_user(team, (ALICE[0], "not-her-password")) as client:
        assert "401" in refused(lambda: client.search_experiments())


@pytest.mark.slow
def test_mlflow_the_pipeline_runs_with_the_credentials_in_the_environment(team, team_run):
    with as_user(team, ALICE) as client:
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        parent = client.search_runs([experiment], "tags.stages LIKE 'preprocessing%'",
                                    order_by=["attributes.start_time ASC"])[0]
        assert parent.info.status == "FINISHED"
        stages = client.search_runs(
            [experiment], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
        assert len(stages) == 5 and {r.info.status for r in stages} == {"FINISHED"}
        champion = client.get_model_version_by_alias(MODEL, "champion")
        assert champion.tags["registered_by"] == "pipeline"
    assert b"@champion" in team_run.stdout


@pytest.mark.slow
def test_mlflow_a_reader_sees_runs_but_cannot_log_or_move_the_champion(team, reader):
    with as_user(team, BOB) as client:
        runs = client.search_runs([reader])
        assert runs  # READ: the runs, their params and metrics are visible
        run = runs[0]
        assert client.get_run(run.info.run_id).data.params
        testing = client.search_runs([reader], "tags.stage = 'testing'")[0]
        assert "confusion.png" in {a.path for a in client.list_artifacts(testing.info.run_id)}
        champion = client.get_model_version_by_alias(MODEL, "champion")
        assert "403" in refused(lambda: client.log_metric(run.info.run_id, "bob.metric", 1.0))
        assert "403" in refused(lambda: client.set_tag(run.info.run_id, "bob", "was here"))
        assert "403" in refused(lambda: client.create_run(reader))
        assert "403" in refused(
            lambda: client.set_registered_model_alias(MODEL, "champion", "1"))
    with as_user(team, ALICE) as client:  # unchanged
        assert client.get_model_version_by_alias(MODEL, "champion").version == champion.version
        assert "bob.metric" not in client.get_run(run.info.run_id).data.metrics
        assert "bob" not in client.get_run(run.info.run_id).data.tags


@pytest.mark.slow
def test_mlflow_credentials_in_the_tracking_uri_work_and_are_never_written(team, uri_run):
    # The link printed (and written in the run's description) has no credentials.
    link = re.search(rf"MLflow run: {re.escape(team.mlflow_url)}/#/experiments/\d+/runs/(\w+)",
                     uri_run.stdout.decode())
    assert link, uri_run.stdout.decode()
    with as_user(team, ALICE) as client:
        run = client.get_run(link[1])
    assert run.info.status == "FINISHED" and run.data.tags["cache"] == "5 hit"
    assert ALICE[1].encode() not in uri_run.stdout + uri_run.stderr


# ---- Prefect ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_prefect_refuses_anonymous_and_wrong_auth_strings(team):
    for auth in (None, "team:wrong", PREFECT_AUTH.split(":")[1]):
        with team.prefect(auth) as http:
            assert http.post("/flow_runs/filter", json={"limit": 1}).status_code == 401
    with team.prefect() as http:
        assert http.post("/flow_runs/filter", json={"limit": 1}).status_code == 200


@pytest.mark.slow
def test_prefect_the_pipeline_runs_against_the_server_with_the_auth_string(team, team_run):
    with as_user(team, ALICE) as client:
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        parent = client.search_runs([experiment], "tags.stages LIKE 'preprocessing%'",
                                    order_by=["attributes.start_time ASC"])[0]
    flow_run_id = parent.data.tags["prefect.flow_run_id"]
    with team.prefect() as http:
        flow_run = http.get(f"/flow_runs/{flow_run_id}").json()
        tasks = http.post("/task_runs/filter", json={
            "flow_runs": {"id": {"any_": [flow_run_id]}}}).json()
    assert flow_run["state"]["type"] == "COMPLETED"
    assert len(tasks) >= 5 and {t["state"]["type"] for t in tasks} == {"COMPLETED"}


# ---- Dask -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_dask_refuses_clients_without_a_certificate_of_the_ca(team):
    from distributed import Client, Security

    host, port = team.dask_address.removeprefix("tls://").rsplit(":", 1)
    # TLS that trusts the scheduler but shows no certificate of its own: refused.
    context = ssl.create_default_context(cafile=str(team.tls["ca"]))
    context.check_hostname = False
    # (TLS 1.3: the handshake completes on this side; the scheduler's refusal, an alert
    # "certificate required" or a closed connection, comes with the first read.)
    with socket.create_connection((host, int(port)), timeout=10) as raw, \
            context.wrap_socket(raw) as tls, pytest.raises((ssl.SSLError, ConnectionError)):
        tls.sendall(b"hello")
        if not tls.recv(16):
            raise ConnectionResetError("the scheduler closed the connection")
    log = team.root / "dask" / "scheduler.log"  # the scheduler logs the refusal a moment later
    wait_for("the scheduler to log the refused handshake", lambda: "peer did not return a "
             "certificate" in log.read_text().lower(), timeout=30)
    # A certificate that another CA signed: refused.
    refused(lambda: Client(team.dask_address, security=tls_security(team.rogue, team.tls["ca"]),
                           timeout=10))
    # No TLS at all: Dask will not even try; plain TCP to the TLS port: refused.
    assert "TLS" in refused(lambda: Client(team.dask_address, security=Security(), timeout=10))
    refused(lambda: Client(f"tcp://{host}:{port}", security=Security(), timeout=10))


@pytest.mark.slow
def test_dask_a_sweep_runs_its_cell_on_the_tls_cluster(team, tls_sweep):
    from distributed import Client

    assert f"on Dask cluster at {team.dask_address}".encode() in tls_sweep.stdout
    assert b"failed:" not in tls_sweep.stdout
    security = tls_security(team.tls, team.tls["ca"])
    with Client(team.dask_address, security=security, timeout=30) as client:
        prefixes = client.run_on_scheduler(
            lambda dask_scheduler: list(dask_scheduler.task_prefixes))
    assert prefixes, "the scheduler ran no task"
    with as_user(team, ALICE) as client:
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        cells = client.search_runs([experiment], "tags.kind = 'sweep-cell'")
        sweep = client.search_runs([experiment], "tags.kind = 'sweep'")[0]
    assert [c.info.status for c in cells] == ["FINISHED"]
    assert cells[0].data.tags["sweep.training.fusion"] == "concat"
    assert sweep.data.tags["sweep.executor"] == f"Dask cluster at {team.dask_address}"


# ---- nothing secret written -------------------------------------------------------------------

@pytest.mark.slow
def test_no_secret_in_what_the_runs_wrote_printed_or_logged(team, team_run, uri_run, tls_sweep):
    forbidden = forbidden_bytes(team.tls["key"])
    found = {}
    # The run folder, every file, byte for byte (stage outputs, Prefect's home and results,
    # plots, the sweep's tables; the run records are removed when a run ends: the fast test
    # below reads one).
    files = [p for p in team.run_dir.rglob("*") if p.is_file()]
    assert len(files) > 20
    for path in files:
        if hits := leaks(path.read_bytes(), forbidden):
            found[str(path.relative_to(team.run_dir))] = hits
    # What each command printed, and the Dask worker's log.
    for name, done in team.outputs.items():
        if hits := leaks(done.stdout + done.stderr, forbidden):
            found[f"mmpipe {name} output"] = hits
    if hits := leaks((team.root / "dask" / "worker.log").read_bytes(), forbidden):
        found["dask worker log"] = hits
    # Every MLflow run's params and tags (the descriptions with their links among them) and
    # the registered versions' tags, as the admin sees them.
    with as_user(team, ADMIN) as client:
        experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
        runs = client.search_runs([experiment])
        assert len(runs) >= 3 * 6
        for run in runs:
            text = json.dumps([run.data.params, run.data.tags]).encode()
            if hits := leaks(text, forbidden):
                found[f"MLflow run {run.info.run_name}"] = hits
        versions = client.search_model_versions(f"name = '{MODEL}'")
        if hits := leaks(json.dumps([v.tags for v in versions]).encode(), forbidden):
            found["registered model versions"] = hits
    # Prefect: flow runs' parameters, every log line and artifact (the MLflow link).
    with team.prefect() as http:
        flow_runs = http.post("/flow_runs/filter", json={}).json()
        logs = http.post("/logs/filter", json={"limit": 200}).json()
        artifacts = http.post("/artifacts/filter", json={}).json()
    assert flow_runs and logs and artifacts
    for what, items in (("flow run", flow_runs), ("log", logs), ("artifact", artifacts)):
        if hits := leaks(json.dumps(items).encode(), forbidden):
            found[f"Prefect {what}s"] = hits
    assert any(f"{team.mlflow_url}/#/experiments/" in (a.get("data") or "")
               for a in artifacts)
    assert not found, f"secrets written: {found}"


# ---- public_uri and where it is used (fast) ---------------------------------------------------

@pytest.mark.parametrize(("uri", "public"), [
    ("http://alice:s3cret@mlflow.team.example:5000", "http://mlflow.team.example:5000"),
    ("https://alice@mlflow.team.example/", "https://mlflow.team.example/"),
    ("http://u:p%40ss@127.0.0.1:5000/api", "http://127.0.0.1:5000/api"),
    ("http://u:p@ss@127.0.0.1:5000", "http://127.0.0.1:5000"),  # an unencoded @: all of it
    ("postgresql+psycopg://mlflow:pw@db:5432/mlflow", "postgresql+psycopg://db:5432/mlflow"),
    ("tls://user:pw@scheduler:8786", "tls://scheduler:8786"),
    ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
    ("sqlite:////runs/mlflow.db", "sqlite:////runs/mlflow.db"),
    ("file:///tmp/mlruns", "file:///tmp/mlruns"),
    ("databricks", "databricks"),
    ("models:/mmpipe-classifier@champion", "models:/mmpipe-classifier@champion"),
    ("s3://bucket/key@v2", "s3://bucket/key@v2"),  # an @ in the path is not user info
    ("", ""),
])
def test_public_uri_drops_the_user_info(uri, public):
    assert public_uri(uri) == public
    assert public_uri(None) is None


def test_records_summaries_links_and_params_carry_no_credentials(tmp_path, monkeypatch):
    import logging

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.sweep import where
    from mmcore.config import load_config
    from tasks.engine import recovery
    from tasks.tracking import run_summary, runs

    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://alice:s3cret-pw@mlflow.example:5000/")
    cfg = load_config(overrides=[f"run_dir={tmp_path}", "dask.address=tls://u:s3cret-pw@s:8786"])
    with temporary_settings(updates={PREFECT_API_URL: "http://p:s3cret-pw@prefect:4200/api"}):
        recovery.begin(cfg, "0000-flow-run", logging.getLogger("test"))
    record = (tmp_path / "running" / "0000-flow-run.json").read_text()
    assert "s3cret" not in record
    assert json.loads(record)["tracking_uri"] == "http://mlflow.example:5000/"
    assert json.loads(record)["prefect_api_url"] == "http://prefect:4200/api"
    # The next run connects to the store with the credentials it has, not the record's URI.
    assert recovery._store_uri(cfg, "http://mlflow.example:5000/") == \
        "http://alice:s3cret-pw@mlflow.example:5000/"
    assert recovery._store_uri(cfg, "http://other:5000") == "http://other:5000"
    recovery.end(cfg, "0000-flow-run")

    assert run_summary.mlflow_ui(cfg) == "http://mlflow.example:5000"
    assert where("tls://u:s3cret-pw@s:8786", None, False) == "Dask cluster at tls://s:8786"

    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path}/params.db")  # a real store, read back
    run_id = client.create_run(client.create_experiment("params")).info.run_id
    runs.log_params_and_metrics(client, run_id, cfg.flat())
    params = client.get_run(run_id).data.params
    assert params["dask.address"] == "tls://s:8786" and params["training.fusion"] == "late"
