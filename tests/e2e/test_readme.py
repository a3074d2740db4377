"""README's "loop by hand", its KServe V2 client examples (gRPC; curl and tritonclient.http
over REST) and the demo's closing hints, run as written against all five services
(tests/unit/test_readme.py checks the names they use)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
from flywheel_cli.connection import Addresses
from flywheel_examples import breast_cancer
from flywheel_examples.demo import next_steps

from flywheel.deployer.v1 import deployer_pb2 as deployer_pb
from flywheel.deployer.v1 import deployer_pb2_grpc as deployer_grpc
from flywheel.deployer.v1 import types_pb2 as deployer_types
from flywheel.retrain.v1 import retrain_pb2 as retrain_pb
from flywheel.retrain.v1 import retrain_pb2_grpc as retrain_grpc
from flywheel.retrain.v1 import types_pb2 as retrain_types
from flywheel_testing.tls import pki, secure_channel

README = (Path(__file__).parents[2] / "README.md").read_text()
MAKE_RUN = Addresses()  # the addresses README's commands use: `make run`'s defaults
MODEL = breast_cancer.MODEL


@pytest.fixture
def deployed_models() -> list[str]:
    return [MODEL]


def first_block(after: str, language: str) -> str:
    start = README.index(after)
    match = re.search(rf"^```{language}\n(.*?)^```", README[start:], re.MULTILINE | re.DOTALL)
    assert match, f"no {language} block after {after!r}"
    return match.group(1)


def shell_commands(block: str) -> list[str]:
    """One entry per command: comment lines dropped, trailing comments cut, heredocs whole."""
    commands: list[str] = []
    lines = iter(block.splitlines())
    for line in lines:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        command = re.sub(r"\s+#\s.*$", "", line)
        # A trailing backslash, or a single quote left open, carries on to the next line.
        while command.endswith("\\") or command.count("'") % 2:
            command += "\n" + next(lines)
        if heredoc := re.search(r"<<'(\w+)'", command):
            body = []
            for inner in lines:
                body.append(inner)
                if inner == heredoc.group(1):
                    break
            command = "\n".join([command, *body])
        commands.append(command)
    return commands


class Shell:
    """Runs commands as README gives them, `uv run` being this test's interpreter and the
    addresses of `make run` those of the platform under test."""

    def __init__(self, endpoints: Addresses, cwd: Path) -> None:
        self._cwd = cwd
        self._replacements = {
            getattr(MAKE_RUN, name): getattr(endpoints, name)
            for name in ("registry", "deployer", "gateway", "drift", "retrain", "kafka")
        }
        variables = endpoints.environment()
        del variables["FLYWHEEL_CLI_TOKEN"]
        self._env = os.environ | {
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            **variables,
        }

    async def run(self, command: str) -> tuple[int, str]:
        command = re.sub(r"(^|\n)uv run ", r"\1", command)
        for default, actual in self._replacements.items():
            command = command.replace(default, actual)
        process = await asyncio.create_subprocess_exec(
            "bash",
            "-euo",
            "pipefail",
            "-c",
            command,
            cwd=self._cwd,
            env=self._env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        output, _ = await asyncio.wait_for(process.communicate(), 120)
        return process.returncode or 0, output.decode()

    async def succeeds(self, command: str, within: float = 0.0) -> str:
        """The command's output once it exits 0; retried for `within` seconds (a model just
        promoted serves once the gateways have loaded it)."""
        deadline = time.monotonic() + within
        while True:
            code, output = await self.run(command)
            if code == 0:
                return output
            if time.monotonic() >= deadline:
                raise AssertionError(f"{command!r} exited {code}:\n{output}")
            await asyncio.sleep(1)


async def test_the_loop_by_hand_and_the_client_examples_work_as_written(
    platform: Addresses, gateway_rest: str, tmp_path: Path
) -> None:
    shell = Shell(platform, tmp_path)
    commands = shell_commands(first_block("### The loop by hand", "sh"))
    ran = []
    for command in commands:
        if "<" in command.split("<<")[0] or "--follow" in command:
            continue  # a placeholder to fill in, or a stream that runs until Ctrl-C
        # --watch refreshes until Ctrl-C; the listing it refreshes is the same command.
        output = await shell.succeeds(
            command.replace(" --watch", ""), within=60 if " infer " in command else 0
        )
        ran.append(command)
        if "--json retrain runs" in command:
            assert json.loads(output) == []  # "none yet"
    assert len(ran) >= 6, ran

    status = json.loads(await shell.succeeds("uv run flywheel --json status"))
    [entry] = [m for m in status["models"] if m["model"] == MODEL]
    assert entry["aliases"]["production"] == 1
    assert entry["traffic"] == {"1": 100}
    await _policies_were_set(platform)

    client = first_block("## The inference gateway", "python")
    for default, actual in shell._replacements.items():
        client = client.replace(default, actual)
    # What `make run` leaves in .run/: the CA the platform's certificates chain to, tokens.
    (tmp_path / ".run/tls").mkdir(parents=True)
    shutil.copy(pki().ca_file, tmp_path / ".run/tls/ca.pem")
    (tmp_path / ".run/tokens.json").write_text(json.dumps({"a-reader-token": "reader"}))
    script = tmp_path / "client.py"
    script.write_text(client)
    version, probabilities = (await shell.succeeds(f"python {script}")).split(" ", 1)
    assert version == "1"
    assert probabilities.startswith("[[")
    await _the_rest_examples_work(shell, client, gateway_rest, tmp_path)

    for command in next_steps(MODEL):
        await shell.succeeds(command)


async def _the_rest_examples_work(
    shell: Shell, grpc_client: str, gateway_rest: str, tmp_path: Path
) -> None:
    """README's curl commands and its tritonclient.http example, which goes on from the gRPC
    one (its imports, features and token), against the gateway's REST port."""
    commands = shell_commands(first_block("### Over HTTP/REST", "bash"))
    # One shell, as a user types them: the token set by one command is used by the next.
    script = "\necho ---\n".join(commands).replace("127.0.0.1:8000", gateway_rest)
    health, _, metadata, answer = (await shell.succeeds(script)).split("---\n")
    assert health.strip() == "200"
    assert json.loads(metadata)["name"] == MODEL
    assert json.loads(metadata)["parameters"]["execution_provider"].endswith("ExecutionProvider")
    inferred = json.loads(answer)
    assert (inferred["model_version"], inferred["id"]) == ("1", "r-1")
    assert {output["name"] for output in inferred["outputs"]} >= {"label", "probabilities"}

    http_client = first_block("with `tritonclient.http`:", "python")
    script = tmp_path / "http_client.py"
    script.write_text(grpc_client + http_client.replace("127.0.0.1:8000", gateway_rest))
    output = await shell.succeeds(f"python {script}")
    version, probabilities = output.strip().splitlines()[-1].split(" ", 1)
    assert version == "1"
    assert probabilities.startswith("[[")


async def _policies_were_set(endpoints: Addresses) -> None:
    """Step 2's script changed the policies of the model the other steps name."""
    async with (
        secure_channel(endpoints.deployer) as deployer,
        secure_channel(endpoints.retrain) as retrain,
    ):
        deployment = await deployer_grpc.DeployerServiceStub(deployer).GetDeploymentPolicy(
            deployer_pb.GetDeploymentPolicyRequest(model=MODEL)
        )
        assert deployment.policy.strategy == deployer_types.STRATEGY_CANARY
        assert list(deployment.policy.canary.steps_percent) == [20, 50, 100]
        policy = await retrain_grpc.RetrainServiceStub(retrain).GetRetrainPolicy(
            retrain_pb.GetRetrainPolicyRequest(model=MODEL)
        )
        assert policy.policy.approval_mode == retrain_types.APPROVAL_MODE_HUMAN_SIGN_OFF
