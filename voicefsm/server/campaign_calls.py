"""What a campaign's answered call brings to its flow: the CSV row's values as stream parameters.

A campaign call's TwiML redirects to ``/twilio/voice?campaign_attempt=N``; the voice webhook asks
:func:`campaign_parameters` for that attempt's values and passes them as ``<Parameter>``s, so they
arrive in the flow as ``self.parameters`` (``name``, ``appointment``..., plus ``campaign`` and
``campaign_contact``), on whichever worker takes the stream.
"""

from __future__ import annotations

import logging

from fastapi import Request

log = logging.getLogger(__name__)

ATTEMPT_QUERY = "campaign_attempt"


async def campaign_parameters(request: Request) -> dict[str, str]:
    """The parameters of the campaign attempt named in the webhook's query; {} for any other call."""
    attempt = request.query_params.get(ATTEMPT_QUERY)
    service = getattr(request.app.state, "voicefsm_campaigns", None)
    if not attempt or service is None:
        return {}
    try:
        parameters: dict[str, str] = await service.call_parameters(int(attempt))
    except ValueError:
        return {}
    except Exception:  # the call goes on without its row's values rather than not at all
        log.exception("could not read the values of campaign attempt %s", attempt)
        return {}
    return {key: value for key, value in parameters.items() if key != "token"}
