from __future__ import annotations

import base64
import dataclasses
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from voicefsm.core.events import AudioIn, CallStarted, FarEndHungUp, KeyPressed, MarkReached
from voicefsm.telephony.twilio import media as twilio_media
from voicefsm.telephony.twilio.media import (
    MAX_MESSAGE_BYTES,
    Connected,
    Dtmf,
    MalformedKind,
    MalformedMessage,
    Mark,
    Media,
    MediaFormat,
    OutboundClear,
    OutboundMark,
    OutboundMedia,
    Start,
    Stop,
    clear_message,
    connected_message,
    dtmf_message,
    inbound_media_message,
    mark_echo_message,
    mark_message,
    media_message,
    neutral_event,
    parse_inbound,
    parse_message,
    parse_outbound,
    start_message,
    stop_message,
)

SID = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"
ACCOUNT = "AC00000000000000000000000000000001"
FRAME = bytes(range(160))
FRAME_B64 = base64.b64encode(FRAME).decode()
MULAW = MediaFormat("audio/x-mulaw", 8000, 1)

fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def media_json(payload: str = FRAME_B64, **media: object) -> str:
    fields = {"track": "inbound", "chunk": "1", "timestamp": "52", "payload": payload, **media}
    return json.dumps({"event": "media", "sequenceNumber": "2", "streamSid": SID, "media": fields})


def malformed(frame: str | bytes, *, started: bool = True) -> MalformedMessage:
    result = parse_message(frame, started=started)
    assert isinstance(result, MalformedMessage), result
    return result


# -- what Twilio sends (literal frames, in Twilio's shape: numbers as strings) ------------------


def test_connected() -> None:
    assert parse_message('{"event":"connected","protocol":"Call","version":"1.0.0"}') == Connected(
        "Call", "1.0.0"
    )


def test_start_carries_sids_tracks_format_and_custom_parameters() -> None:
    frame = (
        '{"event":"start","sequenceNumber":"1","streamSid":"'
        + SID
        + '","start":{"accountSid":"'
        + ACCOUNT
        + '",'
        '"streamSid":"' + SID + '","callSid":"' + CALL + '","tracks":["inbound"],'
        '"customParameters":{"flow":"booking","callerNumber":"+15551230001"},'
        '"mediaFormat":{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}'
    )
    start = parse_message(frame)
    assert start == Start(
        1, SID, ACCOUNT, CALL, ("inbound",), {"flow": "booking", "callerNumber": "+15551230001"}, MULAW
    )
    assert isinstance(start, Start)
    assert start.custom_parameters["flow"] == "booking"


def test_media_decodes_the_payload_and_string_numbers() -> None:
    assert parse_message(media_json()) == Media(2, SID, "inbound", 1, 52, FRAME)


def test_numbers_may_also_be_json_integers() -> None:
    frame = json.dumps(
        {
            "event": "media",
            "sequenceNumber": 7,
            "streamSid": SID,
            "media": {"track": "inbound", "chunk": 3, "timestamp": 0, "payload": FRAME_B64},
        }
    )
    assert parse_message(frame) == Media(7, SID, "inbound", 3, 0, FRAME)


def test_dtmf_mark_and_stop() -> None:
    dtmf = (
        '{"event":"dtmf","sequenceNumber":"7","streamSid":"MZ1","dtmf":{"track":"inbound_track","digit":"5"}}'
    )
    mark = '{"event":"mark","sequenceNumber":"103","streamSid":"MZ1","mark":{"name":"prompt-1"}}'
    stop = (
        '{"event":"stop","sequenceNumber":"500","streamSid":"MZ1",'
        '"stop":{"accountSid":"AC1","callSid":"CA1"}}'
    )
    assert parse_message(dtmf) == Dtmf("MZ1", "inbound_track", "5", 7)
    assert parse_message(mark) == Mark("MZ1", "prompt-1", 103)
    assert parse_message(stop) == Stop("MZ1", "AC1", "CA1", 500)


@pytest.mark.parametrize("digit", [*"0123456789", "*", "#", "A", "B", "C", "D"])
def test_every_keypad_digit(digit: str) -> None:
    assert parse_message(dtmf_message(SID, digit, sequence_number=3)) == Dtmf(SID, "inbound_track", digit, 3)


def test_empty_and_one_byte_payloads_are_valid() -> None:
    assert parse_message(media_json("")) == Media(2, SID, "inbound", 1, 52, b"")
    assert parse_message(media_json("/w==")) == Media(2, SID, "inbound", 1, 52, b"\xff")


def test_unknown_extra_fields_and_versions_are_ignored() -> None:
    frame = json.loads(media_json(future="field"))
    frame["media"]["codec_hint"] = {"nested": [1, 2]}
    frame["new"] = True
    assert parse_message(json.dumps(frame)) == Media(2, SID, "inbound", 1, 52, FRAME)
    assert parse_message('{"event":"connected","protocol":"Call","version":"2.0.0","x":1}') == Connected(
        "Call", "2.0.0"
    )


def test_start_without_custom_parameters_has_none() -> None:
    frame = json.loads(start_message(SID, CALL))
    del frame["start"]["customParameters"]
    start = parse_message(json.dumps(frame))
    assert isinstance(start, Start)
    assert dict(start.custom_parameters) == {}


def test_start_falls_back_to_the_inner_stream_sid() -> None:
    frame = json.loads(start_message(SID, CALL))
    del frame["streamSid"]
    start = parse_message(json.dumps(frame))
    assert isinstance(start, Start)
    assert start.stream_sid == SID


def test_parsed_messages_are_frozen() -> None:
    start = parse_message(start_message(SID, CALL, custom_parameters={"token": "t"}))
    assert isinstance(start, Start)
    with pytest.raises(dataclasses.FrozenInstanceError):
        start.call_sid = "CA2"  # type: ignore[misc]
    with pytest.raises(TypeError):
        start.custom_parameters["token"] = "forged"  # type: ignore[index]
    assert hash(start) == hash(parse_message(start_message(SID, CALL, custom_parameters={"token": "t"})))


def test_start_copies_custom_parameters() -> None:
    params = {"a": "1"}
    start = Start(1, SID, ACCOUNT, CALL, ("inbound",), params, MULAW)
    params["a"] = "changed"
    assert start.custom_parameters == {"a": "1"}


# -- round trips through the inbound builders -----------------------------------------------------


def test_inbound_builders_round_trip() -> None:
    params = {"token": "abc", "caller": "+15551230001", "quote": 'he said "hi"\n'}
    assert parse_message(connected_message()) == Connected("Call", "1.0.0")
    assert parse_message(start_message(SID, CALL, ACCOUNT, params, ("inbound",), 1)) == Start(
        1, SID, ACCOUNT, CALL, ("inbound",), params, MULAW
    )
    media = inbound_media_message(SID, FRAME, chunk=4, timestamp_ms=80, sequence_number=5)
    assert parse_message(media) == Media(5, SID, "inbound", 4, 80, FRAME)
    assert parse_message(dtmf_message(SID, "#", sequence_number=6)) == Dtmf(SID, "inbound_track", "#", 6)
    assert parse_message(mark_echo_message(SID, "greet#1", sequence_number=7)) == Mark(SID, "greet#1", 7)
    assert parse_message(stop_message(SID, CALL, ACCOUNT, sequence_number=8)) == Stop(SID, ACCOUNT, CALL, 8)


def test_inbound_builders_write_numbers_as_strings_like_twilio() -> None:
    media = json.loads(inbound_media_message(SID, FRAME, chunk=1, timestamp_ms=52, sequence_number=2))
    assert media == json.loads(media_json())
    assert json.loads(stop_message(SID, CALL, sequence_number=9))["sequenceNumber"] == "9"


# -- outbound messages ----------------------------------------------------------------------------


def test_outbound_messages_have_twilios_exact_shape() -> None:
    assert json.loads(media_message(SID, FRAME)) == {
        "event": "media",
        "streamSid": SID,
        "media": {"payload": FRAME_B64},
    }
    assert json.loads(mark_message(SID, "greet#1")) == {
        "event": "mark",
        "streamSid": SID,
        "mark": {"name": "greet#1"},
    }
    assert json.loads(clear_message(SID)) == {"event": "clear", "streamSid": SID}


def test_outbound_builders_escape_strings() -> None:
    odd = 'a"b\\c\n\u00e9\U0001f600'
    assert json.loads(mark_message(odd, odd)) == {"event": "mark", "streamSid": odd, "mark": {"name": odd}}
    assert json.loads(clear_message(odd))["streamSid"] == odd


def test_parse_outbound_round_trips() -> None:
    assert parse_outbound(media_message(SID, FRAME)) == OutboundMedia(FRAME, SID)
    assert parse_outbound(media_message(SID, b"")) == OutboundMedia(b"", SID)
    assert parse_outbound(mark_message(SID, "greet#1")) == OutboundMark("greet#1", SID)
    assert parse_outbound(clear_message(SID)) == OutboundClear(SID)


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ('{"event":"media","media":{"payload":""}}', MalformedKind.INVALID_FIELDS),  # no streamSid
        ('{"event":"media","streamSid":"MZ1","media":{"payload":"abc"}}', MalformedKind.BAD_BASE64),
        ('{"event":"mark","streamSid":"MZ1","mark":{}}', MalformedKind.INVALID_FIELDS),
        ('{"event":"start","streamSid":"MZ1"}', MalformedKind.UNKNOWN_EVENT),  # not something we send
        (b'{"event":"clear","streamSid":"MZ1"}', MalformedKind.NOT_TEXT),
        ("[]", MalformedKind.NOT_OBJECT),
    ],
)
def test_parse_outbound_reports_contract_violations(frame: str | bytes, kind: MalformedKind) -> None:
    result = parse_outbound(frame)
    assert isinstance(result, MalformedMessage)
    assert result.kind is kind


# -- malformed input: returned, never raised ------------------------------------------------------


def test_binary_frames_are_not_text() -> None:
    result = malformed(connected_message().encode())
    assert result.kind is MalformedKind.NOT_TEXT
    assert "binary frame" in str(result)
    assert malformed(bytearray(b"\x00\xff")).kind is MalformedKind.NOT_TEXT  # type: ignore[arg-type]


def test_a_1_mb_frame_is_refused_before_json_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parsing(frame: object) -> object:
        raise AssertionError("the frame was handed to the JSON parser")

    monkeypatch.setattr(twilio_media, "from_json", no_parsing)
    huge = media_json("A" * 1_048_576)
    result = malformed(huge)
    assert result.kind is MalformedKind.TOO_LARGE
    assert "limit is 65536 bytes" in str(result)
    assert malformed("x" * 16 * 1_048_576).kind is MalformedKind.TOO_LARGE


def _padded(size: int) -> str:
    """A valid connected message of exactly ``size`` UTF-8 bytes."""
    head = '{"event":"connected","protocol":"Call","version":"1.0.0","pad":"'
    return head + "x" * (size - len(head) - 2) + '"}'


def test_the_limit_is_65536_utf8_bytes() -> None:
    assert parse_message(_padded(MAX_MESSAGE_BYTES)) == Connected("Call", "1.0.0")
    assert malformed(_padded(MAX_MESSAGE_BYTES + 1)).kind is MalformedKind.TOO_LARGE
    # 22,000 characters but 66,000 bytes: the limit counts bytes on the wire, not characters.
    wide = '{"event":"connected","protocol":"Call","version":"1","pad":"' + "€" * 22_000 + '"}'
    assert len(wide) < MAX_MESSAGE_BYTES < len(wide.encode())
    assert malformed(wide).kind is MalformedKind.TOO_LARGE


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("hello", MalformedKind.NOT_JSON),
        ("", MalformedKind.NOT_JSON),
        ('{"event":"media"', MalformedKind.NOT_JSON),
        ("[" * 60_000, MalformedKind.NOT_JSON),  # nesting deep enough to blow a recursive parser
        ('{"event":"mark","x":"\ud800"}', MalformedKind.NOT_JSON),  # a lone surrogate cannot be UTF-8
        ("[]", MalformedKind.NOT_OBJECT),
        ('[{"event":"media"}]', MalformedKind.NOT_OBJECT),
        ("42", MalformedKind.NOT_OBJECT),
        ('"media"', MalformedKind.NOT_OBJECT),
        ("null", MalformedKind.NOT_OBJECT),
        ("{}", MalformedKind.MISSING_EVENT),
        ('{"event":null}', MalformedKind.MISSING_EVENT),
        ('{"event":5}', MalformedKind.MISSING_EVENT),
        ('{"event":["media"]}', MalformedKind.MISSING_EVENT),
        ('{"event":"foo"}', MalformedKind.UNKNOWN_EVENT),
        ('{"event":"clear","streamSid":"MZ1"}', MalformedKind.UNKNOWN_EVENT),  # outbound only
    ],
)
def test_frames_that_are_not_messages(frame: str, kind: MalformedKind) -> None:
    assert malformed(frame).kind is kind


def _without(frame: str, *path: str) -> str:
    data = json.loads(frame)
    target = data
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return json.dumps(data)


def _with(frame: str, value: object, *path: str) -> str:
    data = json.loads(frame)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return json.dumps(data)


START = start_message(SID, CALL, ACCOUNT, {"token": "t"})
MEDIA = media_json()
STOP = stop_message(SID, CALL, ACCOUNT, sequence_number=9)
DTMF = dtmf_message(SID, "1", sequence_number=3)


@pytest.mark.parametrize(
    ("frame", "detail"),
    [
        (_without(MEDIA, "media", "payload"), "media.payload is missing"),
        (_without(MEDIA, "media"), "media is missing"),
        (_with(MEDIA, "payload", "media"), "media must be an object, got 'payload'"),
        (_without(MEDIA, "streamSid"), "streamSid is missing"),
        (_with(MEDIA, 12, "streamSid"), "streamSid must be a string, got 12"),
        (_with(MEDIA, 160, "media", "payload"), "media.payload must be a string, got 160"),
        (_with(MEDIA, "abc", "sequenceNumber"), "sequenceNumber must be a whole number, got 'abc'"),
        (_with(MEDIA, "-1", "sequenceNumber"), "sequenceNumber must be a whole number"),
        (_with(MEDIA, -1, "sequenceNumber"), "sequenceNumber must be a whole number"),
        (_with(MEDIA, 1.5, "sequenceNumber"), "sequenceNumber must be a whole number"),
        (_with(MEDIA, True, "sequenceNumber"), "sequenceNumber must be a whole number, got True"),
        (_with(MEDIA, " 2", "sequenceNumber"), "sequenceNumber must be a whole number"),
        (_with(MEDIA, "\uff12", "media", "chunk"), "media.chunk must be a whole number"),  # fullwidth 2
        (_with(MEDIA, "9" * 5000, "media", "timestamp"), "media.timestamp must be a whole number"),
        (_without(MEDIA, "media", "track"), "media.track is missing"),
        (_without(START, "start", "streamSid"), ""),  # the outer streamSid still names the stream
        (_without(_without(START, "start", "streamSid"), "streamSid"), "start.streamSid is missing"),
        (_without(START, "start", "callSid"), "start.callSid is missing"),
        (_with(START, "inbound", "start", "tracks"), "start.tracks must be a list of strings"),
        (
            _with(START, {"n": 1}, "start", "customParameters"),
            "start.customParameters must map names to strings",
        ),
        (_without(START, "start", "mediaFormat"), "start.mediaFormat is missing"),
        (_with(START, "8000", "start", "mediaFormat", "sampleRate"), ""),  # a string of digits is fine
        (_with(START, "8k", "start", "mediaFormat", "sampleRate"), "start.mediaFormat.sampleRate must be"),
        (_without(STOP, "stop", "callSid"), "stop.callSid is missing"),
        (_with(DTMF, 5, "dtmf", "digit"), "dtmf.digit must be a string, got 5"),
        (_with(DTMF, "x", "sequenceNumber"), "sequenceNumber must be a whole number"),
        ('{"event":"connected","protocol":"Call"}', "version is missing"),
    ],
)
def test_wrong_types_and_missing_keys_are_invalid_fields(frame: str, detail: str) -> None:
    result = parse_message(frame)
    if not detail:
        assert not isinstance(result, MalformedMessage)
        return
    assert isinstance(result, MalformedMessage)
    assert result.kind is MalformedKind.INVALID_FIELDS
    assert result.detail.startswith(detail)


def test_optional_sequence_numbers_may_be_absent() -> None:
    assert parse_message(_without(DTMF, "sequenceNumber")) == Dtmf(SID, "inbound_track", "1")
    assert parse_message(_without(STOP, "sequenceNumber")) == Stop(SID, ACCOUNT, CALL)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        ("abc", "Incorrect padding"),
        ("QQ=", "Incorrect padding"),
        ("!!!!", "Only base64 data is allowed"),
        ("QUJD\n", "Only base64 data is allowed"),
        ("QU JD", "Only base64 data is allowed"),
        ("QQ==QQ==", "Excess data after padding"),
        ("=QUJD", "Leading padding not allowed"),
        ("Q", "number of data characters (1) cannot be 1 more than a multiple of 4"),
        ("\u00e9t\u00e9", "only ASCII"),
    ],
)
def test_bad_base64_is_reported_with_the_reason(payload: str, reason: str) -> None:
    result = malformed(media_json(payload))
    assert result.kind is MalformedKind.BAD_BASE64
    assert reason in result.detail
    assert result.event == "media"


def test_bad_base64_reads_like_help() -> None:
    assert (
        str(malformed(media_json("abc")))
        == "dropped a media message with invalid base64 payload (Incorrect padding)"
    )


@pytest.mark.parametrize("frame", [MEDIA, DTMF, mark_echo_message(SID, "greet#1", sequence_number=4)])
def test_media_dtmf_and_marks_before_start_are_refused(frame: str) -> None:
    result = malformed(frame, started=False)
    assert result.kind is MalformedKind.BEFORE_START
    assert "arrived before start" in str(result)
    assert not isinstance(parse_message(frame, started=True), MalformedMessage)


@pytest.mark.parametrize("frame", [connected_message(), START, STOP])
def test_connected_start_and_stop_are_accepted_before_start(frame: str) -> None:
    assert not isinstance(parse_message(frame, started=False), MalformedMessage)


@pytest.mark.parametrize("digit", ["x", "55", "", "a", "E", "#1", " 1"])
def test_bad_dtmf_digits(digit: str) -> None:
    result = malformed(dtmf_message(SID, digit, sequence_number=3))
    assert result.kind is MalformedKind.BAD_DIGIT
    assert str(result).startswith("dropped a dtmf message with an invalid digit")
    assert repr(digit) in str(result)


def test_every_kind_explains_itself() -> None:
    samples = {
        MalformedKind.NOT_TEXT: malformed(b"\x00"),
        MalformedKind.TOO_LARGE: malformed("x" * (MAX_MESSAGE_BYTES + 1)),
        MalformedKind.NOT_JSON: malformed("nope"),
        MalformedKind.NOT_OBJECT: malformed("[1]"),
        MalformedKind.MISSING_EVENT: malformed("{}"),
        MalformedKind.UNKNOWN_EVENT: malformed('{"event":"foo"}'),
        MalformedKind.INVALID_FIELDS: malformed(_without(MEDIA, "media", "payload")),
        MalformedKind.BAD_BASE64: malformed(media_json("abc")),
        MalformedKind.BEFORE_START: malformed(MEDIA, started=False),
        MalformedKind.BAD_DIGIT: malformed(dtmf_message(SID, "x", sequence_number=1)),
    }
    assert set(samples) == set(MalformedKind)
    for kind, result in samples.items():
        assert result.kind is kind
        text = str(result)
        assert text.startswith(("dropped ", "ignored ")), text
        assert result.detail in text
    assert str(samples[MalformedKind.INVALID_FIELDS]) == (
        "dropped a media message with invalid fields (media.payload is missing)"
    )
    assert str(samples[MalformedKind.UNKNOWN_EVENT]) == "ignored a message with an unknown event ('foo')"


def test_excerpt_is_short_escaped_and_hides_payloads_and_tokens() -> None:
    bad = malformed('{"streamSid":"MZ1","media":{"payload":"SECRETAUDIO"},\n"event":"media"}')
    assert "SECRETAUDIO" not in bad.excerpt
    assert '"payload":"…' in bad.excerpt
    assert "\n" not in bad.excerpt and "\\n" in bad.excerpt
    token = malformed('{"token":"s3cret-token","event":"start","start":1}')
    assert "s3cret" not in token.excerpt
    assert len(malformed("x" * (MAX_MESSAGE_BYTES + 1)).excerpt) <= 80
    assert len(malformed(b"\x00\x01" * 1000).excerpt) <= 80
    assert malformed(b"\x00\x01").excerpt == "\\x00\\x01"


def test_sequence_gaps_and_repeats_are_not_the_parsers_business() -> None:
    first = inbound_media_message(SID, FRAME, chunk=1, timestamp_ms=0, sequence_number=900)
    again = inbound_media_message(SID, FRAME, chunk=1, timestamp_ms=0, sequence_number=2)
    assert isinstance(parse_message(first), Media) and isinstance(parse_message(again), Media)


# -- fuzz: parsing is total -----------------------------------------------------------------------


@fuzz
@given(st.text())
def test_arbitrary_text_never_raises(frame: str) -> None:
    assert isinstance(parse_message(frame, started=False), MalformedMessage | Connected | Start | Stop)
    parse_outbound(frame)


@fuzz
@given(st.binary())
def test_arbitrary_bytes_never_raise(frame: bytes) -> None:
    assert parse_message(frame).kind is MalformedKind.NOT_TEXT  # type: ignore[union-attr]
    assert isinstance(parse_outbound(frame), MalformedMessage)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
VALID = [connected_message(), START, MEDIA, DTMF, mark_echo_message(SID, "m#1", sequence_number=4), STOP]


def _paths(value: object, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if not isinstance(value, dict):
        return [prefix]
    return [prefix, *(path for key, child in value.items() for path in _paths(child, (*prefix, key)))]


def _broken(frame: str, data: st.DataObject) -> str:
    """``frame`` with one field (at any depth) removed or given another JSON value."""
    paths = [path for path in _paths(json.loads(frame)) if path]
    path = data.draw(st.sampled_from(paths))
    if data.draw(st.booleans()):
        return _without(frame, *path)
    return _with(frame, data.draw(json_values), *path)


@fuzz
@given(st.sampled_from(VALID), st.data(), st.booleans())
def test_valid_messages_with_one_field_broken_never_raise(
    frame: str, data: st.DataObject, started: bool
) -> None:
    broken = _broken(frame, data)
    result = parse_message(broken, started=started)
    assert isinstance(result, MalformedMessage | Connected | Start | Media | Dtmf | Mark | Stop)
    parse_outbound(broken)


@fuzz
@given(
    st.text(min_size=1, max_size=40),
    st.binary(max_size=2000),
    st.integers(min_value=0, max_value=2**40),
    st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=5),
)
def test_builders_round_trip_any_values(sid: str, audio: bytes, number: int, params: dict[str, str]) -> None:
    assert parse_message(
        inbound_media_message(sid, audio, chunk=number, timestamp_ms=number, sequence_number=number)
    ) == Media(number, sid, "inbound", number, number, audio)
    assert parse_message(start_message(sid, sid, sid, params, sequence_number=number)) == Start(
        number, sid, sid, sid, ("inbound",), params, MULAW
    )
    assert parse_outbound(media_message(sid, audio)) == OutboundMedia(audio, sid)
    assert parse_outbound(mark_message(sid, sid)) == OutboundMark(sid, sid)


# -- the neutral call events each message means ------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "event"),
    [
        (
            start_message(SID, CALL, custom_parameters={"token": "t0k", "caller": "+15550001111"}),
            CallStarted(CALL, "+15550001111", {"token": "t0k", "caller": "+15550001111"}),
        ),
        (start_message(SID, CALL, custom_parameters={"callerNumber": "+1555"}), None),
        (
            inbound_media_message(SID, b"\x7f" * 160, chunk=1, timestamp_ms=0, sequence_number=2),
            AudioIn(b"\x7f" * 160),
        ),
        (mark_echo_message(SID, "greet#1", sequence_number=3), MarkReached("greet#1")),
        (dtmf_message(SID, "#", sequence_number=4), KeyPressed("#")),
        (stop_message(SID, CALL, sequence_number=5), FarEndHungUp("stream stopped")),
        (connected_message(), None),
    ],
    ids=["start", "start-callerNumber", "media", "mark", "dtmf", "stop", "connected"],
)
def test_each_message_translates_to_the_neutral_event_it_means(frame: str, event: object) -> None:
    parsed = parse_message(frame)
    assert not isinstance(parsed, MalformedMessage)
    if event is None and isinstance(parsed, Start):
        event = CallStarted(CALL, "+1555", {"callerNumber": "+1555"})
    assert neutral_event(parsed) == event


# -- parse_inbound: parse_message with media read for the hot path --------------------------------


def _as_inbound(parsed: object) -> object:
    """What parse_inbound must give where parse_message gives ``parsed``."""
    return (parsed.sequence_number, parsed.payload) if isinstance(parsed, Media) else parsed


def test_parse_inbound_gives_media_as_sequence_number_and_audio() -> None:
    assert parse_inbound(MEDIA) == (2, FRAME)
    assert parse_inbound(media_json(sequenceNumber=7)) == (2, FRAME)  # the outer number counts
    assert parse_inbound(DTMF) == parse_message(DTMF)
    assert isinstance(parse_inbound(MEDIA, started=False), MalformedMessage)


@pytest.mark.parametrize(
    "frame",
    [
        media_json("abc"),
        media_json("\u00e9t\u00e9"),
        media_json(chunk="\uff12"),
        media_json(timestamp="9" * 5000),
        media_json(track=5),
        media_json(chunk=-1),
        media_json(chunk=True),
        _with(MEDIA, "9" * 5000, "sequenceNumber"),
        _with(MEDIA, 12, "streamSid"),
        _without(MEDIA, "media"),
        _with(MEDIA, 3, "sequenceNumber"),
    ],
)
def test_parse_inbound_fails_exactly_as_parse_message(frame: str) -> None:
    assert parse_inbound(frame) == _as_inbound(parse_message(frame))


@fuzz
@given(st.sampled_from(VALID), st.data(), st.booleans())
def test_parse_inbound_agrees_with_parse_message_on_broken_messages(
    frame: str, data: st.DataObject, started: bool
) -> None:
    broken = _broken(frame, data)
    assert parse_inbound(broken, started=started) == _as_inbound(parse_message(broken, started=started))
