"""What a campaign's answered call brings to its flow: the CSV row's values as stream parameters.

A campaign call's TwiML redirects to ``/twilio/voice?campaign_attempt=N``; the voice webhook asks
:func:`campaign_parameters` for that attempt's values and passes them as ``<Parameter>``s, so they
arrive in the flow as ``self.parameters`` (``name``, ``appointment``..., plus ``campaign`` and
``campaign_contact``), on whichever worker takes the stream.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from voicefsm.campaigns.service import CampaignService

log = logging.getLogger(__name__)

ATTEMPT_QUERY = "campaign_attempt"


async def campaign_service(app_state: object, *, open_it: bool = True) -> CampaignService | None:
    """The app's campaign service (``create_app(campaigns=...)``: a service or the server's holder that
    opens one on first use); None when the app has none, or it is not open and ``open_it`` is false."""
    held = getattr(app_state, "voicefsm_campaigns", None)
    if held is None or not hasattr(held, "service"):
        return held  # a CampaignService given as it is (tests), or none
    if not open_it:
        opened: CampaignService | None = held.opened
        return opened
    service: CampaignService = await held.service()
    return service


async def campaign_parameters(request: Request) -> dict[str, str]:
    """The parameters of the campaign attempt named in the webhook's query; {} for any other call."""
    attempt = request.query_params.get(ATTEMPT_QUERY)
    if not attempt:
        return {}
    service = await campaign_service(request.app.state, open_it=False)
    if service is None:
        return {}
    try:
        parameters: dict[str, str] = await service.call_parameters(int(attempt))
    except ValueError:
        return {}
    except Exception:  # the call goes on without its row's values rather than not at all
        log.exception("could not read the values of campaign attempt %s", attempt)
        return {}
    return {key: value for key, value in parameters.items() if key != "token"}
