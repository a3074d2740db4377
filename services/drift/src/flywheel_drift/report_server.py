"""HTTP transport of the drift reports: `GET /reports/{model}?version=V&window=W` answers the
HTML page, to callers with the same bearer tokens as the gRPC API (reader on the model),
over TLS with the gRPC port's certificate."""

from __future__ import annotations

import logging

from aiohttp import web

from flywheel_common.auth import missing_grant, record_denial
from flywheel_common.errors import (
    FlywheelError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from flywheel_common.http_status import challenge_of, http_status_of
from flywheel_common.identities import Authenticator
from flywheel_common.settings import Role, ServerTlsSettings
from flywheel_common.tls import https_context, served_url
from flywheel_drift.domain import Alert
from flywheel_drift.reports import REPORTS_PATH, Reports, alert_report_path
from flywheel_drift.settings import ReportSettings

log = logging.getLogger(__name__)

METHOD = "GET /reports"
"""How refusals of the reports are counted and logged beside the RPCs."""


class ReportServer:
    def __init__(
        self,
        settings: ReportSettings,
        host: str,
        tls: ServerTlsSettings,
        authenticator: Authenticator,
        reports: Reports,
        env_prefix: str = "FLYWHEEL_DRIFT_",
    ) -> None:
        """`host`: where to bind when the settings name none (gRPC's host)."""
        self._settings = settings
        self._host = settings.host or host
        self._tls = tls
        self._env_prefix = env_prefix
        self._authenticator = authenticator
        self._reports = reports
        self._runner: web.AppRunner | None = None
        self.port = 0
        """The port bound, once started."""

    @property
    def base_url(self) -> str:
        """Where the reports are, as alerts link them."""
        if self._settings.base_url:
            return self._settings.base_url.rstrip("/")
        return served_url(self._host, self.port, self._tls)

    def link(self, alert: Alert) -> str:
        return self.base_url + alert_report_path(alert)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get(REPORTS_PATH + "{model}", self._report)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(
            self._runner,
            self._host,
            self._settings.port,
            ssl_context=https_context(self._tls, self._env_prefix, "the drift reports are"),
        )
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        log.info("drift reports served", extra={"url": self.base_url + REPORTS_PATH})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _report(self, request: web.Request) -> web.Response:
        model = request.match_info["model"]
        subject = None
        try:
            principal = await self._authenticator.authenticate(request.headers.get("Authorization"))
            subject = principal.subject
            if not principal.allows(Role.READER, model):
                raise missing_grant(principal, Role.READER, model, METHOD)
            version = _number(request, "version")
            window = _number(request, "window")
            page = await self._reports.page(model, version or 0, window)
        except (Unauthenticated, PermissionDenied) as refusal:
            record_denial(METHOD, refusal, subject, model)
            return _error(refusal)
        except (InvalidArgument, NotFound) as error:
            return _error(error)
        return web.Response(
            text=page, content_type="text/html", headers={"Cache-Control": "no-store"}
        )


def _number(request: web.Request, name: str) -> int | None:
    text = request.query.get(name)
    if text is None or text == "":
        return None
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value < 2**62:
        raise InvalidArgument(f"{name} must be a whole number of at least 0, got {text!r}")
    return value


def _error(error: FlywheelError) -> web.Response:
    status = http_status_of(error)
    return web.Response(status=status, text=error.message + "\n", headers=challenge_of(status))
