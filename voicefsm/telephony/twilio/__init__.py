"""Twilio, as one adapter: Media Streams, TwiML, request signatures and the REST API.

Nothing outside this package imports the Twilio SDK or knows Twilio's message types; the
rest of voicefsm speaks the neutral events of :mod:`voicefsm.core.events`.

- :mod:`~voicefsm.telephony.twilio.media`: the Media Streams codec (frames <-> values <-> events)
- :mod:`~voicefsm.telephony.twilio.stream`: the server side of a media stream, as a far end
- :mod:`~voicefsm.telephony.twilio.client`: Twilio's side of a media stream (tests, bridge, benchmarks)
- :mod:`~voicefsm.telephony.twilio.twiml`, :mod:`~voicefsm.telephony.twilio.signature`: webhooks
- :mod:`~voicefsm.telephony.twilio.rest`: telephony actions over the REST API
"""
