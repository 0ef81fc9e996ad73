"""Flows: statecharts that speak and listen, checked before any call.

Write a flow by subclassing :class:`VoiceFlow` and declaring states of the kinds below;
run it with :class:`voicefsm.runtime.flow_runtime.FlowRuntime`.
"""

from statemachine import State

from voicefsm.flow.chart import Step, VoiceFlow
from voicefsm.flow.checks import check_flow
from voicefsm.flow.errors import (
    FlowDefinitionError,
    FlowError,
    FlowLoadError,
    FlowProblem,
    UnknownEventError,
)
from voicefsm.flow.expect import Choice, Day, Digits, FreeText, Number, Time, YesNo
from voicefsm.flow.loader import load_flow
from voicefsm.flow.resources import Resource, ResourceError, Resources, fakes_for, open_resources, resource
from voicefsm.flow.spec import FlowSpec
from voicefsm.flow.states import Ask, Echo, Hangup, Say, SendSms, Transfer

__all__ = [
    "Ask",
    "Choice",
    "Day",
    "Digits",
    "Echo",
    "FlowDefinitionError",
    "FlowError",
    "FlowLoadError",
    "FlowProblem",
    "FlowSpec",
    "FreeText",
    "Hangup",
    "Number",
    "Resource",
    "ResourceError",
    "Resources",
    "Say",
    "SendSms",
    "State",
    "Step",
    "Time",
    "Transfer",
    "UnknownEventError",
    "VoiceFlow",
    "YesNo",
    "check_flow",
    "fakes_for",
    "load_flow",
    "open_resources",
    "resource",
]
