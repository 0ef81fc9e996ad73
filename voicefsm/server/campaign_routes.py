"""Campaigns over HTTP: Twilio's per-attempt callbacks, the JSON API, and the progress page.

- ``POST /twilio/campaign/{attempt}``: Twilio's status callback and async AMD callback of one dial
  (signed like every webhook); any worker takes it, repeats are harmless.
- ``GET /api/campaigns``, ``POST /api/campaigns`` (JSON: flow, csv, options), ``GET /api/campaigns/{id}``
  (counts by state and outcome), ``POST /api/campaigns/{id}/pause|resume|cancel``.
- ``GET /campaigns``: a page with a progress bar per campaign and its buttons.

The service is ``app.state.voicefsm_campaigns`` (set by ``create_app(campaigns=...)``); without one,
the API answers 503 saying what to install or configure.
"""

from __future__ import annotations

from importlib.resources import files
from typing import TYPE_CHECKING, Annotated, Literal

from fastapi import APIRouter, Body, HTTPException, Request, Response
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field

from voicefsm.campaigns.contacts import check_timezone, parse_contacts
from voicefsm.campaigns.errors import CampaignError, CampaignsUnavailableError, UnknownCampaignError
from voicefsm.campaigns.store import CampaignOptions
from voicefsm.campaigns.windows import CallingWindow
from voicefsm.server.amd import deliver_verdict
from voicefsm.server.campaign_calls import campaign_service
from voicefsm.server.twilio_routes import _verified_form, reconcile_call_status

if TYPE_CHECKING:  # the service needs the campaigns extra (procrastinate); these routes do not
    from voicefsm.campaigns.service import CampaignService

router = APIRouter(tags=["campaigns"])

NOT_CONFIGURED = (
    "campaigns are not available on this server: install them with pip install 'voicefsm[campaigns]' "
    "and restart `voicefsm serve` (it uses --db postgresql://..., or an embedded PostgreSQL without one)"
)


async def _service(request: Request) -> CampaignService:
    try:
        service = await campaign_service(request.app.state)
    except CampaignsUnavailableError as error:
        raise HTTPException(503, str(error)) from error
    if service is None:
        raise HTTPException(503, NOT_CONFIGURED)
    return service


class OptionsIn(BaseModel):
    """How to dial (see ``voicefsm campaign start --help``)."""

    rate: float = Field(1.0, gt=0, le=100)
    max_concurrent: int = Field(2, ge=1)
    max_attempts: int = Field(3, ge=1)
    retry_backoff_s: float = Field(300.0, ge=0)
    window_start: str = "09:00"
    window_end: str = "20:00"
    timezone: str = "UTC"
    machine_detection: bool = True


class CampaignIn(BaseModel):
    """A campaign to start: the flow it runs, the CSV text of its numbers, and how to dial."""

    flow: str
    csv: str
    name: str = ""
    source: str = "numbers.csv"
    options: OptionsIn = Field(default_factory=lambda: OptionsIn.model_validate({}))


@router.post("/twilio/campaign/{attempt_id}", include_in_schema=False)
async def campaign_callback(attempt_id: int, request: Request) -> Response:
    """Twilio's status (initiated ... completed, busy, no-answer, failed) or AMD verdict for one dial."""
    form = await _verified_form(request)
    if isinstance(form, Response):
        return form
    fields = {key: str(value) for key, value in form.items()}
    await reconcile_call_status(request.app.state.voicefsm, fields)  # the call's record too (edge)
    deliver_verdict(request.app.state.voicefsm.registry, fields)  # the flow hears a machine at once
    await (await _service(request)).callback(attempt_id, fields)
    return Response(status_code=204)


@router.get("/api/campaigns")
async def list_campaigns(request: Request) -> list[dict[str, object]]:
    """Every campaign with its counts."""
    return [progress.as_json() for progress in await (await _service(request)).campaigns()]


@router.post("/api/campaigns", status_code=201)
async def start_campaign(request: Request, campaign: Annotated[CampaignIn, Body()]) -> dict[str, object]:
    """Start a campaign; 422 with the file and line of a bad number, time zone or option."""
    service = await _service(request)
    try:
        contacts = parse_contacts(campaign.csv, campaign.source)
        given = campaign.options
        CallingWindow.parse(given.window_start, given.window_end)
        check_timezone(given.timezone, "--timezone")
        options = CampaignOptions(
            rate=given.rate,
            max_concurrent=given.max_concurrent,
            max_attempts=given.max_attempts,
            retry_backoff_s=given.retry_backoff_s,
            window_start=given.window_start,
            window_end=given.window_end,
            default_timezone=given.timezone,
            machine_detection=given.machine_detection,
        )
    except CampaignError as error:
        raise HTTPException(422, str(error)) from error
    campaign_id = await service.start(campaign.name or campaign.source, campaign.flow, options, contacts)
    return (await service.progress(campaign_id)).as_json()


@router.get("/api/campaigns/{campaign_id}")
async def campaign_progress(campaign_id: int, request: Request) -> dict[str, object]:
    """One campaign's counts by state and outcome."""
    try:
        return (await (await _service(request)).progress(campaign_id)).as_json()
    except UnknownCampaignError as error:
        raise HTTPException(404, str(error)) from error


@router.post("/api/campaigns/{campaign_id}/{action}")
async def control_campaign(
    campaign_id: int, action: Literal["pause", "resume", "cancel"], request: Request
) -> dict[str, object]:
    """Pause, resume or cancel a campaign; returns its counts."""
    service = await _service(request)
    try:
        await {"pause": service.pause, "resume": service.resume, "cancel": service.cancel}[action](
            campaign_id
        )
        return (await service.progress(campaign_id)).as_json()
    except UnknownCampaignError as error:
        raise HTTPException(404, str(error)) from error
    except CampaignError as error:
        raise HTTPException(409, str(error)) from error


@router.get("/campaigns", include_in_schema=False)
async def campaigns_page() -> FileResponse:
    """Campaigns with a progress bar, counts by outcome, and pause / resume / cancel."""
    return FileResponse(str(files("voicefsm.server") / "static" / "campaigns.html"), media_type="text/html")
