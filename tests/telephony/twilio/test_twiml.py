from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from voicefsm.telephony.twilio.twiml import (
    BUSY_MESSAGE,
    StreamUrlError,
    busy_twiml,
    dial_twiml,
    hangup_twiml,
    redirect_twiml,
    stream_twiml,
)


def parse(twiml: str) -> ET.Element:
    assert twiml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    return root


def test_stream_twiml_connects_the_call_to_the_websocket_with_parameters() -> None:
    root = parse(stream_twiml("wss://voice.example.com/twilio/stream", {"token": "t0k", "flow": "booking"}))
    [connect] = root
    assert connect.tag == "Connect" and connect.attrib == {}
    [stream] = connect
    assert stream.tag == "Stream"
    assert stream.attrib == {"url": "wss://voice.example.com/twilio/stream"}
    assert [(p.tag, p.attrib) for p in stream] == [
        ("Parameter", {"name": "token", "value": "t0k"}),
        ("Parameter", {"name": "flow", "value": "booking"}),
    ]


def test_stream_twiml_status_callback_and_action() -> None:
    root = parse(
        stream_twiml(
            "wss://v.example.com/s",
            {},
            status_callback="https://v.example.com/stream-status",
            action="https://v.example.com/after-stream",
        )
    )
    connect = root.find("Connect")
    assert connect is not None and connect.attrib == {"action": "https://v.example.com/after-stream"}
    stream = connect.find("Stream")
    assert stream is not None
    assert stream.attrib["statusCallback"] == "https://v.example.com/stream-status"


def test_parameter_values_are_escaped() -> None:
    twiml = stream_twiml("wss://v.example.com/s", {"note": 'a<b & "c"'})
    assert "a<b" not in twiml
    parameter = parse(twiml).find("Connect/Stream/Parameter")
    assert parameter is not None and parameter.attrib["value"] == 'a<b & "c"'


@pytest.mark.parametrize(
    "url",
    ["https://v.example.com/s", "ws://v.example.com/s", "v.example.com/s", "wss:///s", "/twilio/stream"],
)
def test_stream_url_must_be_wss(url: str) -> None:
    with pytest.raises(StreamUrlError) as caught:
        stream_twiml(url, {})
    assert caught.value.code == 31910
    assert caught.value.url == url
    assert "31910" in str(caught.value) and "wss://" in str(caught.value)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("url", ["wss://v.example.com/s?token=abc", "wss://v.example.com/s?"])
def test_stream_url_must_not_carry_a_query_string(url: str) -> None:
    with pytest.raises(StreamUrlError) as caught:
        stream_twiml(url, {})
    assert caught.value.code == 31920
    assert "31920" in str(caught.value) and "Parameter" in str(caught.value)


def test_ws_is_allowed_only_when_asked_for_local_fakes() -> None:
    stream = parse(stream_twiml("ws://127.0.0.1:8000/twilio/stream", {}, allow_insecure=True)).find(
        "Connect/Stream"
    )
    assert stream is not None and stream.attrib["url"] == "ws://127.0.0.1:8000/twilio/stream"
    with pytest.raises(StreamUrlError):
        stream_twiml("ws://127.0.0.1:8000/s?x=1", {}, allow_insecure=True)
    with pytest.raises(StreamUrlError):
        stream_twiml("http://127.0.0.1:8000/s", {}, allow_insecure=True)


def test_empty_parameter_names_are_refused() -> None:
    with pytest.raises(ValueError, match="name must not be empty"):
        stream_twiml("wss://v.example.com/s", {"": "x"})


def test_dial_twiml_says_then_dials() -> None:
    root = parse(
        dial_twiml("+15551230003", say="Transferring you now.", caller_id="+15551230002", timeout_s=30)
    )
    say, dial = root
    assert (say.tag, say.text) == ("Say", "Transferring you now.")
    assert dial.tag == "Dial" and dial.attrib == {"callerId": "+15551230002", "timeout": "30"}
    [number] = dial
    assert (number.tag, number.text) == ("Number", "+15551230003")


def test_dial_twiml_without_say_and_to_a_sip_uri() -> None:
    [dial] = parse(dial_twiml("sip:desk@pbx.example.com"))
    assert dial.attrib == {"timeout": "20"}
    [sip] = dial
    assert (sip.tag, sip.text) == ("Sip", "sip:desk@pbx.example.com")


@pytest.mark.parametrize("timeout_s", [0, 4, 601])
def test_dial_timeout_is_within_twilios_range(timeout_s: int) -> None:
    with pytest.raises(ValueError, match="5 to 600 seconds"):
        dial_twiml("+15551230003", timeout_s=timeout_s)


def test_dial_needs_a_number() -> None:
    with pytest.raises(ValueError, match="needs a number"):
        dial_twiml("  ")


def test_hangup_twiml() -> None:
    assert [el.tag for el in parse(hangup_twiml())] == ["Hangup"]
    assert [el.tag for el in parse(hangup_twiml(""))] == ["Hangup"]
    say, hangup = parse(hangup_twiml("Goodbye <3"))
    assert (say.tag, say.text, hangup.tag) == ("Say", "Goodbye <3", "Hangup")


def test_busy_twiml_is_a_polite_say_then_hangup() -> None:
    say, hangup = parse(busy_twiml())
    assert (say.tag, say.text, hangup.tag) == ("Say", BUSY_MESSAGE, "Hangup")
    say, _ = parse(busy_twiml("We are closing for maintenance."))
    assert say.text == "We are closing for maintenance."


def test_redirect_twiml_sends_an_answered_outbound_call_to_the_voice_webhook() -> None:
    [redirect] = parse(redirect_twiml("https://voice.example.com/twilio/voice?x=1&y=2"))
    assert (redirect.tag, redirect.attrib, redirect.text) == (
        "Redirect",
        {"method": "POST"},
        "https://voice.example.com/twilio/voice?x=1&y=2",
    )


def test_dial_twiml_asks_the_dialed_leg_to_report_its_status() -> None:
    callback = "https://v.example.com/twilio/status"
    [dial] = parse(dial_twiml("+15551230003", status_callback=callback))
    [number] = dial
    assert number.attrib == {
        "statusCallback": callback,
        "statusCallbackEvent": "initiated ringing answered completed",
    }
    [dial] = parse(dial_twiml("sip:desk@pbx.example.com", status_callback=callback))
    assert dial[0].attrib["statusCallback"] == callback
