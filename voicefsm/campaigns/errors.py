"""Campaign errors: each says what is wrong, where, and how to fix it, in one line."""

from __future__ import annotations

from voicefsm.errors import VoiceFsmError


class CampaignError(VoiceFsmError):
    """Something a campaign command cannot do; the message carries the fix."""


class ContactListError(CampaignError):
    """The CSV of numbers has a problem: the message names the file and line."""


class UnknownCampaignError(CampaignError):
    """No campaign has that id."""

    def __init__(self, campaign_id: int) -> None:
        super().__init__(f"no campaign {campaign_id}; `voicefsm campaign list` shows the campaigns there are")
        self.campaign_id = campaign_id


class CampaignsUnavailableError(CampaignError):
    """The queue engine (procrastinate on PostgreSQL) is not installed or not reachable."""
