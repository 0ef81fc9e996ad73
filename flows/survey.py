"""A three-question satisfaction survey; the answers are texted back to the caller at the end."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, computed_field

from voicefsm.flow import Ask, Hangup, Say, SendSms, VoiceFlow


class Answers(BaseModel):
    """The caller's answers."""

    rating: Annotated[int, Field(ge=1, le=5)] | None = None
    recommend: bool | None = None
    comment: str | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def would_recommend(self) -> str:
        """``recommend`` in words, for the SMS."""
        return {True: "yes", False: "no", None: "not answered"}[self.recommend]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def comment_or_none(self) -> str:
        """``comment``, or a dash when the caller had nothing to add."""
        return self.comment or "-"


class Survey(VoiceFlow):
    """Ask three questions and text a summary."""

    slots_model = Answers

    intro = Say("Thanks for taking our three-question survey.", initial=True)
    ask_rating = Ask(
        "On a scale of 1 to 5, how would you rate your visit today? You can also press a key.",
        slot="rating",
    )
    ask_recommend = Ask("Would you recommend us to a friend? Say yes or no.", slot="recommend")
    ask_comment = Ask(
        "Last one: is there anything we could do better?",
        slot="comment",
        no_input_s=8.0,
        retries=0,
    )
    thanks = SendSms(
        "Thank you! We'll text you a copy of your answers. Goodbye.",
        body="Your survey answers: rating {rating} of 5; would recommend: {would_recommend}; "
        "comment: {comment_or_none}. Thank you!",
    )
    give_up = Hangup("No problem, we won't take more of your time. Goodbye.", outcome="declined")

    spoken = intro.to(ask_rating)
    filled = ask_rating.to(ask_recommend) | ask_recommend.to(ask_comment) | ask_comment.to(thanks)
    no_input = ask_rating.to(give_up) | ask_recommend.to(give_up) | ask_comment.to(thanks)
    no_match = ask_rating.to(give_up) | ask_recommend.to(give_up) | ask_comment.to(thanks)
