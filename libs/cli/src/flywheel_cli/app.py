"""The `flywheel` command: tables for people, `--json` for scripts."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import sys
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any

import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Column, Table

from flywheel.deployer.v1 import deployer_pb2 as deployer_pb
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.drift.v1 import drift_pb2 as drift_pb
from flywheel.drift.v1 import types_pb2 as drift_types
from flywheel.registry.v1 import registry_pb2 as registry_pb
from flywheel.registry.v1 import types_pb2 as registry_types
from flywheel.retrain.v1 import retrain_pb2 as retrain_pb
from flywheel.retrain.v1 import types_pb2 as retrain_types
from flywheel_cli.connection import Addresses, Clients, CommandError, fetch_page, run
from flywheel_cli.credentials import LocalCredentials
from flywheel_common.certificates import LOCAL_HOSTS
from flywheel_common.healthcheck import is_serving
from flywheel_common.registration import registration
from flywheel_common.settings import Role
from inference import grpc_service_pb2 as inference_pb

app = typer.Typer(help="Operate a Flywheel platform.", no_args_is_help=True)
retrain_app = typer.Typer(help="Retrain runs: list, trigger, approve, reject.")
app.add_typer(retrain_app, name="retrain")
certs_app = typer.Typer(help="Local credentials: CA, certificates and tokens under .run/.")
app.add_typer(certs_app, name="certs")
console = Console()
errors = Console(stderr=True)

SERVICES = ("registry", "deployer", "gateway", "drift", "retrain")


class State:
    addresses = Addresses()
    as_json = False


@app.callback()
def configure(
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
    token: Annotated[str, typer.Option(help="Bearer token (or FLYWHEEL_CLI_TOKEN).")] = "",
) -> None:
    State.as_json = json_output
    if token:
        State.addresses = State.addresses.model_copy(update={"token": token})


def _data(value: Any) -> Any:
    if isinstance(value, Message):
        return json_format.MessageToDict(value, preserving_proto_field_name=True)
    if isinstance(value, list):
        return [_data(item) for item in value]
    if isinstance(value, dict):
        return {key: _data(item) for key, item in value.items()}
    return value


def show(data: Any, table: Table | None) -> None:
    if State.as_json or table is None:
        console.print_json(json.dumps(_data(data)))
    else:
        console.print(table)


def table(*columns: Column, title: str | None = None) -> Table:
    """Two spaces between columns and none at the edges.

    A table has at most one `prose` column: when a table is too wide, rich narrows its
    wrapping columns evenly, and only a single one takes that without breaking what it holds.
    Lists go one item per line (`lines`), so a key column is as wide as its longest item.
    """
    return Table(
        *columns,
        box=None,
        header_style="bold",
        pad_edge=False,
        padding=(0, 2, 0, 0),
        title=title,
        title_justify="left",
        title_style="bold",
    )


def key(header: str) -> Column:
    """Values read whole (names, ids, versions, phases): never wrapped; folded only when
    the key columns alone are wider than the terminal."""
    return Column(header, no_wrap=True, overflow="fold")


def prose(header: str) -> Column:
    """Values that wrap at spaces to the width the key columns leave; long words fold."""
    return Column(header, overflow="fold")


def lines(items: Iterable[str]) -> str:
    return "\n".join(items) or "-"


def _short_id(value: str) -> str:
    """Ids shortened to 8 characters, a prefix `retrain approve` and `reject` accept."""
    return value[:8]


def _age(value: Any, now: float | None = None) -> str:
    """How long ago, as kubectl says it (45s, 12m, 3h, 9d); --json has the time itself."""
    if not value.seconds:
        return "-"
    seconds = max(0, int((time.time() if now is None else now) - value.seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _versions(base: int, new: int) -> str:
    return f"v{base}→v{new}" if base else f"v{new}"


def execute(command: Any) -> Any:
    try:
        return run(State.addresses, command)
    except CommandError as error:
        errors.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None


async def _known_model(clients: Clients, model: str) -> None:
    """Listings filtered by a model answer empty for a name nobody registered; asking the
    registry first fails with NOT_FOUND, as the commands that act on a model do."""
    await clients.call("registry", "GetModel", registry_pb.GetModelRequest(name=model))


def _enum(enum: Any, number: int, prefix: str) -> str:
    return str(enum.Name(number)).removeprefix(prefix).lower()


@app.command()
def status() -> None:
    """Health of every service and gateway, the models and their live traffic split."""

    async def command(clients: Clients) -> dict[str, Any]:
        addresses = [clients.addresses.of(s) for s in SERVICES]
        health = await asyncio.gather(*(is_serving(a, clients.addresses.tls) for a in addresses))
        report: dict[str, Any] = {
            "services": {
                s: {"address": a, "serving": h}
                for s, a, h in zip(SERVICES, addresses, health, strict=True)
            },
            "models": [],
        }
        if not health[0] or not health[1]:
            return report
        models = await clients.call("registry", "ListModels", registry_pb.ListModelsRequest())
        for model in models.models:
            state = await clients.call(
                "deployer",
                "GetDeploymentState",
                deployer_pb.GetDeploymentStateRequest(model=model.name),
            )
            report["models"].append(
                {
                    "model": model.name,
                    "aliases": {a.name: a.version for a in model.aliases},
                    "traffic": {str(r.version): r.weight_percent for r in state.state.routes},
                    "gateways": [
                        {"id": g.gateway_id, "live": g.live, "ready": list(g.ready_versions)}
                        for g in state.gateways
                    ],
                    "rollout": _enum(
                        deployer_types.RolloutPhase, state.active_rollout.phase, "ROLLOUT_PHASE_"
                    )
                    if state.HasField("active_rollout")
                    else "",
                }
            )
        return report

    report = execute(command)
    if State.as_json:
        show(report, None)
    else:
        services, models = _status_tables(report)
        console.print(services)
        console.print()
        console.print(models)
    if not all(e["serving"] for e in report["services"].values()):
        raise typer.Exit(1)


def _status_tables(report: dict[str, Any]) -> tuple[Table, Table]:
    services = table(key("service"), key("address"), key("health"))
    for name, entry in report["services"].items():
        services.add_row(
            name, entry["address"], "[green]SERVING[/]" if entry["serving"] else "[red]DOWN[/]"
        )
    models = table(key("model"), key("aliases"), key("traffic"), prose("gateways"), key("rollout"))
    for entry in report["models"]:
        models.add_row(
            entry["model"],
            lines(f"{k}=v{v}" for k, v in entry["aliases"].items()),
            lines(f"v{k}:{w}%" for k, w in entry["traffic"].items()),
            lines(_gateways(entry["gateways"])),
            entry["rollout"] or "-",
        )
    return services, models


def _gateways(gateways: list[dict[str, Any]]) -> list[str]:
    """Live gateways by id; those gone (stopped without a word, silent past their heartbeat)
    only counted."""
    live = [g["id"] for g in gateways if g["live"]]
    gone = len(gateways) - len(live)
    return live + ([f"(+{gone} gone)"] if gone else [])


@app.command()
def models() -> None:
    """The registered models."""
    response = execute(
        lambda c: c.call("registry", "ListModels", registry_pb.ListModelsRequest(page_size=200))
    )
    show(list(response.models), _models_table(list(response.models)))


def _models_table(models: list[Any]) -> Table:
    rows = table(key("model"), key("latest"), key("versions"), key("aliases"), prose("description"))
    for model in models:
        rows.add_row(
            model.name,
            f"v{model.latest_version}",
            str(model.version_count),
            lines(f"{a.name}=v{a.version}" for a in model.aliases),
            model.description,
        )
    return rows


@app.command()
def versions(model: str) -> None:
    """A model's versions, newest first."""
    response = execute(
        lambda c: c.call(
            "registry",
            "ListModelVersions",
            registry_pb.ListModelVersionsRequest(model=model, page_size=200),
        )
    )
    found = list(response.model_versions)
    show(found, _versions_table(found))


def _versions_table(versions: list[Any]) -> Table:
    rows = table(
        key("version"),
        key("status"),
        key("aliases"),
        key("metrics"),
        prose("triggered by"),
        key("age"),
    )
    for version in versions:
        rows.add_row(
            f"v{version.version}",
            _enum(registry_types.ModelVersionStatus, version.status, "MODEL_VERSION_STATUS_"),
            lines(version.aliases),
            lines(f"{k}={v:.3g}" for k, v in sorted(version.metrics.items())),
            _short_trigger(version.lineage.triggered_by, version.model) or "-",
            _age(version.created_at),
        )
    return rows


def _short_trigger(triggered_by: str, model: str) -> str:
    """Without the model the listing is about (`drift-alert:<model>:1:5:drift` reads
    `drift-alert:1:5:drift`), and hex ids by their first 8 characters."""
    kind, _, ident = triggered_by.partition(":")
    ident = ident.removeprefix(f"{model}:")
    if len(ident) >= 16 and all(c in "0123456789abcdef-" for c in ident):
        ident = _short_id(ident)
    return f"{kind}:{ident}" if ident else kind


@app.command()
def register(
    model: str,
    artifact: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="ONNX file")],
    description: str = "",
    promote: Annotated[bool, typer.Option(help="Make it production.")] = False,
    breaking_change: bool = False,
) -> None:
    """Register an ONNX file as the model's next version."""
    data = artifact.read_bytes()
    messages = registration(
        model,
        data,
        chunk=1 << 20,
        description=description,
        aliases=["production"] if promote else [],
        breaking_change=breaking_change,
        idempotency_key=f"cli:{hashlib.sha256(data).hexdigest()[:32]}:{uuid.uuid4().hex[:8]}",
    )

    response = execute(
        lambda c: c.call("registry", "RegisterModelVersion", iter(messages), timeout=120)
    )
    version = response.model_version
    if State.as_json:
        show(version, None)
    else:
        console.print(
            f"registered [bold]{model}[/] version {version.version} "
            f"(sha256 {version.artifact.sha256[:12]})"
        )


@app.command()
def promote(model: str, version: int, reason: str = "") -> None:
    """Point `production` at a version (the deployer rolls it out)."""
    execute(
        lambda c: c.call(
            "registry",
            "SetAlias",
            registry_pb.SetAliasRequest(
                model=model, alias="production", version=version, reason=reason
            ),
        )
    )
    console.print(f"{model}: production -> v{version}")


@app.command()
def rollback(
    model: str,
    to: Annotated[
        int, typer.Option(help="Version to send all traffic to; 0 means the previous one.")
    ] = 0,
    reason: str = "",
) -> None:
    """Send all traffic back to an older version at once."""
    response = execute(
        lambda c: c.call(
            "deployer",
            "Rollback",
            deployer_pb.RollbackRequest(model=model, to_version=to, reason=reason),
        )
    )
    console.print(f"{model}: rolled back to v{response.rollout.version}")


def _rollouts_table(rollouts: list[Any]) -> Table:
    rows = table(
        key("rollout"),
        key("versions"),
        key("strategy"),
        key("phase"),
        key("traffic"),
        prose("reason"),
    )
    for rollout in rollouts:
        rows.add_row(
            _short_id(rollout.rollout_id),
            _versions(rollout.baseline_version, rollout.version),
            _enum(deployer_types.Strategy, rollout.strategy, "STRATEGY_"),
            _enum(deployer_types.RolloutPhase, rollout.phase, "ROLLOUT_PHASE_"),
            f"{rollout.weight_percent}%",
            rollout.end_reason or rollout.reason,
        )
    return rows


@app.command()
def rollouts(
    model: str,
    watch: Annotated[bool, typer.Option(help="Refresh every second until Ctrl-C.")] = False,
) -> None:
    """A model's rollouts, newest first; --watch follows the steps live."""

    def fetch() -> list[Any]:
        response = execute(
            lambda c: c.call(
                "deployer", "ListRollouts", deployer_pb.ListRolloutsRequest(model=model)
            )
        )
        return list(response.rollouts)

    execute(lambda c: _known_model(c, model))
    if not watch:
        found = fetch()
        show(found, _rollouts_table(found))
        return
    from rich.live import Live

    with Live(_rollouts_table(fetch()), console=console, refresh_per_second=2) as live:
        try:
            while True:
                time.sleep(1)
                live.update(_rollouts_table(fetch()))
        except KeyboardInterrupt:
            pass


@app.command()
def alerts(
    model: Annotated[str, typer.Option(help="Only this model.")] = "",
    follow: Annotated[bool, typer.Option(help="Print new alerts as they arrive.")] = False,
) -> None:
    """Drift alerts, newest first; --follow streams new ones from flywheel.drift-alerts."""

    def line(alert: Any) -> str:
        features = ", ".join(f.feature for f in alert.findings if f.drifted)
        return (
            f"{alert.occurred_at.ToDatetime().strftime('%Y-%m-%d %H:%M:%S')}  {alert.model} "
            f"v{alert.version}  {_enum(drift_types.Severity, alert.severity, 'SEVERITY_')}  "
            f"{alert.summary or features}"
        )

    async def command(clients: Clients) -> Any:
        if model:
            await _known_model(clients, model)
        return await clients.call(
            "drift", "ListAlerts", drift_pb.ListAlertsRequest(model=model, page_size=50)
        )

    response = execute(command)
    if State.as_json and not follow:
        show(list(response.alerts), None)
        return
    if not follow:
        for alert in response.alerts:
            print_line(line(alert))
        return
    _follow_alerts(model, line)


@app.command()
def report(
    model: str,
    version: Annotated[int, typer.Option(help="Model version; default the newest seen.")] = 0,
    window: Annotated[
        int | None, typer.Option(help="Window index; default the latest.", show_default=False)
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="HTML file to write.", show_default=False)
    ] = None,
) -> None:
    """Write the drift report of a model version's window: one self-contained HTML page
    (reference vs window distributions, tests, quality, metrics over time)."""
    query: dict[str, int] = {"version": version} if version else {}
    if window is not None:
        query["window"] = window
    path = f"/reports/{urllib.parse.quote(model, safe='')}"
    try:
        page = fetch_page(
            State.addresses, path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        )
    except CommandError as error:
        errors.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    target = output or Path(
        f"{model}-v{version or 'latest'}{f'-w{window}' if window is not None else ''}.html"
    )
    target.write_text(page, encoding="utf-8")
    print_line(f"wrote {target} ({len(page) // 1024} KiB)")


def print_line(text: str) -> None:
    """One line per item, cut with an ellipsis at the terminal's width (--json has it all)."""
    console.print(text, no_wrap=True, overflow="ellipsis", markup=False, highlight=False)


def _follow_alerts(model: str, line: Any) -> None:
    from flywheel_common.events import EventTypes, decode_event
    from flywheel_common.topics import DRIFT_ALERTS

    async def follow() -> None:
        from aiokafka import AIOKafkaConsumer

        from flywheel_common.kafka_security import kafka_client_options

        consumer = AIOKafkaConsumer(
            DRIFT_ALERTS.name,
            **kafka_client_options(State.addresses.kafka_settings()),
            auto_offset_reset="latest",
        )
        await consumer.start()
        types = EventTypes.flywheel()
        try:
            async for record in consumer:
                alert = decode_event(record.headers, record.value, types).message
                if model and getattr(alert, "model", "") != model:
                    continue
                if State.as_json:
                    print(json.dumps(_data(alert)), flush=True)
                else:
                    print_line(line(alert))
        finally:
            await consumer.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(follow())


def _runs_tables(runs: list[Any]) -> list[Table]:
    """One table per model, titled with its name, in the order of each model's first run."""
    by_model: dict[str, list[Any]] = {}
    for run_ in runs:
        by_model.setdefault(run_.model, []).append(run_)
    tables = []
    for model, group in by_model.items():
        rows = table(
            key("run"), key("state"), key("trigger"), key("versions"), prose("outcome"), title=model
        )
        for run_ in group:
            rows.add_row(
                _short_id(run_.run_id),
                _enum(retrain_types.RunState, run_.state, "RUN_STATE_"),
                _enum(retrain_types.TriggerKind, run_.trigger.kind, "TRIGGER_KIND_"),
                _versions(run_.base_version, run_.candidate_version)
                if run_.candidate_version
                else f"v{run_.base_version}→-",
                "; ".join(filter(None, (_gate(run_.gate), run_.error))) or "-",
            )
        tables.append(rows)
    return tables


def _gate(gate: Any) -> str:
    if not gate.decision:
        return ""
    decision = _enum(retrain_types.GateDecision, gate.decision, "GATE_DECISION_")
    return (
        f"gate {decision}: {gate.metric} {gate.candidate_value:.3g} "
        f"vs {gate.production_value:.3g} in production"
    )


def show_runs(data: Any, runs: list[Any]) -> None:
    """`data` as JSON with --json (a run or a list of them), else the runs' tables."""
    if State.as_json:
        show(data, None)
        return
    if not runs:
        console.print("no retrain runs")
    for index, rows in enumerate(_runs_tables(runs)):
        if index:
            console.print()
        console.print(rows)


@retrain_app.command("runs")
def retrain_runs(model: Annotated[str, typer.Argument()] = "") -> None:
    """Retrain runs, newest first."""

    async def command(clients: Clients) -> Any:
        if model:
            await _known_model(clients, model)
        return await clients.call("retrain", "ListRuns", retrain_pb.ListRunsRequest(model=model))

    runs = list(execute(command).runs)
    show_runs(runs, runs)


@retrain_app.command("trigger")
def retrain_trigger(model: str, reason: str = "started from the command line") -> None:
    """Start a run by hand."""
    response = execute(
        lambda c: c.call(
            "retrain",
            "TriggerRetrain",
            retrain_pb.TriggerRetrainRequest(model=model, reason=reason),
        )
    )
    show_runs(response.run, [response.run])


async def _full_run_id(clients: Clients, prefix: str) -> str:
    if len(prefix) == 32:
        return prefix
    response = await clients.call("retrain", "ListRuns", retrain_pb.ListRunsRequest(page_size=200))
    matches = [r.run_id for r in response.runs if r.run_id.startswith(prefix)]
    if len(matches) != 1:
        raise CommandError(f"{len(matches)} runs start with {prefix!r}; give more of the run id")
    return str(matches[0])


def _sign_off(run_id: str, method: str, request: Callable[[str], Message]) -> None:
    """ApproveCandidate or RejectCandidate on the run a prefix names; the run as it stands."""

    async def command(clients: Clients) -> Any:
        full = await _full_run_id(clients, run_id)
        return await clients.call("retrain", method, request(full))

    response = execute(command)
    show_runs(response.run, [response.run])


@retrain_app.command("approve")
def retrain_approve(run_id: str, comment: str = "") -> None:
    """Approve a candidate awaiting sign-off: it becomes production."""
    _sign_off(
        run_id,
        "ApproveCandidate",
        lambda full: retrain_pb.ApproveCandidateRequest(run_id=full, comment=comment),
    )


@retrain_app.command("reject")
def retrain_reject(run_id: str, reason: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Reject a candidate awaiting sign-off: production stays as it is."""
    _sign_off(
        run_id,
        "RejectCandidate",
        lambda full: retrain_pb.RejectCandidateRequest(run_id=full, reason=reason),
    )


@app.command()
def infer(
    model: str,
    values: Annotated[
        str,
        typer.Argument(help="One row: comma-separated numbers; '-' reads JSON rows from stdin."),
    ],
    input_name: str = "features",
    version: Annotated[int, typer.Option(help="Pin a version; 0 lets routing choose.")] = 0,
) -> None:
    """Call the gateway's ModelInfer (KServe V2) with FP32 rows."""
    # Imported here: numpy costs every other command a third of a second to start.
    import numpy as np

    from flywheel_common.signatures import NUMPY_DTYPES

    try:
        rows = np.array(
            json.load(sys.stdin) if values == "-" else [[float(v) for v in values.split(",")]],
            dtype=np.float32,
        )
    except (ValueError, json.JSONDecodeError) as error:
        errors.print(f"[red]error:[/] the input must be numbers: {error}")
        raise typer.Exit(2) from None
    request = inference_pb.ModelInferRequest(
        model_name=model,
        model_version=str(version) if version else "",
        id=uuid.uuid4().hex,
        inputs=[
            inference_pb.ModelInferRequest.InferInputTensor(
                name=input_name, datatype="FP32", shape=list(rows.shape)
            )
        ],
        raw_input_contents=[rows.tobytes()],
    )
    response = execute(lambda c: c.call("gateway", "ModelInfer", request))
    outputs = {
        output.name: np.frombuffer(
            response.raw_output_contents[index], dtype=NUMPY_DTYPES[output.datatype]
        )
        .reshape(tuple(output.shape))
        .tolist()
        for index, output in enumerate(response.outputs)
    }
    result = {"model": response.model_name, "version": response.model_version, "outputs": outputs}
    if State.as_json:
        show(result, None)
    else:
        console.print(
            f"{model} v{response.model_version}: "
            + "  ".join(f"{k}={v}" for k, v in outputs.items())
        )


RunDir = Annotated[Path, typer.Option("--dir", help="Where the credentials live.")]


@certs_app.command("init")
def certs_init(
    directory: RunDir = Path(".run"),
    host: Annotated[
        list[str] | None,
        typer.Option(help="A name of the services' certificate (repeat; default localhost)."),
    ] = None,
    tls_only: Annotated[bool, typer.Option(help="Certificates only, no tokens.")] = False,
) -> None:
    """Make a local CA, the services' certificate (localhost, 127.0.0.1), a client
    certificate and admin/writer/reader tokens, unless they exist (delete files to rotate)."""
    credentials = LocalCredentials(directory)
    written = credentials.ensure(tuple(host or LOCAL_HOSTS), tokens=not tls_only)
    for path in written:
        errors.print(f"wrote {path}")
    if not written:
        errors.print(f"kept the credentials in {directory}")


@certs_app.command("token")
def certs_token(role: Role, directory: RunDir = Path(".run")) -> None:
    """Print the local token of a role (for scripts and `make run`)."""
    try:
        print(LocalCredentials(directory).token(role))
    except (OSError, StopIteration):
        errors.print(f"[red]error:[/] no {role} token in {directory}: run `flywheel certs init`")
        raise typer.Exit(1) from None


def main() -> None:
    app()
